"""Precision and recall of ``check`` on the corpus, per rule and overall.

Run ``python -m tests.unit.lint.score`` (add ``--no-squawk`` for our rules alone).
A case's expected rule ids are the truth: a reported id not expected is a false
positive, an expected id not reported a false negative.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass

from flask_safe_migrate.core.lint import RULES
from flask_safe_migrate.core.lint import LintReport
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.lint.squawk import find_squawk

from . import corpus
from . import corpus_pg
from .conftest import make_step
from .corpus import Case

#: Every corpus case.
CASES = [*corpus.CASES, *corpus_pg.CASES]


@dataclass
class Score:
    """True positives, false positives and false negatives of one rule (or all)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """Share of the reported findings that were expected (1.0 if none)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Share of the expected findings that were reported (1.0 if none)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@functools.cache
def corpus_report(squawk: bool) -> LintReport:
    """Lint every corpus case as one step of one registry."""
    steps = [
        make_step(c.sql, id=c.id, phase=c.phase, category=c.category) for c in CASES
    ]
    return lint_steps(steps, squawk=squawk)


def found(report: LintReport, case: Case) -> set[str]:
    """The rule ids reported for *case*'s step."""
    return {f.rule for f in report.findings if f.step_id == case.id}


def expected(case: Case, squawk: bool) -> set[str]:
    """The rule ids *case* should report: squawk's only when squawk runs."""
    return {r for r in case.expected if squawk or r in RULES}


def score(squawk: bool) -> dict[str, Score]:
    """Score every rule id seen or expected, plus ``"overall"``."""
    report = corpus_report(squawk)
    scores: dict[str, Score] = {"overall": Score()}
    for case in CASES:
        got, want = found(report, case), expected(case, squawk)
        for rule in got | want:
            for key in (rule, "overall"):
                entry = scores.setdefault(key, Score())
                entry.tp += rule in got and rule in want
                entry.fp += rule in got and rule not in want
                entry.fn += rule in want and rule not in got
    return scores


def render(scores: dict[str, Score]) -> str:
    """A table of the scores, one rule a line, overall last."""
    head = f"{'rule':44} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>6}"
    lines = [head]
    for rule in [*sorted(r for r in scores if r != "overall"), "overall"]:
        s = scores[rule]
        lines.append(
            f"{rule:44} {s.tp:4} {s.fp:4} {s.fn:4} {s.precision:9.3f} {s.recall:6.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when overall precision or recall is below 0.97."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-squawk", action="store_true", help="our rules only")
    args = parser.parse_args(argv)
    squawk = not args.no_squawk and find_squawk() is not None
    scores = score(squawk)
    print(f"{len(CASES)} cases, squawk {'on' if squawk else 'off'}")
    print(render(scores))
    overall = scores["overall"]
    return 0 if min(overall.precision, overall.recall) >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
