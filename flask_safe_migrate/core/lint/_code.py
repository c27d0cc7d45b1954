"""What the migration-code verifier knows of one Python module (from its AST)."""

from __future__ import annotations

import ast
import functools
import os
import re
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..sql import SqlSyntaxError
from ..sql import StatementKind
from ..sql import split_statements

__all__ = [
    "Callee",
    "ModuleCode",
    "call_name",
    "callees",
    "chain_text",
    "is_retry_call",
    "is_retry_decorator",
    "load_module",
    "reach",
    "walk_local",
]

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef

#: Decorator attributes that register a step function (``@migrate.step(...)``).
STEP_DECORATORS = frozenset({"step", "schema", "index", "backfill"})
#: Registry calls that register a SQL step (``migrate.sql("id", "...")``).
STEP_CALLS = frozenset({"sql", "index", "backfill"})
#: Our retry helpers, by name.
RETRY_HELPERS = frozenset(
    {"execute_with_retry", "run_with_retry", "run_with_retry_stats"}
)
#: Decorators that retry the function they wrap (ours, tenacity, backoff).
RETRY_DECORATORS = frozenset({"retry", "wrap", "on_exception", "retry_on"})
#: Calls that open a connection or a transaction on one.
CONNECT_CALLS = frozenset({"connect", "begin", "begin_nested", "raw_connection"})

_DDL = re.compile(
    r"^\s*(CREATE|ALTER|DROP|TRUNCATE|COMMENT\s+ON|GRANT|REVOKE)\s", re.IGNORECASE
)


@dataclass
class ModuleCode:
    """One parsed module and the parts of it that are migration code."""

    path: str
    tree: ast.Module
    #: Step functions and the name of their handle parameter (None if absent).
    step_functions: dict[FunctionNode, str | None] = field(default_factory=dict)
    #: Functions that are migration code: step functions (and the functions
    #: nested in them), and functions that call a retry helper or send DDL text.
    migration_functions: list[FunctionNode] = field(default_factory=list)
    #: Whether the module registers steps (its top level is migration code).
    registers_steps: bool = False
    #: Names bound to a Flask-SQLAlchemy object (``db = SQLAlchemy()``, ``db``,
    #: ``from app import db as database``, ``orm = db``).
    db_names: set[str] = field(default_factory=lambda: {"db"})
    #: Functions defined at the top level, by name.
    functions: dict[str, FunctionNode] = field(default_factory=dict)
    #: Imported names: local name -> (module as written, with leading dots for a
    #: relative import; the imported attribute, or None for ``import a.b as c``).
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def migration_scopes(self) -> list[ast.AST]:
        """The nodes whose own code (not nested definitions) is migration code."""
        scopes: list[ast.AST] = list(self.migration_functions)
        if self.registers_steps:
            scopes.insert(0, self.tree)
        return scopes


def load_module(path: str, source: str) -> ModuleCode:
    """Parse *source* and find its step functions and migration code.

    :raises SyntaxError: the source does not parse.
    """
    tree = ast.parse(source, filename=path)
    module = ModuleCode(path=path, tree=tree)
    _read_names(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_step_call(node):
            module.registers_steps = True
        if isinstance(node, FunctionNode) and _is_step_function(node):
            module.registers_steps = True
            args = node.args.posonlyargs + node.args.args
            module.step_functions[node] = args[0].arg if args else None
    registered = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _is_step_call(node)
        for arg in node.args[1:]
    }
    seen: set[int] = set()
    for fn in module.step_functions:
        # A step function's nested helpers run as part of the step.
        for inner in ast.walk(fn):
            if isinstance(inner, FunctionNode) and id(inner) not in seen:
                seen.add(id(inner))
                module.migration_functions.append(inner)
    for node in ast.walk(tree):
        if (
            isinstance(node, FunctionNode)
            and id(node) not in seen
            and _is_migration_function(node, registered)
        ):
            seen.add(id(node))
            module.migration_functions.append(node)
    return module


