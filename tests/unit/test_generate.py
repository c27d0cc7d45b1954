"""generate without a database: the safe form of each Alembic operation, the module
text, where it is written, and the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.operations import ops
from flask import Flask

from flask_safe_migrate import SafeMigrate
from flask_safe_migrate.core import commands
from flask_safe_migrate.core.exceptions import ConfigurationError
from flask_safe_migrate.core.generate import GenerateReport
from flask_safe_migrate.core.generate.compare import DatabaseFacts
from flask_safe_migrate.core.generate.compare import is_excluded
from flask_safe_migrate.core.generate.compare import require_alembic
from flask_safe_migrate.core.generate.output import load_metadata
from flask_safe_migrate.core.generate.output import target_for
from flask_safe_migrate.core.generate.plan import plan_steps
from flask_safe_migrate.core.generate.render import render_module
from flask_safe_migrate.core.generate.steps import GeneratedStep
from flask_safe_migrate.core.generate.steps import StepKind
from flask_safe_migrate.core.generate.steps import constraint_name
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import StepRegistry
from flask_safe_migrate.state import registrar_path

ROOT = Path(__file__).resolve().parents[2]
METADATA = sa.MetaData()


def facts(**changes: t.Any) -> DatabaseFacts:
    """Facts of a database whose ``users`` table has rows and a key ``id``."""
    made = DatabaseFacts(
        tables_with_rows={(None, "users")},
        primary_keys={(None, "users"): ["id"]},
        volatile_functions={"random", "gen_random_uuid"},
    )
    for name, value in changes.items():
        setattr(made, name, value)
    return made


def kinds(steps: list[GeneratedStep]) -> list[tuple[str, bool]]:
    """(kind, active) of each step."""
    return [(s.kind.value, s.active) for s in steps]


def test_new_not_null_column_on_a_table_with_rows_is_split() -> None:
    """Nullable column, backfill with a TODO value, CHECK NOT VALID, VALIDATE,
    SET NOT NULL with the check dropped."""
    op = ops.AddColumnOp("users", sa.Column("status", sa.Text, nullable=False))
    steps = plan_steps([op], facts())
    assert kinds(steps) == [("sql", True), ("backfill", True)] + [("sql", True)] * 3
    assert steps[0].sql == "ALTER TABLE users ADD COLUMN status TEXT"
    assert steps[1].value == "USERS_STATUS_VALUE"
    assert steps[1].options == {
        "table": "users",
        "key": "id",
        "set": "status = {USERS_STATUS_VALUE}",
        "where": "status IS NULL",
    }
    assert steps[2].sql.endswith("CHECK (status IS NOT NULL) NOT VALID")
    assert steps[3].sql == "ALTER TABLE users VALIDATE CONSTRAINT users_status_not_null"
    assert "SET NOT NULL;\nALTER TABLE users DROP CONSTRAINT" in steps[4].sql


def test_new_not_null_column_on_an_empty_table_is_one_step() -> None:
    """Without rows there is nothing to fill: ADD COLUMN ... NOT NULL, with a note."""
    op = ops.AddColumnOp("users", sa.Column("status", sa.Text, nullable=False))
    (step,) = plan_steps([op], facts(tables_with_rows=set()))
    assert step.sql == "ALTER TABLE users ADD COLUMN status TEXT NOT NULL"
    assert "was empty" in step.comment


def test_constant_default_is_one_step_and_volatile_default_is_backfilled() -> None:
    """A constant default is stored once; a volatile one is set for new rows and
    backfilled into existing ones (no value to fill in)."""
    constant = ops.AddColumnOp(
        "users", sa.Column("score", sa.Integer, nullable=False, server_default="0")
    )
    volatile = ops.AddColumnOp(
        "users", sa.Column("r", sa.Float, server_default=sa.text("random()"))
    )
    steps = plan_steps([constant, volatile], facts())
    assert steps[0].sql == (
        "ALTER TABLE users ADD COLUMN score INTEGER DEFAULT '0' NOT NULL"
    )
    assert steps[1].sql.endswith("ALTER COLUMN r SET DEFAULT random()")
    assert steps[2].kind is StepKind.BACKFILL
    assert steps[2].value is None
    assert steps[2].options is not None
    assert steps[2].options["set"] == "r = random()"
    assert len(steps) == 3


def test_index_unique_constraint_and_foreign_key_avoid_long_locks() -> None:
    """Index: concurrent build. Unique: index, then USING INDEX. FK: NOT VALID,
    then VALIDATE in a later step."""
    index = ops.CreateIndexOp("ix_users_email", "users", ["email"])
    unique = ops.CreateUniqueConstraintOp(None, "users", ["email"])
    fk = ops.CreateForeignKeyOp(
        None, "orders", "users", ["user_id"], ["id"], ondelete="CASCADE"
    )
    steps = plan_steps([index, unique, fk], facts())
    assert kinds(steps) == [("index", True), ("index", True)] + [("sql", True)] * 3
    assert steps[1].options == {
        "table": "users",
        "columns": ["email"],
        "unique": True,
        "where": None,
        "name": "users_email_key",
    }
    assert steps[2].sql == (
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX "
        "users_email_key"
    )
    assert steps[3].sql == (
        "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) "
        "REFERENCES users (id) ON DELETE CASCADE NOT VALID"
    )
    assert steps[4].sql == "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey"


def test_destructive_changes_are_inactive_unless_allowed() -> None:
    """Drops and type changes are written commented out by default."""
    changes = [
        ops.DropTableOp("legacy"),
        ops.DropColumnOp("users", "age"),
        ops.DropIndexOp("ix_old"),
        ops.DropConstraintOp("users_email_key", "users"),
        ops.AlterColumnOp("users", "age", modify_type=sa.BigInteger()),
    ]
    commented = plan_steps(changes, facts())
    assert [s.active for s in commented] == [False] * 5
    assert all("--allow-destructive" in s.comment for s in commented)
    allowed = plan_steps(changes, facts(), allow_destructive=True)
    assert [s.active for s in allowed] == [True] * 5
    assert allowed[2].kind is StepKind.DROP_INDEX
    assert allowed[2].sql == "DROP INDEX CONCURRENTLY IF EXISTS ix_old"
    assert allowed[4].sql.startswith("-- safe-migrate: ignore changing-column-type")


def test_unhandled_operations_become_a_todo_naming_them() -> None:
    """An operation without a safe form is a commented TODO, never dropped."""
    gin = ops.CreateIndexOp("ix_doc", "docs", ["body"], postgresql_using="gin")
    check = ops.CreateCheckConstraintOp("positive", "users", "age > 0")
    steps = plan_steps([gin, check], facts())
    assert kinds(steps) == [("todo", False), ("todo", False)]
    assert "CreateIndexOp" in steps[0].comment
    assert "using" in steps[0].comment
    assert "CreateCheckConstraintOp" in steps[1].comment


def test_new_enum_type_is_created_once_before_its_first_use() -> None:
    """CREATE TYPE precedes the first table or column using a new enum type."""
    mood = sa.Enum("happy", "sad", name="mood")
    steps = plan_steps(
        [
            ops.AddColumnOp("users", sa.Column("mood", mood)),
            ops.AddColumnOp("orders", sa.Column("mood", mood)),
        ],
        facts(),
    )
    assert [s.sql for s in steps] == [
        "CREATE TYPE mood AS ENUM ('happy', 'sad')",
        "ALTER TABLE users ADD COLUMN mood mood",
        "ALTER TABLE orders ADD COLUMN mood mood",
    ]
    existing = plan_steps(
        [ops.AddColumnOp("users", sa.Column("mood", mood))],
        facts(enum_types={"mood"}),
    )
    assert len(existing) == 1


def test_defaults_comments_and_drop_not_null_are_catalog_only() -> None:
    """Default, comment and DROP NOT NULL of a column are one quick schema step."""
    op = ops.AlterColumnOp(
        "users",
        "note",
        modify_server_default=sa.DefaultClause("y"),
        modify_nullable=True,
        modify_comment="it's a note",
    )
    (step,) = plan_steps([op], facts())
    assert step.sql.split(";\n") == [
        "ALTER TABLE users ALTER COLUMN note SET DEFAULT 'y'",
        "ALTER TABLE users ALTER COLUMN note DROP NOT NULL",
        "COMMENT ON COLUMN users.note IS 'it''s a note'",
    ]


def sample_module(allow_destructive: bool = False) -> str:
    """A module with every kind of step."""
    mood = sa.Enum("happy", "sad", name="mood")
    changes = [
        ops.CreateTableOp(
            "items",
            [sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("m", mood)],
        ),
        ops.AddColumnOp("users", sa.Column("status", sa.Text, nullable=False)),
        ops.CreateIndexOp("ix_users_email", "users", ["email"]),
        ops.CreateUniqueConstraintOp(None, "users", ["email"]),
        ops.DropIndexOp("ix_old"),
        ops.DropColumnOp("users", "age"),
        ops.CreateCheckConstraintOp("positive", "users", "age > 0"),
    ]
    steps = plan_steps(changes, facts(), allow_destructive=allow_destructive)
    return render_module(
        title="Add items and a user status",
        prefix="0003_add_items",
        registrar="myapp.ext:migrate",
        steps=steps,
        where="0003_add_items.py",
    )


@pytest.mark.parametrize("allow_destructive", [False, True])
def test_module_is_python_that_ruff_leaves_alone(
    allow_destructive: bool, tmp_path: Path
) -> None:
    """The module compiles, and ruff format and ruff check (E501 too) accept it."""
    source = sample_module(allow_destructive)
    compile(source, "0003_add_items.py", "exec")
    path = tmp_path / "m0003_add_items.py"
    path.write_text(source)
    ruff = Path(sys.executable).parent / "ruff"
    config = ["--config", str(ROOT / "pyproject.toml")]
    fmt = subprocess.run(
        [ruff, "format", "--diff", *config, path], capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    lint = subprocess.run(
        [ruff, "check", "--ignore", "I001", *config, path],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout


def test_module_registers_plain_calls_with_numbered_ids() -> None:
    """Steps are migrate.sql/index/backfill calls with ids <prefix>_<nn>_<name>;
    a destructive one is commented out; the TODO guard comes first."""
    source = sample_module()
    assert "from myapp.ext import migrate\n" in source
    assert 'migrate.sql(\n    "0003_add_items_01_create_type_mood",' in source
    assert 'migrate.index(\n    "0003_add_items_08_ix_users_email",' in source
    assert '    set=f"status = {USERS_STATUS_VALUE}",' in source
    assert '# @migrate.index("0003_add_items_11_drop_ix_old")' in source
    assert '# migrate.sql(\n#     "0003_add_items_12_users_drop_age",' in source
    assert "#     ('add_constraint'" in source
    assert source.index("raise RegistrationError") < source.index("migrate.sql(")


def test_unset_todo_value_refuses_to_load() -> None:
    """Executing the module without the value raises RegistrationError naming it."""
    source = sample_module().replace("from myapp.ext import migrate", "")
    with pytest.raises(
        Exception, match=r"set USERS_STATUS_VALUE in 0003_add_items\.py"
    ):
        exec(compile(source, "m.py", "exec"), {"__name__": "m"})


def test_target_is_the_next_number_in_the_last_step_package(tmp_path: Path) -> None:
    """The file goes in the step package, numbered after its files and the step ids;
    a plain module gets a neighbour that must be listed; none at all is an error."""
    package = tmp_path / "pkg_target"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0004_old.py").write_text("")
    (tmp_path / "plain_steps.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        target = target_for(
            "Add lead phone!", step_modules=["pkg_target"], step_ids=["0002_x"]
        )
        assert target.path == str(package / "0005_add_lead_phone.py")
        assert target.prefix == "0005_add_lead_phone"
        assert target.unlisted_module is None
        plain = target_for("x", step_modules=["plain_steps"], step_ids=["0007_b"])
        assert plain.path == str(tmp_path / "0008_x.py")
        assert plain.unlisted_module == "0008_x"
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(ConfigurationError, match="SAFE_MIGRATE_STEP_MODULES"):
        target_for("x", step_modules=[], step_ids=[])
    named = target_for("x", step_modules=[], step_ids=[], output="out/0042_mine.py")
    assert named.prefix == "0042_x"


def test_load_metadata_accepts_metadata_or_an_object_holding_it() -> None:
    """``pkg.module:name`` may name a MetaData or anything with ``.metadata``."""
    assert load_metadata(f"{__name__}:METADATA") is METADATA
    assert load_metadata(f"{__name__}:ModelsHolder") is METADATA
    for bad in ("no_colon", f"{__name__}:missing", f"{__name__}:ROOT"):
        with pytest.raises(ConfigurationError, match="SAFE_MIGRATE_METADATA"):
            load_metadata(bad)


class ModelsHolder:
    """Like a declarative base: holds ``metadata``."""

    metadata = METADATA


def test_exclude_patterns_match_with_or_without_schema() -> None:
    """fnmatch patterns match the bare or the schema-qualified table name."""
    assert is_excluded("legacy_users", None, ["legacy_*"])
    assert is_excluded("log", "audit", ["audit.*"])
    assert not is_excluded("users", "public", ["legacy_*"])


def test_missing_alembic_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Alembic, generate fails with the pip command to install it."""
    monkeypatch.setitem(sys.modules, "alembic", None)
    with pytest.raises(ImportError, match=r"flask-safe-migrate\[alembic\]"):
        require_alembic()


