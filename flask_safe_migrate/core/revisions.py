"""Alembic revisions as schema steps, read and run with Alembic's own machinery.

A Flask-Migrate (Alembic) script directory is read with Alembic's
``ScriptDirectory``; each revision becomes a schema-phase function step whose id is
the revision id. When the step runs, the revision's ``upgrade()`` runs through
Alembic's ``Operations`` on a ``MigrationContext`` configured on the step's own
connection, inside the step's transaction: the migration lock, the ledger row,
``SET LOCAL lock_timeout``, the lock-retry schedule, disconnect retries and
lost-COMMIT resolution are those of any native step. ``env.py`` is never run and
``alembic_version`` is never written: the ledger is the record.

``alembic`` is an optional dependency (``pip install 'flask-safe-migrate[alembic]'``);
it is imported inside the functions that need it only.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import re
import typing as t

import sqlalchemy as sa

from .disconnects import error_sqlstate
from .exceptions import ConfigurationError
from .exceptions import RegistrationError
from .exceptions import StepRefusedError
from .sql import SqlSyntaxError
from .sql import Statement
from .sql import StatementKind
from .sql import split_statements
from .steps import CATEGORIES
from .steps import Phase
from .steps import Step
from .steps import StepHandle
from .steps import StepRegistrar

if t.TYPE_CHECKING:
    from alembic.script import Script

__all__ = [
    "ALEMBIC_VERSION_SQL",
    "BASELINE_COMMAND",
    "INSTALL_HINT",
    "RevisionFunction",
    "alembic_include_object",
    "check_adopted",
    "file_checksum",
    "index_rewrite",
    "is_revision",
    "load_scripts",
    "register_revisions",
    "render_revision_sql",
    "revisions_upto",
]

#: The pip command that installs what :func:`register_revisions` needs.
INSTALL_HINT = "pip install 'flask-safe-migrate[alembic]'"

#: What Alembic (Flask-Migrate) recorded as applied.
ALEMBIC_VERSION_SQL = "SELECT version_num FROM alembic_version"

#: The command that adopts an Alembic-managed database.
BASELINE_COMMAND = "flask safe-migrate baseline --from-alembic"

_SETTING = "SAFE_MIGRATE_ALEMBIC_DIRECTORY"
_UNDEFINED_TABLE = "42P01"
_REVISION = "alembic_revision"
_DOWN = "alembic_down_revisions"


def _alembic_missing(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} needs Alembic, which is not installed: {INSTALL_HINT}",
        key=_SETTING,
    )


# -- reading the script directory ---------------------------------------------------


def load_scripts(directory: str | os.PathLike[str]) -> list[Script]:
    """Read an Alembic script directory; return its revisions in upgrade order.

    The directory is resolved as Flask-Migrate resolves it: relative to the current
    directory (an absolute path works), with its ``alembic.ini`` when there is one.

    :raises ConfigurationError: Alembic is not installed.
    :raises RegistrationError: no such directory, unreadable revisions, several
        heads, or a dependency cycle.
    """
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError
    except ImportError:
        raise _alembic_missing("migrate.alembic()") from None
    path = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(path):
        raise RegistrationError(
            f"Alembic directory {os.fspath(directory)!r} ({path}) does not exist; "
            "pass the folder that holds env.py and versions/ (Flask-Migrate's "
            "'migrations' by default, relative to the current directory)"
        )
    ini = os.path.join(path, "alembic.ini")
    config = Config(ini if os.path.isfile(ini) else None)
    config.set_main_option("script_location", path)
    try:
        script = ScriptDirectory.from_config(config)
        heads = script.get_heads()
        if len(heads) > 1:
            raise RegistrationError(_several_heads(script, heads))
        newest_first = list(script.walk_revisions("base", "heads"))
    except (CommandError, RevisionError) as exc:
        raise RegistrationError(f"Alembic directory {path}: {exc}") from exc
    return newest_first[::-1]


def _several_heads(script: t.Any, heads: t.Sequence[str]) -> str:
    files = ", ".join(f"{h} ({script.get_revision(h).path})" for h in heads)
    return (
        f"the Alembic revisions have {len(heads)} heads: {files}; they cannot be "
        "put in one order. Join them with a merge revision (`flask db merge heads` "
        "or `alembic merge heads`), then register again"
    )


def file_checksum(path: str) -> str:
    """Return the checksum of a Python file's code: docstrings and comments ignored."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[:] = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


