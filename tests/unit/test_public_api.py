"""The public API: a sorted __all__ whose every name imports."""

from __future__ import annotations

import pytest

import flask_safe_migrate


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted and has no duplicates."""
    names = flask_safe_migrate.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_public_name_is_importable() -> None:
    """Every name in __all__ resolves, the lazy Flask ones included."""
    for name in flask_safe_migrate.__all__:
        assert getattr(flask_safe_migrate, name) is not None, name


def test_lazy_names_are_the_flask_layer() -> None:
    """SafeMigrate and cli are served from the Flask layer modules."""
    from flask_safe_migrate import cli
    from flask_safe_migrate.extension import SafeMigrate

    assert flask_safe_migrate.SafeMigrate is SafeMigrate
    assert flask_safe_migrate.cli is cli


def test_unknown_attribute_raises_attribute_error() -> None:
    """A missing name is an AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="NoSuchThing"):
        flask_safe_migrate.NoSuchThing  # noqa: B018
