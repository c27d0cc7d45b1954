"""The corpus: every case reports exactly its expected rule ids, ours and squawk's."""

from __future__ import annotations

import functools

import pytest

from flask_safe_migrate.core.lint import RULES
from flask_safe_migrate.core.lint import LintReport
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.lint.squawk import find_squawk

from .conftest import make_step
from .corpus import CASES
from .corpus import PRELUDE
from .corpus import Case


@functools.cache
def corpus_report(squawk: bool) -> LintReport:
    """Lint the prelude and every corpus case as the steps of one registry."""
    steps = [
        make_step(c.sql, id=c.id, phase=c.phase, category=c.category)
        for c in [*PRELUDE, *CASES]
    ]
    return lint_steps(steps, squawk=squawk)


def found(report: LintReport, case: Case) -> set[str]:
    """The rule ids reported for *case*'s step."""
    return {f.rule for f in report.findings if f.step_id == case.id}


def test_corpus_size() -> None:
    """The corpus holds at least 80 cases with unique ids, safe and dangerous."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 80
    assert len(set(ids)) == len(ids)
    assert sum(1 for c in CASES if not c.expected) >= 30
    assert sum(1 for c in CASES if c.expected) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_our_rules(case: Case) -> None:
    """Our rules alone report exactly the case's expected ids of our rules."""
    report = corpus_report(squawk=False)
    assert found(report, case) == {r for r in case.expected if r in RULES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_with_squawk(case: Case) -> None:
    """With squawk, each case reports exactly its expected rule ids."""
    if find_squawk() is None:
        pytest.skip("squawk is not installed")
    report = corpus_report(squawk=True)
    assert report.squawk_ran, report.squawk_note
    assert found(report, case) == set(case.expected)


def test_prelude_is_clean() -> None:
    """The prelude steps report nothing themselves."""
    report = corpus_report(squawk=find_squawk() is not None)
    assert not [f for f in report.findings if f.step_id in {c.id for c in PRELUDE}]
