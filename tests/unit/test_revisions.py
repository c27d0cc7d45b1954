"""Alembic revisions as steps: reading, order, checksums, checks, adoption (no DB)."""

from __future__ import annotations

import shutil
import sys
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_safe_migrate import SafeMigrate
from flask_safe_migrate import alembic_include_object
from flask_safe_migrate.core import revisions
from flask_safe_migrate.core.commands import record_step
from flask_safe_migrate.core.exceptions import ConfigurationError
from flask_safe_migrate.core.exceptions import RegistrationError
from flask_safe_migrate.core.exceptions import StepRefusedError
from flask_safe_migrate.core.revisions import register_revisions
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

TUTORIAL = Path(__file__).parents[1] / "flask_migrate_app" / "migrations"
FIRST, SEED, LAST = "3f1c2a9b7d01", "0a1b2c3d4e08", "1b2c3d4e5f09"

_REVISION = '''"""{message}"""
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = {down!r}


def upgrade():
    {body}
'''


def write_revision(
    versions: Path, revision: str, down: str | tuple[str, ...] | None, body: str
) -> Path:
    """Write one revision file into ``versions``."""
    versions.mkdir(parents=True, exist_ok=True)
    path = versions / f"{revision}_r.py"
    path.write_text(
        _REVISION.format(message=revision, revision=revision, down=down, body=body)
    )
    return path


@pytest.fixture
def tutorial(tmp_path: Path) -> Path:
    """A copy of the tutorial app's migrations directory."""
    return Path(shutil.copytree(TUTORIAL, tmp_path / "migrations"))


def test_revisions_register_in_upgrade_order_as_schema_function_steps() -> None:
    """Ids are revision ids, base to head; location is the file; categories apply."""
    registry = StepRegistry()
    steps = register_revisions(registry, TUTORIAL, categories={SEED: "seed"})
    assert len(steps) == 9
    assert (steps[0].id, steps[-1].id) == (FIRST, LAST)
    assert all(s.phase is Phase.SCHEMA and s.kind == "function" for s in steps)
    assert steps[0].location.endswith(f"versions/{FIRST}_users_table.py")
    assert steps[0].description == "users table"
    assert [s.id for s in steps if s.category] == [SEED]
    assert [s.id for s in registry.steps()] == [s.id for s in steps]


def test_directory_is_relative_to_the_current_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like Flask-Migrate, ``migrations`` is found from the working directory."""
    monkeypatch.chdir(TUTORIAL.parent)
    assert len(register_revisions(StepRegistry())) == 9
    monkeypatch.chdir(TUTORIAL)
    with pytest.raises(RegistrationError, match="does not exist"):
        register_revisions(StepRegistry())


def test_checksum_ignores_docstrings_and_comments_not_code(tutorial: Path) -> None:
    """An edited docstring or comment keeps the checksum; an edited op changes it."""
    path = next((tutorial / "versions").glob(f"{FIRST}_*.py"))
    before = revisions.file_checksum(str(path))
    text = path.read_text()
    path.write_text(text.replace("users table", "the users").replace("# ###", "#"))
    assert revisions.file_checksum(str(path)) == before
    path.write_text(text.replace("length=64", "length=65"))
    assert revisions.file_checksum(str(path)) != before


def test_several_heads_are_refused_naming_the_files(tmp_path: Path) -> None:
    """Two heads cannot be ordered: the error names both files and the merge."""
    versions = tmp_path / "m" / "versions"
    write_revision(versions, "aaaa00000001", None, "pass")
    write_revision(versions, "bbbb00000002", "aaaa00000001", "pass")
    write_revision(versions, "cccc00000003", "aaaa00000001", "pass")
    with pytest.raises(RegistrationError, match="2 heads") as info:
        register_revisions(StepRegistry(), tmp_path / "m")
    assert "bbbb00000002_r.py" in str(info.value)
    assert "merge heads" in str(info.value)


def test_a_dependency_cycle_is_a_registration_error(tmp_path: Path) -> None:
    """Revisions that come after each other cannot be ordered."""
    versions = tmp_path / "m" / "versions"
    write_revision(versions, "aaaa00000001", "bbbb00000002", "pass")
    write_revision(versions, "bbbb00000002", "aaaa00000001", "pass")
    with pytest.raises(RegistrationError, match="Cycle is detected"):
        register_revisions(StepRegistry(), tmp_path / "m")


def test_a_merge_revision_orders_both_branches_before_it(tmp_path: Path) -> None:
    """A merged history is ordered as Alembic upgrades it: parents before children."""
    versions = tmp_path / "m" / "versions"
    write_revision(versions, "aaaa00000001", None, "pass")
    write_revision(versions, "bbbb00000002", "aaaa00000001", "pass")
    write_revision(versions, "cccc00000003", "aaaa00000001", "pass")
    write_revision(versions, "dddd00000004", ("bbbb00000002", "cccc00000003"), "pass")
    ids = [s.id for s in register_revisions(StepRegistry(), tmp_path / "m")]
    assert (ids[0], ids[-1]) == ("aaaa00000001", "dddd00000004")
    assert sorted(ids[1:3]) == ["bbbb00000002", "cccc00000003"]


def test_without_alembic_the_error_has_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``migrate.alembic()`` without Alembic installed says what to install."""
    monkeypatch.setitem(sys.modules, "alembic.config", None)
    with pytest.raises(ConfigurationError) as info:
        SafeMigrate().alembic(TUTORIAL)
    assert "pip install 'flask-safe-migrate[alembic]'" in str(info.value)