def _read_names(module: ModuleCode) -> None:
    """Fill in the module's imports, top-level functions and names for ``db``."""
    factories = {"SQLAlchemy"}
    for top in module.tree.body:
        if isinstance(top, FunctionNode):
            module.functions[top.name] = top
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            source = "." * node.level + (node.module or "")
            for alias in node.names:
                local = alias.asname or alias.name
                module.imports[local] = (source, alias.name)
                if alias.name == "db":
                    module.db_names.add(local)
                elif alias.name == "SQLAlchemy":
                    factories.add(local)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module.imports[alias.asname] = (alias.name, None)
    assigns = [n for n in ast.walk(module.tree) if isinstance(n, ast.Assign)]
    for _ in range(3):  # aliases of aliases: orm = database = db
        for node in assigns:
            value = node.value
            if (isinstance(value, ast.Call) and call_name(value) in factories) or (
                isinstance(value, ast.Name) and value.id in module.db_names
            ):
                module.db_names.update(
                    target.id for target in node.targets if isinstance(target, ast.Name)
                )


@dataclass(frozen=True)
class Callee:
    """A function a call leads to, in this module or an imported project module."""

    module: ModuleCode
    function: FunctionNode

    @property
    def where(self) -> str:
        """``name() (path:line)`` for a finding's call chain."""
        return f"{self.function.name}() ({self.module.path}:{self.function.lineno})"


def callees(module: ModuleCode, call: ast.AST) -> Callee | None:
    """The project function *call* calls: a top-level function of *module*, or
    one imported from a module found beside it or below the working directory.
    """
    if not isinstance(call, ast.Call):
        return None
    func = call.func
    if isinstance(func, ast.Name):
        if func.id in module.functions:
            return Callee(module, module.functions[func.id])
        imported = module.imports.get(func.id)
        if imported is None or imported[1] is None:
            return None
        target = _load_imported(module.path, imported[0])
        if target is None:
            # ``from pkg import helpers`` then ``helpers(...)`` is no function call.
            return None
        fn = target.functions.get(imported[1])
        return Callee(target, fn) if fn is not None else None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        imported = module.imports.get(func.value.id)
        if imported is None:
            return None
        source, attr = imported
        name = source if attr is None else _join(source, attr)
        target = _load_imported(module.path, name)
        fn = target.functions.get(func.attr) if target is not None else None
        return Callee(target, fn) if target is not None and fn is not None else None
    return None


#: How many calls deep the verifier follows a step into helper functions.
MAX_CALL_DEPTH = 2


def reach(
    module: ModuleCode,
    call: ast.AST,
    found: t.Callable[[ast.AST, ModuleCode], bool],
    depth: int = MAX_CALL_DEPTH,
    _seen: frozenset[int] = frozenset(),
) -> tuple[list[Callee], ast.AST] | None:
    """Follow *call* into project functions; return the call chain to the first
    node of their code for which ``found(node, its_module)`` holds, or None.
    """
    callee = callees(module, call)
    if callee is None or depth < 1 or id(callee.function) in _seen:
        return None
    seen = _seen | {id(callee.function)}
    for node in walk_local(callee.function):
        if found(node, callee.module):
            return [callee], node
    for node in walk_local(callee.function):
        if isinstance(node, ast.Call):
            deeper = reach(callee.module, node, found, depth - 1, seen)
            if deeper is not None:
                return [callee, *deeper[0]], deeper[1]
    return None


def chain_text(chain: t.Sequence[Callee]) -> str:
    """``a() (x.py:3) -> b() (y.py:9)`` for a finding's message."""
    return " -> ".join(callee.where for callee in chain)


def _join(source: str, attr: str) -> str:
    return source + attr if source.endswith(".") else f"{source}.{attr}"


