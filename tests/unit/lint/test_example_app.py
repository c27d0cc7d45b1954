"""The example app and the test app pass check clean; removing a category fails."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from flask_safe_migrate.core.lint import check_steps
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.steps import Step
from flask_safe_migrate.core.steps import StepRegistry

from ...integration import migration30


def example_steps() -> list[Step]:
    """The steps the example app registers (its steps module, imported once)."""
    importlib.import_module("example_app.steps")
    app_module = importlib.import_module("example_app.app")
    registry: StepRegistry = app_module.migrate.registry
    return registry.steps()


def categorized() -> list[str]:
    """Ids of the example steps that declare a small-DML category."""
    return [s.id for s in example_steps() if s.category is not None]


def test_example_app_passes_check() -> None:
    """check (ours, squawk's when installed, the verifier) finds nothing at all."""
    report = check_steps(example_steps())
    assert report.findings == [], [f.describe() for f in report.findings]
    assert any(f.endswith("steps.py") for f in report.files_checked)


def test_test_app_passes_check() -> None:
    """The 30-step app of the integration tests is clean too (one reasoned
    suppression), its module verified."""
    report = check_steps(migration30.build_registry().steps())
    assert report.findings == [], [f.describe() for f in report.findings]
    assert [f.rule for f in report.suppressed] == ["require-concurrent-index"]
    assert any(f.endswith("migration30.py") for f in report.files_checked)


def test_example_app_declares_categories() -> None:
    """The example uses categories, so the next test has something to remove."""
    assert categorized()


@pytest.mark.parametrize("step_id", categorized())
def test_removing_a_category_fails(step_id: str) -> None:
    """Without its category, a DML step is an error naming the step and line."""
    registry = StepRegistry()
    for step in example_steps():
        if step.id == step_id:
            step = dataclasses.replace(step, category=None)
        registry.add(step)
    report = lint_steps(registry.steps(), squawk=False)
    errors = [f for f in report.errors if f.step_id == step_id]
    assert {f.rule for f in errors} == {"dml-needs-category"}
    for finding in errors:
        assert finding.location
        assert "example_app/steps.py:" in finding.location
        assert finding.line is not None
        assert step_id in finding.describe()
