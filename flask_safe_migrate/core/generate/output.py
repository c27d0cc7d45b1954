"""Where a generated module goes: its file, its number, and its step id prefix."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from ..exceptions import ConfigurationError
from ..settings import PREFIX

__all__ = ["Target", "load_metadata", "next_number", "slugify", "target_for"]

_NUMBERED = re.compile(r"^(\d+)_")


@dataclass(frozen=True)
class Target:
    """The file a generated module is written to, and its step id prefix."""

    path: str
    prefix: str
    #: The module name to add to ``SAFE_MIGRATE_STEP_MODULES``, when it will not
    #: be imported otherwise (None: a package there imports it).
    unlisted_module: str | None = None


def slugify(message: str) -> str:
    """``"Add lead phone!"`` -> ``add_lead_phone`` (at most 60 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:60].rstrip("_")
    return slug or "changes"


def load_metadata(spec: str) -> sa.MetaData:
    """Import ``pkg.module:attribute`` and return it, a ``MetaData`` (or an object
    with a ``.metadata``, such as a declarative base or Flask-SQLAlchemy's ``db``).

    :raises ConfigurationError: naming ``SAFE_MIGRATE_METADATA``.
    """
    key = PREFIX + "METADATA"
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"expected 'pkg.module:attribute', got {spec!r}", key=key
        )
    try:
        value: t.Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}", key=key) from exc
    metadata = (
        value if isinstance(value, sa.MetaData) else getattr(value, "metadata", None)
    )
    if not isinstance(metadata, sa.MetaData):
        raise ConfigurationError(
            f"{spec!r} is a {type(value).__name__}, not a SQLAlchemy MetaData", key=key
        )
    return metadata


def _step_module_location(name: str) -> tuple[str, bool]:
    """The directory of a step module (or package) and whether it is a package."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot find step module {name!r}: {exc}", key=PREFIX + "STEP_MODULES"
        ) from exc
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise ConfigurationError(
            f"cannot find step module {name!r}", key=PREFIX + "STEP_MODULES"
        )
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations)), True
    return os.path.dirname(str(spec.origin)), False


def next_number(directory: str, step_ids: t.Iterable[str]) -> int:
    """One more than the highest number of the directory's ``NNNN_*.py`` files and
    of the registered step ids (``0007_backfill`` counts as 7)."""
    names = [*step_ids]
    if os.path.isdir(directory):
        names.extend(n for n in os.listdir(directory) if n.endswith(".py"))
    numbers = [int(m.group(1)) for n in names if (m := _NUMBERED.match(n))]
    return max(numbers, default=0) + 1


def target_for(
    message: str,
    *,
    step_modules: t.Sequence[str],
    step_ids: t.Sequence[str],
    output: str | None = None,
) -> Target:
    """Choose the file: ``output``, else ``NNNN_<slug>.py`` in the last step package
    of ``step_modules`` (or next to the last step module).

    :raises ConfigurationError: no ``output`` and no step modules to put it next to.
    """
    slug = slugify(message)
    if output is not None:
        directory = os.path.dirname(os.path.abspath(output))
        match = _NUMBERED.match(os.path.basename(output))
        number = int(match.group(1)) if match else next_number(directory, step_ids)
        return Target(os.path.abspath(output), f"{number:04d}_{slug}")
    if not step_modules:
        raise ConfigurationError(
            "name the step modules (a package is best: every file in it is "
            "imported), or give --output FILE.py",
            key=PREFIX + "STEP_MODULES",
        )
    located = [(name, *_step_module_location(name)) for name in step_modules]
    packages = [item for item in located if item[2]]
    name, directory, is_package = (packages or located)[-1]
    number = next_number(directory, step_ids)
    filename = f"{number:04d}_{slug}.py"
    parent = name if is_package else name.rpartition(".")[0]
    module = f"{parent}.{filename[:-3]}" if parent else filename[:-3]
    return Target(
        os.path.join(directory, filename),
        f"{number:04d}_{slug}",
        unlisted_module=None if is_package else module,
    )
