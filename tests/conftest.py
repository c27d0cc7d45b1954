"""Configuration shared by every test: the markers that tests/integration adds."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``matrix`` marker (``integration`` is in pyproject.toml)."""
    config.addinivalue_line(
        "markers",
        "matrix: the fault-and-storm subset run on every PostgreSQL major and pooler"
        " (tests/integration/matrix.py)",
    )
