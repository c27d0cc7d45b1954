"""The rule registry, function steps, suppressions and the run-time lint."""

from __future__ import annotations

import importlib
import pkgutil
import re
import types
import typing as t
from pathlib import Path

import pytest

from flask_safe_migrate.core.exceptions import LintViolationError
from flask_safe_migrate.core.ledger import LedgerRow
from flask_safe_migrate.core.lint import RULES
from flask_safe_migrate.core.lint import lint_sql
from flask_safe_migrate.core.lint import lint_steps
from flask_safe_migrate.core.lint import linter
from flask_safe_migrate.core.lint import rules as rules_package
from flask_safe_migrate.core.lint import run_time_findings
from flask_safe_migrate.core.lint.findings import Finding
from flask_safe_migrate.core.lint.findings import Severity
from flask_safe_migrate.core.lint.squawk import KNOWN_RULES
from flask_safe_migrate.core.runner import Runner
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import StepHandle
from flask_safe_migrate.core.steps import StepRegistry

from .conftest import make_step


class TestRegistry:
    """One module per rule, each with an id, a severity, a summary and a hint."""

    def test_one_module_per_rule(self) -> None:
        """Every public module of the rules package declares exactly one rule."""
        names = [
            m.name
            for m in pkgutil.iter_modules(rules_package.__path__)
            if not m.name.startswith("_")
        ]
        ids = []
        for name in names:
            module = importlib.import_module(f"{rules_package.__name__}.{name}")
            assert module.RULE.replace("-", "_") == name
            ids.append(module.RULE)
        assert sorted(ids) == sorted(RULES)

    @pytest.mark.parametrize("rule_id", sorted(RULES))
    def test_rule_is_documented(self, rule_id: str) -> None:
        """Ids are kebab-case; summary and hint are one line each."""
        rule = RULES[rule_id]
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.id)
        assert rule.summary
        assert "\n" not in rule.summary
        assert rule.hint
        assert "\n" not in rule.hint
        assert isinstance(rule.severity, Severity)

    def test_no_clash_with_squawk(self) -> None:
        """Our ids never reuse a squawk rule name."""
        assert not set(RULES) & KNOWN_RULES


class TestFunctionSteps:
    """Function steps are recorded on a handle, and findings point at the call."""

    def test_finding_names_the_execute_call(self) -> None:
        """A finding in a function step names the line of its execute() call."""
        registry = StepRegistry()

        @registry.step("0001_fn")
        def fn(m: StepHandle) -> None:
            m.execute("ALTER TABLE leads ADD COLUMN a text")
            m.execute("UPDATE leads SET a = 'x'")

        report = lint_steps(registry.steps(), squawk=False)
        (finding,) = report.findings
        assert finding.rule == "dml-needs-category"
        line = fn.__code__.co_firstlineno + 3
        assert finding.location is not None
        assert finding.location.endswith(f"test_rules.py:{line}")
        assert finding.statement == "UPDATE leads SET a = 'x'"

    def test_python_suppression_at_the_call(self) -> None:
        """`# safe-migrate: ignore RULE reason` above the execute() call works."""
        registry = StepRegistry()

        @registry.step("0001_fn")
        def fn(m: StepHandle) -> None:
            # safe-migrate: ignore require-concurrent-index the table has 10 rows
            m.execute("CREATE INDEX leads_a_idx ON leads (a)")

        report = lint_steps(registry.steps(), squawk=False)
        assert report.findings == []
        assert [f.suppressed_reason for f in report.suppressed] == [
            "the table has 10 rows"
        ]

    def test_binds_are_parsed(self) -> None:
        """`:name` binds of a parameterized call do not break the parser."""
        registry = StepRegistry()

        @registry.step("0001_fn", category="seed")
        def fn(m: StepHandle) -> None:
            m.execute("INSERT INTO plans (code) VALUES (:code)", {"code": "pro"})

        assert lint_steps(registry.steps(), squawk=False).findings == []

    def test_step_that_raises_when_recorded(self) -> None:
        """A step that needs query results is reported, with what it sent first."""
        registry = StepRegistry()

        @registry.step("0001_fn")
        def fn(m: StepHandle) -> None:
            m.execute("SET statement_timeout = 0")
            (_row,) = m.execute("SELECT count(*) FROM leads")

        rules = sorted(f.rule for f in lint_steps(registry.steps()).findings)
        assert rules == ["session-setting", "step-not-recordable"]


