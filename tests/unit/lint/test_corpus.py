"""The corpus: every case reports exactly its expected rule ids, ours and squawk's."""

from __future__ import annotations

import pytest

from flask_safe_migrate.core.lint import RULES
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.lint.squawk import find_squawk

from .conftest import make_step
from .corpus import Case
from .score import CASES
from .score import corpus_report
from .score import found
from .score import score


def test_corpus_size() -> None:
    """The corpus holds at least 300 cases with unique ids, safe and dangerous."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 300
    assert len(set(ids)) == len(ids)
    assert sum(1 for c in CASES if not c.expected) >= 100
    assert sum(1 for c in CASES if c.expected) >= 100


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


def test_precision_and_recall() -> None:
    """Overall precision and recall are at least 0.97 (with squawk when installed)."""
    overall = score(squawk=find_squawk() is not None)["overall"]
    assert overall.precision >= 0.97
    assert overall.recall >= 0.97


def test_steps_are_independent() -> None:
    """A step linted alone reports what it reports among all the others: our rules
    for every case, squawk's too (when installed) for the cases whose findings
    depend on more than one statement (several statements, or a DO block)."""
    squawk = find_squawk() is not None
    together = {flag: corpus_report(squawk=flag) for flag in {False, squawk}}
    for case in CASES:
        several = ";" in case.sql.strip().rstrip(";") or "DO $$" in case.sql.upper()
        step = make_step(case.sql, id=case.id, phase=case.phase, category=case.category)
        flag = squawk and several
        alone = lint_steps([step], squawk=flag)
        assert found(alone, case) == found(together[flag], case), case.id
