"""Shared by every test: the markers tests/integration adds, the report header."""

from __future__ import annotations

import pytest

from .integration.matrix import selected_combination


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``matrix`` marker (``integration`` is in pyproject.toml)."""
    config.addinivalue_line(
        "markers",
        "matrix: the fault-and-storm subset run on every PostgreSQL major and pooler"
        " (tests/integration/matrix.py)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    """Say which PostgreSQL and pooler the integration tests run on."""
    return f"integration stack: {selected_combination()}"