class TestSuppressions:
    """`-- safe-migrate: ignore RULE reason` on the statement or the line above."""

    def test_line_above(self) -> None:
        """A comment on the line above a statement suppresses its finding."""
        sql = (
            "ALTER TABLE a ADD COLUMN x text;\n"
            "-- safe-migrate: ignore session-setting needed for this one step\n"
            "SET search_path = app;"
        )
        assert lint_sql(sql) == []

    def test_other_statement_not_covered(self) -> None:
        """A comment two lines above does not reach the statement."""
        sql = (
            "-- safe-migrate: ignore session-setting needed\n"
            "ALTER TABLE a ADD COLUMN x text;\n"
            "SET search_path = app;"
        )
        rules = sorted(f.rule for f in lint_sql(sql))
        assert rules == ["session-setting", "unused-suppression"]

    def test_several_rules(self) -> None:
        """One comment may name several rules, comma-separated."""
        sql = (
            "-- safe-migrate: ignore session-setting,session-advisory-lock legacy\n"
            "SET search_path = app; SELECT pg_advisory_lock(1);"
        )
        assert lint_sql(sql) == []

    def test_disabled_rules(self) -> None:
        """Disabled rule ids report nothing."""
        assert lint_sql("SET search_path = app", disabled=["session-setting"]) == []


class TestLintSql:
    """The one-statement API."""

    def test_findings_carry_step_and_line(self) -> None:
        """A finding has the phase, the line in the SQL, the statement and a hint."""
        (finding,) = lint_sql("\n\nCREATE INDEX i ON t (a)")
        assert finding.line == 3
        assert finding.phase == "schema"
        assert finding.statement == "CREATE INDEX i ON t (a)"
        assert "migrate.index" in finding.hint

    def test_syntax_error(self) -> None:
        """Invalid SQL is one error finding, with the parser's line."""
        (finding,) = lint_sql("SELECT 1;\nALTER TABLE")
        assert (finding.rule, finding.line) == ("sql-syntax-error", 2)


