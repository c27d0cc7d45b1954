"""Imports flow one way: no cycle, and the core never imports Flask or click."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

import flask_safe_migrate

CORE = Path(flask_safe_migrate.__file__).parent / "core"
FORBIDDEN = {"flask", "flask_sqlalchemy", "click"}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module)
            elif node.level >= 2 or (node.module or "").startswith(
                ("extension", "cli")
            ):
                names.add("." * node.level + (node.module or ""))
    return names


def test_core_modules_import_no_flask() -> None:
    """No core module imports flask, click, flask_sqlalchemy or the Flask layer."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for name in _imported_modules(path):
            root = name.split(".")[0]
            layer = name.lstrip(".").split(".")[0] in {"extension", "cli"}
            if root in FORBIDDEN or (name.startswith("..") and layer):
                offenders.append(f"{path.relative_to(CORE)}: {name}")
    assert offenders == []


def test_core_imports_with_flask_blocked() -> None:
    """Importing the core and the package root works when flask cannot be imported."""
    code = (
        "import sys\n"
        "for name in ('flask', 'flask_sqlalchemy', 'click'):\n"
        "    sys.modules[name] = None\n"
        "import flask_safe_migrate.core.commands\n"
        "import flask_safe_migrate\n"
        "from flask_safe_migrate import StepRegistry, execute_with_retry\n"
        "assert 'flask' not in [m for m in sys.modules if sys.modules[m]]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def _import_cycles() -> list[list[str]]:
    """Each import that closes a cycle, as the chain from the import back to it."""
    graph = grimp.build_graph("flask_safe_migrate", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append([importer, *back])
    return cycles


def test_no_import_cycle() -> None:
    """No chain of imports, those inside functions included, leads back to its start."""
    cycles = _import_cycles()
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


#: Third-party packages the package works without, imported where they are used.
_OPTIONAL = {"alembic"}


def _inner_imports(path: Path) -> set[str]:
    """``file: module`` for each import inside a function of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                found.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom):
                dots = "." * inner.level
                found.update(
                    dots + (inner.module or alias.name) for alias in inner.names
                )
    return found


def test_no_import_inside_a_function() -> None:
    """Only an optional third-party dependency is imported inside a function."""
    package = CORE.parent
    offenders = {
        f"{path.relative_to(package)}: {name}"
        for path in sorted(package.rglob("*.py"))
        for name in _inner_imports(path)
        if name.split(".")[0] not in _OPTIONAL
    }
    assert offenders == set()


def test_deferred_imports_go_through_core_lazy() -> None:
    """``importlib.import_module`` is called in core.lazy only (the one documented
    lazy-loading point, issue 15 item 4), in the package root's ``__getattr__``
    (the Flask layer loads only when asked, so the core works without Flask) and
    in ``extension`` (the user's SAFE_MIGRATE_STEP_MODULES) and in
    ``core/generate/output.py`` (the user's SAFE_MIGRATE_METADATA)."""
    allowed = {"core/lazy.py", "__init__.py", "extension.py", "core/generate/output.py"}
    package = CORE.parent
    callers = {
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if "import_module(" in path.read_text()
    }
    assert callers <= allowed


def test_cold_import_loads_no_parser_or_linter() -> None:
    """Importing the extension loads neither pglast nor the linter."""
    code = (
        "import sys\n"
        "import flask_safe_migrate.extension\n"
        "import flask_safe_migrate.cli\n"
        "loaded = [m for m in ('pglast', 'flask_safe_migrate.core.lint') "
        "if m in sys.modules]\n"
        "assert loaded == [], loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