def test_unknown_revisions_and_categories_are_refused() -> None:
    """A category for a revision not in the directory, or an unknown category."""
    with pytest.raises(RegistrationError, match="ffffffffffff not found"):
        register_revisions(
            StepRegistry(), TUTORIAL, categories={"ffffffffffff": "seed"}
        )
    with pytest.raises(RegistrationError, match="unknown category 'sow'"):
        register_revisions(StepRegistry(), TUTORIAL, categories={SEED: "sow"})


def test_plan_and_check_record_the_sql_alembic_renders_offline() -> None:
    """A recording handle gets each statement of the revision's offline SQL."""
    registry = StepRegistry()
    steps = {s.id: s for s in register_revisions(registry, TUTORIAL)}
    assert record_step(steps[SEED]) == [
        "INSERT INTO role (id, name) VALUES (1, 'admin')",
        "INSERT INTO role (id, name) VALUES (2, 'member')",
        "SELECT setval(pg_get_serial_sequence('role', 'id'), 2)",
    ]
    assert (
        record_step(steps[LAST])[-1]
        == 'CREATE UNIQUE INDEX ix_user_token ON "user" (token)'
    )


def test_a_revision_that_reads_the_database_is_rendered_up_to_there(
    tmp_path: Path,
) -> None:
    """SQL that needs a live database ends the offline rendering with a comment."""
    versions = tmp_path / "m" / "versions"
    body = 'op.execute("CREATE TABLE t (id int)")\n    op.get_bind().execute(1)'
    write_revision(versions, "aaaa00000001", None, body)
    (step,) = register_revisions(StepRegistry(), tmp_path / "m")
    sql = record_step(step)
    assert sql[0] == "CREATE TABLE t (id int)"
    assert sql[1].startswith("-- revision aaaa00000001: the rest cannot be rendered")


def test_check_reports_plain_create_index_on_an_existing_table() -> None:
    """``check`` flags an autogenerated plain index, with migrate.index as the fix."""
    from flask_safe_migrate.core import commands
    from flask_safe_migrate.core.settings import MigrateSettings

    registry = StepRegistry()
    register_revisions(registry, TUTORIAL, categories={SEED: "seed"})
    report = commands.check(MigrateSettings(), registry, squawk=False)
    found = {(f.step_id, f.rule) for f in report.findings}
    assert ("e5f6a7b8c906", "require-concurrent-index") in found
    assert (LAST, "require-concurrent-index") in found
    assert all("migrate.index" in f.hint for f in report.findings)
    language = next(f for f in report.findings if f.step_id == "e5f6a7b8c906")
    assert (
        "migrate.index('e5f6a7b8c906_ix_post_language', table='post', "
        "columns=['language'], name='ix_post_language') after migrate.alembic(...)"
    ) in language.describe()
    assert not any(f.step_id == FIRST for f in report.findings), "a new table's index"


class TestStatementCheck:
    """What a revision may send inside the step's transaction."""

    def step(self, category: str | None = None) -> t.Any:
        """The tutorial's seed revision, with or without its category."""
        categories = {SEED: category} if category else None
        steps = register_revisions(StepRegistry(), TUTORIAL, categories=categories)
        return next(s for s in steps if s.id == SEED)

    def test_dml_without_a_category_names_the_file_and_the_fix(self) -> None:
        """``op.bulk_insert`` without ``categories=`` is refused before it runs."""
        with pytest.raises(StepRefusedError) as info:
            revisions.check_revision_sql(
                self.step(), "INSERT INTO role (id, name) VALUES (%(id)s, %(name)s)"
            )
        message = str(info.value)
        assert f"{SEED}_seed_roles.py" in message
        assert f"categories={{'{SEED}': 'seed'}}" in message

    def test_dml_with_a_category_is_allowed(self) -> None:
        """A declared category lets small DML through; DDL always passes."""
        step = self.step("seed")
        assert revisions.check_revision_sql(step, "DELETE FROM role WHERE id = %s")
        assert revisions.check_revision_sql(self.step(), "ALTER TABLE t ADD c int")

    @pytest.mark.parametrize(
        ("sql", "reason"),
        [
            ("CREATE INDEX CONCURRENTLY ix ON t (c)", "migrate.index"),
            ("COMMIT", "transaction control"),
            ("SET statement_timeout = 0", "SET LOCAL"),
        ],
    )
    def test_what_breaks_the_transaction_is_refused(
        self, sql: str, reason: str
    ) -> None:
        """Concurrent builds, COMMIT and session settings never reach the server."""
        with pytest.raises(StepRefusedError, match=reason):
            revisions.check_revision_sql(self.step("seed"), sql)