class TestRunTime:
    """`run` refuses error findings of pending steps, unless configured otherwise."""

    def test_run_time_lint_skips_functions(self) -> None:
        """Only SQL steps are linted at run time; no function is called."""
        registry = StepRegistry()
        calls: list[str] = []

        @registry.step("0001_fn")
        def fn(m: StepHandle) -> None:
            calls.append("called")

        registry.sql("0002_index", "CREATE INDEX i ON t (a)")
        findings = run_time_findings(registry.steps())
        assert [f.step_id for f in findings] == ["0002_index"]
        assert calls == []

    def runner(
        self, registry: StepRegistry, rows: dict[str, LedgerRow] | None, **kw: t.Any
    ) -> Runner:
        """A runner whose ledger read is faked (no database)."""
        runner = Runner(MigrateSettings(**kw), registry, engine=t.cast(t.Any, None))
        runner.read_ledger = lambda: rows  # type: ignore[method-assign]  # fake
        return runner

    def test_preflight_refuses_pending_errors(self) -> None:
        """An error finding of a pending step raises LintViolationError."""
        registry = StepRegistry()
        registry.sql("0001_index", "CREATE INDEX i ON t (a)")
        runner = self.runner(registry, None)
        with pytest.raises(LintViolationError, match="0001_index") as info:
            runner.preflight(registry.steps())
        findings = t.cast(list[Finding], list(info.value.findings))
        assert [f.rule for f in findings] == ["require-concurrent-index"]

    def test_preflight_ignores_applied_steps(self) -> None:
        """An applied step's findings do not block the run."""
        registry = StepRegistry()
        step = registry.sql("0001_index", "CREATE INDEX i ON t (a)")
        row = LedgerRow(step.id, "schema", step.checksum, "applied")
        runner = self.runner(registry, {step.id: row})
        # No database: only the version the server announced is read from the engine.
        dialect = types.SimpleNamespace(server_version_info=(16, 0))
        runner.engine = t.cast(t.Any, types.SimpleNamespace(dialect=dialect))
        assert runner.run(dry_run=True).up_to_date

    def test_table_created_by_an_earlier_step(self) -> None:
        """Only the same step makes a table new: the result never depends on timing."""
        registry = StepRegistry()
        registry.sql("0001_table", "CREATE TABLE t (a text)")
        registry.sql("0002_index", "CREATE INDEX i ON t (a)")
        registry.sql("0003_both", "CREATE TABLE u (a text); CREATE INDEX j ON u (a)")
        with pytest.raises(LintViolationError, match="0002_index") as info:
            self.runner(registry, None).preflight(registry.steps())
        findings = t.cast(list[Finding], list(info.value.findings))
        assert [f.step_id for f in findings] == ["0002_index"]

    def test_preflight_configured_off(self) -> None:
        """lint_on_run=False and disabled rules let the step through."""
        registry = StepRegistry()
        registry.sql("0001_index", "CREATE INDEX i ON t (a)")
        self.runner(registry, None, lint_on_run=False).preflight(registry.steps())
        self.runner(
            registry, None, lint_disabled_rules=("require-concurrent-index",)
        ).preflight(registry.steps())

    def test_clean_preflight_reads_nothing(self) -> None:
        """Without findings the ledger is not read (the boot path stays cheap)."""
        registry = StepRegistry()
        registry.sql("0001_table", "CREATE TABLE t (a text)")
        runner = Runner(MigrateSettings(), registry, engine=t.cast(t.Any, None))

        def fail() -> None:
            raise AssertionError("read the ledger")

        runner.read_ledger = fail  # type: ignore[method-assign]  # fake
        runner.preflight(registry.steps())


@pytest.mark.parametrize("rule_id", sorted(set(RULES) | KNOWN_RULES))
def test_every_rule_id_can_be_suppressed(rule_id: str) -> None:
    """A suppression may name any rule id check can print, ours or squawk's."""
    sql = f"-- safe-migrate: ignore {rule_id} reviewed\nSELECT 1;"
    findings = lint_sql(sql)
    assert "invalid-suppression" not in {f.rule for f in findings}


def test_readme_lists_every_rule() -> None:
    """The README's check section has a row per rule with its severity."""
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    for rule in RULES.values():
        assert f"| `{rule.id}` | {rule.severity.value} |" in readme


class TestSquawk:
    """squawk is optional: without it, our rules run alone and say so once."""

    def test_missing_squawk_is_noted_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the binary the report carries one note and our findings."""
        monkeypatch.setattr(linter, "find_squawk", lambda: None)
        steps = [make_step("CREATE INDEX i ON t (a)", id=f"000{i}") for i in range(3)]
        report = lint_steps(steps)
        assert not report.squawk_ran
        assert report.squawk_note is not None
        assert "not installed" in report.squawk_note
        assert [f.rule for f in report.findings] == ["require-concurrent-index"] * 3

    def test_findings_map_to_step_and_line(self, squawk_binary: str) -> None:
        """A squawk finding names its step, the line in the SQL and the statement."""
        sql = "ALTER TABLE a ADD COLUMN x text;\n\nALTER TABLE a DROP COLUMN y;"
        (finding,) = lint_steps([make_step(sql, id="0009_drop")]).findings
        assert (finding.rule, finding.step_id, finding.line) == (
            "ban-drop-column",
            "0009_drop",
            3,
        )
        assert finding.source.value == "squawk"
        assert finding.statement == "ALTER TABLE a DROP COLUMN y"
