"""Phase, Step and StepRegistry: steps registered by decorators, with checksums."""

from __future__ import annotations

import ast
import difflib
import enum
import hashlib
import inspect
import os
import re
import sys
import textwrap
import typing as t
from dataclasses import dataclass
from dataclasses import field

from .exceptions import DuplicateStepError
from .exceptions import RegistrationError
from .exceptions import StepOrderError
from .sql import SqlSyntaxError
from .sql import normalize_sql
from .sql import quote_ident
from .sql import split_statements

__all__ = [
    "CATEGORIES",
    "BackfillHandle",
    "Phase",
    "Step",
    "StepHandle",
    "StepRegistrar",
    "StepRegistry",
    "backfill_batch_template",
    "index_element",
    "index_sql",
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


class BackfillHandle(StepHandle, t.Protocol):
    """What a ``@migrate.backfill`` function receives: one batch's transaction.

    The function updates at most :attr:`limit` rows after :attr:`after` and returns
    the new checkpoint (any JSON value, e.g. the last key it updated), or ``None``
    when nothing is left. The checkpoint is written in the batch's transaction, so
    each batch is applied exactly once.
    """

    @property
    def after(self) -> t.Any:
        """The checkpoint the previous batch returned (``None`` for the first)."""
        ...

    @property
    def limit(self) -> int:
        """How many rows this batch should update (it adapts to the target time)."""
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


class StepRegistrar:
    """The registration methods, shared by :class:`StepRegistry` and SafeMigrate.

    Register with :meth:`sql`, the :meth:`step` decorator (schema phase),
    :meth:`index` and :meth:`backfill`; subclasses store the steps in :meth:`add`.
    """

    def add(self, step: Step) -> Step:
        """Register a built :class:`Step`."""
        raise NotImplementedError

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
        return self._decorator(id, Phase.SCHEMA, description, category)

    #: The schema-phase decorator under its phase's name.
    schema = step

    @t.overload
    def index(
        self, id: str, *, table: None = None, description: str = ""
    ) -> t.Callable[[F], F]: ...

    @t.overload
    def index(
        self,
        id: str,
        *,
        table: str,
        columns: t.Sequence[str],
        unique: bool = False,
        where: str | None = None,
        name: str | None = None,
        dedup_keep: str | None = None,
        description: str = "",
    ) -> Step: ...

    def index(
        self,
        id: str,
        *,
        table: str | None = None,
        columns: t.Sequence[str] | None = None,
        unique: bool = False,
        where: str | None = None,
        name: str | None = None,
        dedup_keep: str | None = None,
        description: str = "",
    ) -> Step | t.Callable[[F], F]:
        """Register an index step: a concurrent build, outside any transaction.

        With ``table`` and ``columns`` it builds ``CREATE [UNIQUE] INDEX CONCURRENTLY
        IF NOT EXISTS`` (``name`` defaults to ``<table>_<columns>_key|idx``). A
        column is an identifier (quoted as written) or an expression such as
        ``lower(email)``. ``dedup_keep`` (``min(id)`` or ``max(id)``) deletes
        duplicates of a unique index's columns first, keeping that row of each group.

        Without ``table`` it is a decorator: the function's ``CREATE INDEX
        CONCURRENTLY`` statements get the same repair and lease.
        """
        if table is None:
            if columns is not None or dedup_keep is not None or where or name:
                raise RegistrationError(
                    f"index step {id!r} ({_caller_location()}): columns, where, name "
                    "and dedup_keep need table="
                )
            return self._decorator(id, Phase.INDEX, description)
        location = _caller_location()
        where_ = f"index step {id!r} ({location})"
        if not columns or isinstance(columns, str):
            raise RegistrationError(f"{where_}: columns must be a non-empty list")
        keep = None
        if dedup_keep is not None:
            match = _DEDUP_KEEP.match(dedup_keep)
            if not unique or match is None:
                raise RegistrationError(
                    f"{where_}: dedup_keep needs unique=True and the form min(column) "
                    f"or max(column), got {dedup_keep!r}"
                )
            keep = (match.group(1).lower(), match.group(2))
        index_name = name or default_index_name(table, columns, unique)
        if len(index_name.encode()) > 63:
            raise RegistrationError(
                f"{where_}: index name {index_name!r} is longer than 63 bytes"
            )
        options: dict[str, t.Any] = {
            "table": table,
            "columns": list(columns),
            "unique": bool(unique),
            "where": where,
            "name": index_name,
            "dedup_keep": f"{keep[0]}({keep[1]})" if keep else None,
        }
        sql = index_sql(options)
        _check_parses(where_, sql)
        checksum = hashlib.sha256(
            (sql_checksum(sql) + f"\0dedup_keep={options['dedup_keep']}").encode()
        ).hexdigest()
        return self.add(
            Step(
                id=id,
                phase=Phase.INDEX,
                checksum=checksum,
                location=location,
                sql=sql,
                description=description,
                options=options,
            )
        )

    @t.overload
    def backfill(
        self, id: str, *, table: None = None, description: str = ""
    ) -> t.Callable[[F], F]: ...

    @t.overload
    def backfill(
        self,
        id: str,
        *,
        table: str,
        set: str,
        key: str = "id",
        where: str | None = None,
        description: str = "",
    ) -> Step: ...

    def backfill(
        self,
        id: str,
        *,
        table: str | None = None,
        set: str | None = None,
        key: str = "id",
        where: str | None = None,
        description: str = "",
    ) -> Step | t.Callable[[F], F]:
        """Register a backfill step: keyset batches, each one short transaction.

        ``UPDATE <table> SET <set> WHERE <where>`` is applied in ranges of ``key``
        (an indexed column; the primary key by default), each range with its
        checkpoint in the ledger in the same transaction, so it resumes exactly
        where it stopped and never updates a row twice.

        Without ``table`` it is a decorator for custom batches; see
        :class:`BackfillHandle`.
        """
        if table is None:
            if set is not None or where is not None:
                raise RegistrationError(
                    f"backfill step {id!r} ({_caller_location()}): set and where "
                    "need table="
                )
            return self._decorator(id, Phase.BACKFILL, description)
        location = _caller_location()
        if not isinstance(set, str) or not set.strip():
            raise RegistrationError(
                f"backfill step {id!r} ({location}): set= must be a SET clause, "
                'e.g. set="order_index = id"'
            )
        options: dict[str, t.Any] = {
            "table": table,
            "key": key,
            "set": set.strip(),
            "where": where.strip() if where else None,
        }
        sql = backfill_batch_template(options)
        _check_parses(f"backfill step {id!r} ({location})", sql)
        return self.add(
            Step(
                id=id,
                phase=Phase.BACKFILL,
                checksum=sql_checksum(sql),
                location=location,
                sql=sql,
                description=description,
                options=options,
            )
        )

    def _decorator(
        self, id: str, phase: Phase, description: str, category: str | None = None
    ) -> t.Callable[[F], F]:
        def decorator(fn: F) -> F:
            self.add(
                Step(
                    id=id,
                    phase=phase,
                    checksum=function_checksum(fn),
                    location=_function_location(fn),
                    fn=fn,
                    category=category,
                    description=description or _first_doc_line(fn),
                )
            )
            return fn

        return decorator


class StepRegistry(StepRegistrar):
    """The steps of one application, in registration order.

    Ids must be unique; a duplicate raises :class:`DuplicateStepError` naming both
    locations.
    """

    def __init__(self) -> None:
        self._steps: dict[str, Step] = {}

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

    # -- reading ---------------------------------------------------------------

    def steps(self, phase: Phase | None = None) -> list[Step]:
        """Return the steps of ``phase`` (or all), in registration order.

        Steps run in this order across phases, so an expand/contract sequence
        (add a column, backfill it, ``SET NOT NULL``) runs as registered.
        """
        return [s for s in self._steps.values() if phase is None or s.phase is phase]

    def get(self, step_id: str) -> Step:
        """Return the step ``step_id``.

        :raises StepOrderError: no such step (the message lists close ids).
        """
        try:
            return self._steps[step_id]
        except KeyError:
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


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_DEDUP_KEEP = re.compile(
    r"^\s*(min|max)\s*\(\s*([A-Za-z_][A-Za-z0-9_$]*)\s*\)\s*$", re.I
)


_NAME_PART = r'(?:"(?:[^"]|"")+"|[^".]+)'
_QUALIFIED_NAME = re.compile(rf"^({_NAME_PART})(?:\.({_NAME_PART}))?$")


def quote_name(name: str) -> str:
    """Quote a possibly schema-qualified name (``schema.table``) part by part.

    A part already in double quotes (``'"user"'``, ``'app."Order"'``) is kept as
    written, so a name is never quoted twice.
    """
    match = _QUALIFIED_NAME.match(name)
    if match is None:
        return ".".join(quote_ident(part) for part in name.split(".", 1))
    return ".".join(
        part if part.startswith('"') else quote_ident(part)
        for part in match.groups()
        if part is not None
    )


def index_element(column: str) -> str:
    """An index column: an identifier, quoted as written, or ``(expression)``."""
    column = column.strip()
    return quote_ident(column) if _IDENT.match(column) else f"({column})"


def default_index_name(table: str, columns: t.Sequence[str], unique: bool) -> str:
    """``<table>_<col>_<col>_key`` (unique) or ``..._idx``, at most 63 bytes."""
    match = _QUALIFIED_NAME.match(table)
    bare = (match.group(2) or match.group(1)) if match else table.split(".")[-1]
    if bare.startswith('"'):
        bare = bare[1:-1].replace('""', '"')
    parts = [c if _IDENT.match(c.strip()) else "expr" for c in columns]
    name = "_".join([bare, *parts, "key" if unique else "idx"])
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[:54].decode(errors="ignore") + "_" + digest


def index_sql(options: t.Mapping[str, t.Any]) -> str:
    """The ``CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS`` of an index step."""
    unique = "UNIQUE " if options["unique"] else ""
    elements = ", ".join(index_element(c) for c in options["columns"])
    sql = (
        f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS "
        f"{quote_ident(options['name'])} ON {quote_name(options['table'])} "
        f"({elements})"
    )
    if options.get("where"):
        sql += f" WHERE {options['where']}"
    return sql


def backfill_batch_template(options: t.Mapping[str, t.Any]) -> str:
    """One batch of a backfill step, with ``$1``/``$2`` as the key range bounds.

    This is what ``plan`` and ``check`` show; the phase sends it with literal
    bounds and the checkpoint update in the same transaction.
    """
    key = quote_ident(options["key"])
    sql = (
        f"UPDATE {quote_name(options['table'])} SET {options['set']} "
        f"WHERE {key} > $1 AND {key} <= $2"
    )
    if options.get("where"):
        sql += f" AND ({options['where']})"
    return sql


def _check_parses(where: str, sql: str) -> None:
    try:
        statements = split_statements(sql)
    except SqlSyntaxError as exc:
        raise RegistrationError(f"{where}: invalid SQL: {exc.message}: {sql}") from exc
    if len(statements) != 1:
        raise RegistrationError(
            f"{where}: the options must make one statement, not {len(statements)} "
            f"(is there a ';' in them?): {sql}"
        )


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