def test_constraint_name_stays_within_63_bytes() -> None:
    """PostgreSQL's default names, shortened to fit an identifier."""
    assert constraint_name("users", ["email"], "key") == "users_email_key"
    long = constraint_name("t" * 40, ["c" * 40], "not_null")
    assert len(long) <= 63
    assert long.endswith("_not_null")


class TestCli:
    """flask safe-migrate generate with commands.generate monkeypatched."""

    @pytest.fixture
    def calls(
        self, app: Flask, monkeypatch: pytest.MonkeyPatch
    ) -> list[dict[str, t.Any]]:
        """Record commands.generate's keyword arguments; report one step."""
        made: list[dict[str, t.Any]] = []
        step = GeneratedStep(StepKind.SQL, "x", "new column", "", sql="SELECT 1")

        def fake(*args: t.Any, **kwargs: t.Any) -> GenerateReport:
            made.append(kwargs)
            if kwargs["message"] == "none":
                return GenerateReport(steps=[])
            return GenerateReport(
                steps=[step], step_ids=["0001_x_01_x"], source="# module", path="p.py"
            )

        monkeypatch.setattr(commands, "generate", fake)
        migrate.init_app(app)
        return made

    def test_check_exits_1_when_models_differ(
        self, app: Flask, calls: list[dict[str, t.Any]]
    ) -> None:
        """--check: exit 1 and the change kinds when they differ, 0 when not."""
        result = app.test_cli_runner().invoke(
            args=["safe-migrate", "generate", "add", "--check"]
        )
        assert result.exit_code == 1
        assert "differ: new column" in result.output
        assert calls[0]["check"] is True
        assert calls[0]["registrar"] == f"{__name__}:migrate"
        same = app.test_cli_runner().invoke(
            args=["safe-migrate", "generate", "none", "--check"]
        )
        assert same.exit_code == 0
        assert "No changes" in same.output

    def test_options_reach_the_command(
        self, app: Flask, calls: list[dict[str, t.Any]]
    ) -> None:
        """--output, --dry-run and --allow-destructive are passed through."""
        result = app.test_cli_runner().invoke(
            args=[
                "safe-migrate",
                "generate",
                "add",
                "--output",
                "x/0009_y.py",
                "--dry-run",
                "--allow-destructive",
            ]
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith("# module\nWould write p.py: 1 step(s).")
        assert calls[0]["output"] == "x/0009_y.py"
        assert calls[0]["dry_run"] is True
        assert calls[0]["allow_destructive"] is True

    def test_json_prints_the_report(
        self, app: Flask, calls: list[dict[str, t.Any]]
    ) -> None:
        """--json prints the report's to_dict()."""
        result = app.test_cli_runner().invoke(
            args=["safe-migrate", "generate", "add", "--json"]
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["changes"] is True
        assert data["steps"] == [
            {"id": "0001_x_01_x", "kind": "sql", "change": "new column", "active": True}
        ]


migrate = SafeMigrate()


def test_registrar_path_prefers_the_module_that_is_not_a_step_module(
    app: Flask,
) -> None:
    """The SafeMigrate object is found where it is a module-level name."""
    migrate.init_app(app)
    assert registrar_path(app) == f"{__name__}:migrate"


def test_generate_without_models_names_the_setting() -> None:
    """No db given to init_app and no SAFE_MIGRATE_METADATA: a ConfigurationError."""
    engine = sa.create_engine("postgresql+psycopg2://u:p@127.0.0.1:1/db")
    with pytest.raises(ConfigurationError, match="SAFE_MIGRATE_METADATA"):
        commands.generate(
            MigrateSettings(), StepRegistry(), engine, message="m", registrar="a:b"
        )