def _load_imported(importer: str, name: str) -> ModuleCode | None:
    """Parse the project module *name* imported by the file *importer*."""
    dots = len(name) - len(name.lstrip("."))
    parts = [p for p in name.lstrip(".").split(".") if p]
    if dots:
        base = os.path.dirname(os.path.abspath(importer))
        for _ in range(dots - 1):
            base = os.path.dirname(base)
        roots = [base]
    else:
        roots = _roots(os.path.dirname(os.path.abspath(importer)))
    for root in roots:
        stem = os.path.join(root, *parts)
        for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
            if parts and os.path.isfile(candidate):
                return _parse_file(candidate, os.stat(candidate).st_mtime_ns)
    return None


def _roots(directory: str) -> list[str]:
    """The importer's directory and its parents up to the working directory."""
    roots = [directory]
    top = os.path.abspath(os.getcwd())
    while directory.startswith(top) and directory != top:
        directory = os.path.dirname(directory)
        roots.append(directory)
    return roots


@functools.lru_cache(maxsize=256)
def _parse_file(path: str, mtime_ns: int) -> ModuleCode | None:
    """Parse an imported project module (cached per path and modification time)."""
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        shown = os.path.relpath(path)
        tree = ast.parse(source, filename=path)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    module = ModuleCode(path=shown if not shown.startswith("..") else path, tree=tree)
    _read_names(module)
    return module


def walk_local(root: ast.AST) -> t.Iterator[ast.AST]:
    """Yield the nodes of *root*'s own code, not descending into nested defs."""
    stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, FunctionNode | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))


def call_name(node: ast.AST) -> str:
    """Return the called name of a call (``a.b.c(...)`` gives ``c``), or ``""``."""
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def dotted(node: ast.AST) -> str:
    """Return ``a.b.c`` for a chain of attributes on a name, else ``""``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def is_retry_call(node: ast.AST) -> bool:
    """Whether *node* calls a retry helper (ours, or ``<policy>.call(...)``)."""
    if not isinstance(node, ast.Call):
        return False
    name = call_name(node)
    if name in RETRY_HELPERS:
        return True
    receiver = dotted(node.func.value) if isinstance(node.func, ast.Attribute) else ""
    return name == "call" and bool(re.search(r"polic|retr", receiver, re.IGNORECASE))


def is_retry_decorator(node: ast.AST) -> bool:
    """Whether a decorator retries its function (``@retry``, ``@policy.wrap``...)."""
    target = node.func if isinstance(node, ast.Call) else node
    return call_name(target) in RETRY_DECORATORS


def is_connect_call(node: ast.AST | None) -> bool:
    """Whether *node* opens a connection (``engine.connect()``, ``begin()``...)."""
    return isinstance(node, ast.Call) and call_name(node) in CONNECT_CALLS


def _is_step_call(node: ast.Call) -> bool:
    return (
        isinstance(node.func, ast.Attribute)
        and node.func.attr in STEP_CALLS
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _is_step_function(node: FunctionNode) -> bool:
    return any(
        isinstance(d, ast.Call)
        and isinstance(d.func, ast.Attribute)
        and d.func.attr in STEP_DECORATORS
        for d in node.decorator_list
    )


def _is_migration_function(node: FunctionNode, registered: set[int]) -> bool:
    """Whether *node*'s own code calls a retry helper or holds DDL it sends.

    DDL text given to ``migrate.sql(...)`` only registers a step: it does not count.
    """
    for inner in walk_local(node):
        if is_retry_call(inner):
            return True
        if (
            id(inner) not in registered
            and isinstance(inner, ast.Constant)
            and isinstance(inner.value, str)
            and is_ddl_text(inner.value)
        ):
            return True
    return False


def is_ddl_text(text: str) -> bool:
    """Whether *text* is SQL that changes the schema (parsed, not guessed)."""
    if not _DDL.match(text):
        return False
    try:
        statements = split_statements(text)
    except SqlSyntaxError:
        return False
    return any(
        s.kind in {StatementKind.DDL, StatementKind.INDEX_BUILD} for s in statements
    )
