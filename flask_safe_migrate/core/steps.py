"""Phase, Step and StepRegistry: steps registered by decorators, with checksums."""

from __future__ import annotations

import ast
import enum
import hashlib
import inspect
import os
import sys
import textwrap
import typing as t
from dataclasses import dataclass
from dataclasses import field

from .exceptions import DuplicateStepError
from .exceptions import RegistrationError
from .exceptions import StepOrderError

__all__ = [
    "CATEGORIES",
    "Phase",
    "Step",
    "StepHandle",
    "StepRegistry",
    "sql_checksum",
]

#: Small-DML categories a schema step may declare to run DML.
CATEGORIES = ("dedup_before_unique", "seed", "orphan_cleanup", "one_time_backfill")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Phase(enum.Enum):
    """The three phases, run in this order."""

    SCHEMA = "schema"
    INDEX = "index"
    BACKFILL = "backfill"

    @classmethod
    def parse(cls, value: str | Phase) -> Phase:
        """Return the phase named ``value``, or raise ValueError listing the names."""
        if isinstance(value, Phase):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(
                f"unknown phase {value!r}; expected one of {names}"
            ) from None


class StepHandle(t.Protocol):
    """What a function step receives: it sends SQL inside the step's transaction."""

    @property
    def step(self) -> Step:
        """The step being run."""
        ...

    def execute(
        self, sql: str, params: t.Mapping[str, t.Any] | None = None
    ) -> list[tuple[t.Any, ...]]:
        """Run ``sql`` in the step's transaction and return its rows (or ``[]``)."""
        ...


StepFunction = t.Callable[[StepHandle], object]
F = t.TypeVar("F", bound=t.Callable[..., object])


@dataclass(frozen=True)
class Step:
    """One registered step: SQL or a function, in one phase, with a stable id."""

    id: str
    phase: Phase
    checksum: str
    location: str
    sql: str | None = None
    fn: t.Callable[..., object] | None = None
    category: str | None = None
    description: str = ""
    options: t.Mapping[str, t.Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``sql`` or ``function``."""
        return "sql" if self.sql is not None else "function"

    @property
    def short_checksum(self) -> str:
        """The first 12 hex digits of the checksum, for display."""
        return self.checksum[:12]


def sql_checksum(sql: str) -> str:
    """Return the checksum of SQL, insensitive to whitespace, comments and case."""
    from .lint.parse import normalize_sql

    return hashlib.sha256(normalize_sql(sql).encode()).hexdigest()


def function_checksum(fn: t.Callable[..., object]) -> str:
    """Return the checksum of a function's normalized source.

    Formatting, comments, the docstring, the decorators and the function's name do
    not count; any change to its arguments or body does.
    """
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
        node = next(
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        )
        body = list(node.body)
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:]
        normalized = ast.dump(ast.Module(body=body, type_ignores=[])) + ast.dump(
            node.args
        )
    except (OSError, TypeError, SyntaxError, StopIteration):
        code = getattr(fn, "__code__", None)
        normalized = repr((code.co_code, code.co_consts)) if code else repr(fn)
    return hashlib.sha256(normalized.encode()).hexdigest()


def _caller_location() -> str:
    """Return ``file:line`` of the first frame outside this package."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep):
            return f"{_display_path(filename)}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]  # None ends the loop
    return "<unknown>"


def _function_location(fn: t.Callable[..., object]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return _caller_location()
    return f"{_display_path(code.co_filename)}:{code.co_firstlineno}"


def _display_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


class StepRegistry:
    """The steps of one application, in registration order.

    Register with :meth:`sql`, the :meth:`step` decorator (schema phase), and the
    index and backfill helpers. Ids must be unique; a duplicate raises
    :class:`DuplicateStepError` naming both locations.
    """

    def __init__(self) -> None:
        self._steps: dict[str, Step] = {}

    # -- registration ----------------------------------------------------------

    def add(self, step: Step) -> Step:
        """Register a built :class:`Step`."""
        _check_id(step.id)
        existing = self._steps.get(step.id)
        if existing is not None:
            raise DuplicateStepError(
                f"duplicate step id {step.id!r}: registered at {existing.location} "
                f"and again at {step.location}",
                step_id=step.id,
            )
        if step.category is not None and step.category not in CATEGORIES:
            raise RegistrationError(
                f"step {step.id!r} ({step.location}): unknown category "
                f"{step.category!r}; expected one of {', '.join(CATEGORIES)}"
            )
        self._steps[step.id] = step
        return step

    def sql(
        self,
        id: str,
        sql: str,
        *,
        category: str | None = None,
        description: str = "",
    ) -> Step:
        """Register a schema step made of SQL (one or more statements).

        :param category: declare a small-DML category (``seed``, ...) to allow DML.
        """
        if not isinstance(sql, str) or not sql.strip():
            raise RegistrationError(
                f"step {id!r} ({_caller_location()}): SQL must be a non-empty string"
            )
        return self.add(
            Step(
                id=id,
                phase=Phase.SCHEMA,
                checksum=sql_checksum(sql),
                location=_caller_location(),
                sql=sql,
                category=category,
                description=description,
            )
        )

    def step(
        self, id: str, *, category: str | None = None, description: str = ""
    ) -> t.Callable[[F], F]:
        """Register the decorated function as a schema step; it gets a step handle.

        The function is returned unchanged, so it stays a plain callable.
        """

        def decorator(fn: F) -> F:
            self.add(
                Step(
                    id=id,
                    phase=Phase.SCHEMA,
                    checksum=function_checksum(fn),
                    location=_function_location(fn),
                    fn=fn,
                    category=category,
                    description=description or _first_doc_line(fn),
                )
            )
            return fn

        return decorator

    #: The schema-phase decorator under its phase's name.
    schema = step

    # -- reading ---------------------------------------------------------------

    def steps(self, phase: Phase | None = None) -> list[Step]:
        """Return the steps of ``phase`` (or all), in phase then registration order."""
        order = list(Phase)
        selected = [
            s for s in self._steps.values() if phase is None or s.phase is phase
        ]
        return sorted(selected, key=lambda s: order.index(s.phase))

    def get(self, step_id: str) -> Step:
        """Return the step ``step_id``.

        :raises StepOrderError: no such step (the message lists close ids).
        """
        try:
            return self._steps[step_id]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(step_id, list(self._steps), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise StepOrderError(
                f"no step with id {step_id!r}{hint}", step_ids=[step_id]
            ) from None

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._steps

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> t.Iterator[Step]:
        return iter(self.steps())


def _check_id(step_id: object) -> None:
    if not isinstance(step_id, str) or not step_id.strip():
        raise RegistrationError(f"step id must be a non-empty string, got {step_id!r}")
    if len(step_id) > 200 or step_id != step_id.strip() or "\x00" in step_id:
        raise RegistrationError(
            f"step id {step_id!r} must be at most 200 characters, without "
            "surrounding whitespace"
        )


def _first_doc_line(fn: t.Callable[..., object]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