# -- registration -------------------------------------------------------------------


def register_revisions(
    registrar: StepRegistrar,
    directory: str | os.PathLike[str] = "migrations",
    *,
    categories: t.Mapping[str, str] | None = None,
) -> list[Step]:
    """Register every revision of an Alembic script directory as a schema step.

    In upgrade order from base to head; id = revision id, location = its file,
    checksum = its code (see :func:`file_checksum`).

    :param categories: revision id -> small-DML category (``{"1b2c3d": "seed"}``),
        for revisions whose ``upgrade()`` changes data.
    :raises ConfigurationError: Alembic is not installed (the message has the
        pip command).
    :raises RegistrationError: see :func:`load_scripts`; a category for an
        unknown revision.
    """
    scripts = load_scripts(directory)
    wanted = dict(categories or {})
    unknown = sorted(set(wanted) - {s.revision for s in scripts})
    if unknown:
        raise RegistrationError(
            f"categories= names revision(s) {', '.join(unknown)} not found in "
            f"{os.path.abspath(os.fspath(directory))}"
        )
    return [registrar.add(_revision_step(s, wanted.get(s.revision))) for s in scripts]


def _revision_step(script: Script, category: str | None) -> Step:
    if category is not None and category not in CATEGORIES:
        raise RegistrationError(
            f"revision {script.revision} ({_display(script.path)}): unknown category "
            f"{category!r}; expected one of {', '.join(CATEGORIES)}"
        )
    return Step(
        id=script.revision,
        phase=Phase.SCHEMA,
        checksum=file_checksum(script.path),
        location=_display(script.path),
        fn=RevisionFunction(script),
        category=category,
        description=next(iter((script.doc or "").strip().splitlines()), ""),
        options={_REVISION: script.revision, _DOWN: _parents(script)},
    )


def _parents(script: Script) -> list[str]:
    """The revisions ``script`` comes after: its down revisions and dependencies."""
    from alembic.util import to_tuple

    return [*to_tuple(script.down_revision, ()), *to_tuple(script.dependencies, ())]


def _display(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def is_revision(step: Step) -> bool:
    """Whether ``step`` is an Alembic revision registered by this module."""
    return _REVISION in step.options


# -- running ------------------------------------------------------------------------


class RevisionFunction:
    """The function of a revision step: the revision's ``upgrade()`` via Alembic.

    On a live handle (one with a ``connection``) it runs for real in the step's
    transaction; on a recording handle (``plan``, ``check``) it sends the SQL that
    Alembic renders offline, one statement per ``execute()``.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.path = script.path

    def __repr__(self) -> str:
        return f"<revision {self.script.revision} {self.path}>"

    def __call__(self, handle: StepHandle) -> None:
        """Run or record the revision's ``upgrade()``."""
        connection = getattr(handle, "connection", None)
        if isinstance(connection, sa.Connection):
            _run_upgrade(self.script, handle.step, connection)
            return
        for sql in render_revision_sql(self.script):
            handle.execute(sql)


def _run_upgrade(script: Script, step: Step, connection: sa.Connection) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection=connection)
    # autocommit_block() would COMMIT the step's transaction (lock and ledger row
    # with it): refuse it, on this context only.
    context.autocommit_block = _refuse_autocommit(step)  # type: ignore[method-assign]  # one instance
    with _checked_statements(connection, step), Operations.context(context):
        script.module.upgrade()