@dataclass
class Row:
    """A ledger row as check_adopted sees it."""

    is_applied: bool = True


class TestAdoption:
    """Which revisions ``alembic_version`` covers, and the boot-time stop."""

    steps = register_revisions(StepRegistry(), TUTORIAL)

    def test_a_version_covers_itself_and_its_ancestors(self) -> None:
        """The third revision covers the first three, in run order."""
        ids = [s.id for s in self.steps]
        covered = revisions.revisions_upto(self.steps, [ids[2]])
        assert [s.id for s in covered] == ids[:3]
        assert revisions.revisions_upto(self.steps, []) == []

    def test_an_unknown_version_is_a_configuration_error(self) -> None:
        """A version that is not registered cannot be adopted blindly."""
        with pytest.raises(ConfigurationError, match="deadbeef0000"):
            revisions.revisions_upto(self.steps, ["deadbeef0000"])

    def test_nothing_pending_costs_no_query(self) -> None:
        """An up-to-date database is not asked about alembic_version."""
        queries: list[str] = []

        def query(sql: str) -> list[tuple[str]]:
            queries.append(sql)
            return []

        rows = {s.id: Row() for s in self.steps}
        revisions.check_adopted(self.steps, rows, query)
        assert queries == []

    def test_pending_revisions_alembic_applied_stop_the_run(self) -> None:
        """alembic_version covering pending revisions names the baseline command."""
        ids = [s.id for s in self.steps]
        with pytest.raises(ConfigurationError) as info:
            revisions.check_adopted(self.steps, {}, lambda sql: [(ids[2],)])
        assert "flask safe-migrate baseline --from-alembic" in str(info.value)
        rows = {i: Row() for i in ids[:3]}
        revisions.check_adopted(self.steps, rows, lambda sql: [(ids[2],)])

    def test_a_database_alembic_never_touched_runs(self) -> None:
        """No alembic_version table: nothing to adopt, the run goes on."""
        orig = type("E", (Exception,), {"pgcode": "42P01"})()

        def query(sql: str) -> list[tuple[str]]:
            raise sa.exc.ProgrammingError(sql, {}, orig)

        revisions.check_adopted(self.steps, {}, query)


def test_include_object_hides_the_ledger_only() -> None:
    """Autogenerate no longer proposes dropping the ledger; other tables stay."""
    assert not alembic_include_object(None, "safe_migrate_ledger", "table", True, None)
    assert alembic_include_object(None, "user", "table", True, None)
    assert alembic_include_object(None, "ix_user_token", "index", True, None)


def test_alembic_directory_setting_registers_the_revisions(app: Flask) -> None:
    """``SAFE_MIGRATE_ALEMBIC_DIRECTORY`` registers at init_app, once."""
    app.config["SAFE_MIGRATE_ALEMBIC_DIRECTORY"] = str(TUTORIAL)
    migrate = SafeMigrate(app)
    assert len(migrate.registry) == 9
    second = Flask("second")
    second.config.update(app.config)
    migrate.init_app(second)
    assert len(migrate.registry) == 9


def test_alembic_directory_setting_after_other_steps_is_refused(app: Flask) -> None:
    """Revisions must run first: registering them after other steps is an error."""
    app.config["SAFE_MIGRATE_ALEMBIC_DIRECTORY"] = str(TUTORIAL)
    migrate = SafeMigrate()
    migrate.sql("0001_new", "CREATE TABLE n (id int)")
    with pytest.raises(ConfigurationError, match="before registering those steps"):
        migrate.init_app(app)


def test_check_reports_an_autocommit_block_before_any_run(tmp_path: Path) -> None:
    """A concurrent index in autocommit_block() is an error finding of ``check``."""
    from flask_safe_migrate.core import commands
    from flask_safe_migrate.core.settings import MigrateSettings

    body = (
        "with op.get_context().autocommit_block():\n"
        '        op.create_index("ix", "t", ["id"], postgresql_concurrently=True)'
    )
    write_revision(tmp_path / "m" / "versions", "aaaa00000001", None, body)
    registry = StepRegistry()
    register_revisions(registry, tmp_path / "m")
    report = commands.check(MigrateSettings(), registry, squawk=False)
    rules = {f.rule for f in report.findings}
    assert {"concurrent-index-outside-index-phase", "transaction-control"} <= rules
    assert not report.ok
