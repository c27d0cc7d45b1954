"""core.lazy: a module stand-in that imports on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flask_safe_migrate.core.lazy import lazy_module


def test_imports_on_first_attribute_and_finds_submodules() -> None:
    """Nothing is imported until an attribute is read; a submodule the package does
    not import itself is imported when named."""
    code = (
        "import sys\n"
        "from flask_safe_migrate.core.lazy import lazy_module\n"
        "wsgiref = lazy_module('wsgiref')\n"
        "assert 'wsgiref' not in sys.modules\n"
        "assert wsgiref.util.guess_scheme({}) == 'http'\n"
        "assert 'wsgiref.util' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_attribute_is_an_attribute_error() -> None:
    json = lazy_module("json")
    assert json.dumps([1]) == "[1]"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = json.nothing_here
    assert "json" in repr(json)