def _refuse_autocommit(
    step: Step,
) -> t.Callable[[], contextlib._GeneratorContextManager[None, None, None]]:
    @contextlib.contextmanager
    def autocommit_block() -> t.Iterator[None]:
        raise StepRefusedError(
            f"revision {step.id} ({step.location}) uses autocommit_block(), which "
            "would commit the step's transaction halfway: move what it runs out of "
            "the revision: a CREATE INDEX CONCURRENTLY becomes "
            "migrate.index(...) registered after migrate.alembic(...) (the index "
            "phase builds it concurrently, repairs and leases it); anything else "
            "becomes a step of its own",
            step_id=step.id,
            phase=step.phase.value,
        )
        yield  # pragma: no cover  # never reached

    return autocommit_block


@contextlib.contextmanager
def _checked_statements(connection: sa.Connection, step: Step) -> t.Iterator[None]:
    """Check every statement the revision sends, as the schema phase checks SQL."""

    def before_cursor_execute(
        conn: sa.Connection,
        cursor: t.Any,
        statement: str,
        parameters: t.Any,
        context: t.Any,
        executemany: bool,
    ) -> None:
        check_revision_sql(step, statement)

    sa.event.listen(connection, "before_cursor_execute", before_cursor_execute)
    try:
        yield
    finally:
        sa.event.remove(connection, "before_cursor_execute", before_cursor_execute)


_DBAPI_BINDS = re.compile(r"%\(\w+\)s|%s")


def check_revision_sql(step: Step, sql: str) -> list[Statement]:
    """Refuse what a revision must not send in a schema step's transaction.

    DML without a category (``categories={revision: "seed"}``), a concurrent index
    build, transaction control and session settings are refused.

    :raises StepRefusedError: naming the revision, its file and the fix.
    """
    text = _DBAPI_BINDS.sub("$1", sql).replace("%%", "%")
    try:
        statements = split_statements(text)
    except SqlSyntaxError:
        return []  # the server answers with the precise error
    for stmt in statements:
        reason = _refusal(step, stmt)
        if reason:
            shown = " ".join(stmt.sql.split())[:120]
            raise StepRefusedError(
                f"revision {step.id} ({step.location}): {shown}: {reason}",
                step_id=step.id,
                phase=step.phase.value,
            )
    return statements


def _refusal(step: Step, stmt: Statement) -> str | None:
    if stmt.concurrent:
        return (
            "a CONCURRENTLY index build cannot run in the revision's transaction; "
            "remove it from the revision and register it with migrate.index(...) "
            "after migrate.alembic(...)"
        )
    if stmt.kind is StatementKind.TRANSACTION_CONTROL:
        return "transaction control would end the step's transaction (and ledger row)"
    if stmt.kind is StatementKind.SESSION_SETTING:
        return "a session setting leaks to other clients via a pooler; use SET LOCAL"
    if step.category is None and (stmt.kind is StatementKind.DML or stmt.dml_kinds):
        kinds = "/".join(k.upper() for k in stmt.dml_kinds) or "DML"
        return (
            f"{kinds} in a revision, which runs as a schema step (DDL only); declare "
            f"it with migrate.alembic(..., categories={{{step.id!r}: 'seed'}}) (one "
            f"of {', '.join(CATEGORIES)}) if it is small, or move it to a backfill step"
        )
    return None


