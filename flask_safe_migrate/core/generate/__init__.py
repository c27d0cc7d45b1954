"""Generate a steps module from the models: Alembic's comparison, safe steps.

:func:`generate` compares a SQLAlchemy ``MetaData`` with the database (through
the migration engine, retried like every transaction), turns each reported change
into its safe, phase-split steps (:mod:`.plan`), writes them as plain
``migrate.sql``/``migrate.index``/``migrate.backfill`` calls (:mod:`.render`), and
lints what it wrote. Alembic is an optional dependency, imported only here.
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass
from dataclasses import field

import sqlalchemy as sa

from ..lint import Finding
from ..lint import Severity
from ..lint import lint_steps
from ..settings import MigrateSettings
from ..steps import StepRegistry
from ..transaction import run_with_retry
from ..transaction import settings_policy
from .compare import Comparison
from .compare import compare
from .compare import is_excluded
from .compare import require_alembic
from .output import Target
from .output import load_metadata
from .output import target_for
from .plan import plan_steps
from .render import render_module
from .render import step_ids
from .steps import GeneratedStep
from .steps import StepKind

__all__ = [
    "GenerateReport",
    "GeneratedStep",
    "StepKind",
    "compare_with_retry",
    "generate",
    "is_excluded",
    "lint_generated",
    "load_metadata",
]


@dataclass
class GenerateReport:
    """What ``generate`` found and wrote.

    ``steps`` is empty when the models and the database agree ("no changes").
    """

    steps: list[GeneratedStep]
    step_ids: list[str] = field(default_factory=list)
    source: str | None = None
    path: str | None = None
    written: bool = False
    #: The module to add to ``SAFE_MIGRATE_STEP_MODULES`` (None: nothing to add).
    unlisted_module: str | None = None
    #: Error findings of the linter on the generated steps (a bug if not empty).
    findings: list[Finding] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """Whether the models and the database differ."""
        return bool(self.steps)

    @property
    def commented(self) -> list[str]:
        """Ids of the steps written commented out (destructive or unhandled)."""
        return [
            i for i, s in zip(self.step_ids, self.steps, strict=True) if not s.active
        ]

    @property
    def todo_values(self) -> list[str]:
        """The constants a person must set before the module loads."""
        return [s.value for s in self.steps if s.value and s.active]

    def to_dict(self) -> dict[str, t.Any]:
        """A JSON-ready summary (``--json``)."""
        return {
            "changes": self.has_changes,
            "path": self.path,
            "written": self.written,
            "steps": [
                {"id": i, "kind": s.kind.value, "change": s.change, "active": s.active}
                for i, s in zip(self.step_ids, self.steps, strict=True)
            ],
            "todo_values": self.todo_values,
            "unlisted_module": self.unlisted_module,
            "findings": [f.message for f in self.findings],
        }


def generate(
    settings: MigrateSettings,
    registry: StepRegistry,
    engine: sa.Engine,
    metadata: sa.MetaData,
    *,
    message: str,
    registrar: str,
    output: str | None = None,
    dry_run: bool = False,
    check: bool = False,
    allow_destructive: bool = False,
) -> GenerateReport:
    """Compare ``metadata`` with the database and write the safe steps module.

    :param registrar: ``module:attribute`` of the app's ``SafeMigrate`` object,
        which the module imports to register its steps.
    :param output: the file to write (default: the next ``NNNN_<slug>.py`` next to
        the step modules).
    :param dry_run: render the module but write nothing.
    :param check: only compare: write and render nothing.
    :param allow_destructive: write drops and type changes active, not commented.
    :raises ImportError: Alembic is not installed (with the pip command).
    :raises ConfigurationError: nowhere to write the module.
    :raises FileExistsError: the file exists already.
    """
    require_alembic()
    comparison = compare_with_retry(settings, engine, metadata)
    steps = plan_steps(
        comparison.ops, comparison.facts, allow_destructive=allow_destructive
    )
    if not steps or check:
        return GenerateReport(steps=steps)
    target = target_for(
        message,
        step_modules=settings.step_modules,
        step_ids=[s.id for s in registry.steps()],
        output=output,
    )
    report = _render(target, steps, message=message, registrar=registrar)
    report.findings = lint_generated(report, settings)
    if not dry_run:
        _write(target, t.cast(str, report.source))
        report.written = True
    return report


def compare_with_retry(
    settings: MigrateSettings, engine: sa.Engine, metadata: sa.MetaData
) -> Comparison:
    """Compare in one read-only transaction, retried whole through disconnects;
    the ledger table and ``SAFE_MIGRATE_GENERATE_EXCLUDE`` are left out."""
    ledger = settings.ledger_table
    if settings.ledger_schema:
        ledger = f"{settings.ledger_schema}.{ledger}"
    exclude = (ledger, *settings.generate_exclude)
    return run_with_retry(
        engine,
        lambda conn: compare(conn, metadata, exclude=exclude),
        policy=settings_policy(settings),
    )


def _render(
    target: Target, steps: list[GeneratedStep], *, message: str, registrar: str
) -> GenerateReport:
    source = render_module(
        title=message,
        prefix=target.prefix,
        registrar=registrar,
        steps=steps,
        where=os.path.basename(target.path),
    )
    return GenerateReport(
        steps=steps,
        step_ids=step_ids(target.prefix, steps),
        source=source,
        path=target.path,
        unlisted_module=target.unlisted_module,
    )


def lint_generated(report: GenerateReport, settings: MigrateSettings) -> list[Finding]:
    """Lint the active steps as they will be registered; return the error findings."""
    registry = StepRegistry()
    for step_id, step in zip(report.step_ids, report.steps, strict=True):
        if not step.active:
            continue
        options = dict(step.options or {})
        if step.kind is StepKind.SQL:
            registry.sql(step_id, step.sql)
        elif step.kind is StepKind.INDEX:
            registry.index(step_id, **options)
        elif step.kind is StepKind.BACKFILL:
            if step.value:
                options["set"] = options["set"].replace("{" + step.value + "}", "NULL")
            registry.backfill(step_id, **options)
    lint = lint_steps(
        registry.steps(), disabled=settings.lint_disabled_rules, squawk=True
    )
    return [f for f in lint.findings if f.severity is Severity.ERROR]


def _write(target: Target, source: str) -> None:
    os.makedirs(os.path.dirname(target.path), exist_ok=True)
    try:
        with open(target.path, "x", encoding="utf-8") as handle:
            handle.write(source)
    except FileExistsError:
        raise FileExistsError(
            f"{target.path} exists already; name another file with --output"
        ) from None
