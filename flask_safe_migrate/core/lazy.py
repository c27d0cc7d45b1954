"""lazy_module: the one place where an import is deferred to its first use.

A boot on an up-to-date database must stay cheap (issue 15, item 4): it reads the
ledger and compares checksums, and never parses SQL or lints. The SQL parser
(``pglast``) and the linter (``core.lint``) are therefore imported on first use,
through a :class:`LazyModule` bound at module level where a plain import would
stand::

    if t.TYPE_CHECKING:
        import pglast.parser
    else:
        pglast = lazy_module("pglast")

The project's rule "no import inside a function except of an optional dependency"
(STYLE.md) stays true in spirit: every deferred import is still declared at the top
of the module that uses it, under the name it is used by, and this module is the
only one that calls :func:`importlib.import_module` for it (a test checks that). The
import layers are unchanged: a deferred import follows the same one-way rules.
"""

from __future__ import annotations

import importlib
import types
import typing as t

__all__ = ["LazyModule", "lazy_module"]


class LazyModule:
    """Stands for module ``name`` until an attribute is read, then imports it.

    Reading ``proxy.sub`` where ``sub`` is a submodule not imported by the package
    itself imports ``name.sub``, so ``pglast.parser.parse_sql`` works as written.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> t.Any:
        module = importlib.import_module(self._name)
        try:
            return getattr(module, attr)
        except AttributeError:
            if attr.startswith("__"):
                raise
            return _submodule(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def _submodule(module: types.ModuleType, attr: str) -> types.ModuleType:
    name = f"{module.__name__}.{attr}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the submodule exists but something it imports does not
        raise AttributeError(
            f"module {module.__name__!r} has no attribute {attr!r}"
        ) from exc


def lazy_module(name: str) -> t.Any:
    """Return a stand-in for module ``name`` that imports it on first use.

    :param name: an absolute module name, e.g. ``"pglast"`` or
        ``"flask_safe_migrate.core.lint"``.
    """
    return LazyModule(name)