class _StatementBuffer:
    """Alembic's offline output buffer: one ``write()`` per statement."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def write(self, text: str) -> None:
        self.statements.append(text.strip().removesuffix(";").strip())

    def flush(self) -> None:
        """Nothing to flush."""


def render_revision_sql(script: Script) -> list[str]:
    """Return the SQL of a revision's ``upgrade()``, rendered offline by Alembic.

    This is what ``plan`` shows and ``check`` lints; nothing is sent. A revision
    that reads the database (``op.get_bind().execute(...).fetchall()``) cannot be
    rendered: its SQL up to there is returned, then a comment saying why.
    """
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    buffer = _StatementBuffer()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    try:
        with Operations.context(context):
            script.module.upgrade()
    except Exception as exc:  # user code that needs a live database
        buffer.statements.append(
            f"-- revision {script.revision}: the rest cannot be rendered offline "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        )
    return [s for s in buffer.statements if s]


def index_rewrite(
    step: Step, *, table: str, columns: t.Sequence[str], unique: bool, name: str
) -> str:
    """How to move a revision's plain ``op.create_index`` to the index phase.

    Returned as one sentence for ``check`` to show with its finding.
    """
    unique_arg = ", unique=True" if unique else ""
    call = (
        f"migrate.index({f'{step.id}_{name}'!r}, table={table!r}, "
        f"columns={list(columns)!r}{unique_arg}, name={name!r})"
    )
    return (
        f"while revision {step.id} is applied nowhere yet, delete its "
        f"op.create_index({name!r}, ...) and register {call} after "
        "migrate.alembic(...)"
    )


# -- adoption -----------------------------------------------------------------------


class _Row(t.Protocol):
    @property
    def is_applied(self) -> bool: ...


def revisions_upto(steps: t.Sequence[Step], versions: t.Iterable[str]) -> list[Step]:
    """The revision steps that ``versions`` (``alembic_version`` rows) cover.

    Each version and all its ancestors, in run order.

    :raises ConfigurationError: a version is not among the registered revisions.
    """
    by_id = {s.id: s for s in steps if is_revision(s)}
    todo = [v.strip() for v in versions if v and v.strip()]
    unknown = [v for v in todo if v not in by_id]
    if unknown:
        raise ConfigurationError(
            f"alembic_version is at {', '.join(unknown)}, which is not among the "
            f"{len(by_id)} registered Alembic revisions: register the script "
            "directory that holds it (migrate.alembic(directory=...))",
            key=_SETTING,
        )
    covered: set[str] = set()
    while todo:
        rev = todo.pop()
        if rev not in covered and rev in by_id:
            covered.add(rev)
            todo.extend(by_id[rev].options[_DOWN])
    return [s for s in steps if s.id in covered]


def check_adopted(
    steps: t.Sequence[Step],
    rows: t.Mapping[str, _Row],
    query: t.Callable[[str], t.Sequence[t.Sequence[t.Any]]],
) -> None:
    """Stop a run that would re-run revisions Alembic already applied.

    Costs nothing unless a revision among ``steps`` is pending (no applied
    ledger row); then one query reads ``alembic_version``.

    :param rows: the ledger rows by step id.
    :param query: runs one SQL query and returns its rows (retried on drops).
    :raises ConfigurationError: ``alembic_version`` covers pending revisions;
        the message names the baseline command.
    """
    pending = [
        s
        for s in steps
        if is_revision(s) and not (s.id in rows and rows[s.id].is_applied)
    ]
    if not pending:
        return
    try:
        versions = [str(r[0]) for r in query(ALEMBIC_VERSION_SQL)]
    except sa.exc.DBAPIError as exc:
        if error_sqlstate(exc) == _UNDEFINED_TABLE:
            return
        raise
    pending_ids = {s.id for s in pending}
    covered = [s.id for s in revisions_upto(steps, versions) if s.id in pending_ids]
    if covered:
        raise ConfigurationError(
            f"this database was migrated by Alembic/Flask-Migrate (alembic_version "
            f"{', '.join(versions)}) and {len(covered)} of the revisions it applied "
            f"({', '.join(covered[:3])}{', ...' if len(covered) > 3 else ''}) are "
            f"not in the ledger; nothing was run. Adopt it once with "
            f"`{BASELINE_COMMAND}`, then run again",
            key=_SETTING,
        )


# -- Alembic's autogenerate ---------------------------------------------------------


def alembic_include_object(
    object: t.Any,
    name: str | None,
    type_: str,
    reflected: bool,
    compare_to: t.Any,
) -> bool:
    """An ``include_object`` for ``env.py`` that hides flask-safe-migrate's tables.

    Without it, ``flask db migrate`` proposes ``op.drop_table('safe_migrate_ledger')``
    in every new revision. It hides the ledger (``safe_migrate_ledger``, or
    ``SAFE_MIGRATE_LEDGER_TABLE`` from the environment)::

        from flask_safe_migrate import alembic_include_object

        context.configure(..., include_object=alembic_include_object)
    """
    if type_ != "table":
        return True
    hidden = {"safe_migrate_ledger", os.environ.get("SAFE_MIGRATE_LEDGER_TABLE", "")}
    return name not in hidden
