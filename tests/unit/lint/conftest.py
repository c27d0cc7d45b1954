"""Fixtures of the lint tests: steps built from SQL, the squawk binary."""

from __future__ import annotations

import pytest

from flask_safe_migrate.core.lint.squawk import find_squawk
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import Step


def make_step(
    sql: str,
    *,
    id: str = "0001_step",
    phase: str = "schema",
    category: str | None = None,
) -> Step:
    """Return a SQL step of *phase* (any phase: the registry is bypassed)."""
    return Step(
        id=id,
        phase=Phase.parse(phase),
        text_checksum="",
        location=f"steps.py:{id}",
        sql=sql,
        category=category,
    )


@pytest.fixture
def squawk_binary() -> str:
    """Give the squawk binary, or skip when it is not installed."""
    binary = find_squawk()
    if binary is None:
        pytest.skip("squawk is not installed (pip install squawk-cli)")
    return binary
