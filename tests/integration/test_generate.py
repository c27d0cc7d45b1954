"""``generate`` on a real database: each change kind, applied through TLS PgBouncer.

For every change kind: the models change, ``generate`` writes a module, the
module passes ``check``, one ``run`` applies it through PgBouncer, ``generate``
then reports no changes, and the schema equals what ``metadata.create_all()``
makes on an empty database (compared in the catalogs, not as strings).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import typing as t
import uuid
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_safe_migrate.core import commands
from flask_safe_migrate.core.engine import build_migration_engine
from flask_safe_migrate.core.exceptions import RegistrationError
from flask_safe_migrate.core.generate import GenerateReport
from flask_safe_migrate.core.settings import MigrateSettings
from flask_safe_migrate.core.steps import Phase
from flask_safe_migrate.core.steps import StepRegistry

from .catalog import schema_of
from .services import TestDatabase

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

ROWS = (
    "INSERT INTO users (name, email, age) VALUES ('ada', 'ada@x', 36), "
    "('alan', 'alan@x', 41)",
    "INSERT INTO orders (user_id, total) VALUES (1, 10), (2, 20)",
    "INSERT INTO legacy DEFAULT VALUES",
)


def models(change: str | None = None) -> sa.MetaData:
    """The models before any change (``None``) or after ``change``."""
    md = sa.MetaData()
    users_extra: list[t.Any] = []
    name_nullable, note_default, age_type = True, "x", sa.Integer()
    age_comment: str | None = None
    total_nullable, email_unique, user_fk = False, False, False
    if change == "new_column":
        users_extra += [
            sa.Column("nickname", sa.Text),
            sa.Column("score", sa.Integer, nullable=False, server_default="0"),
            sa.Column("bio", sa.Text, comment="about them"),
        ]
    if change == "not_null_column":
        users_extra.append(sa.Column("status", sa.Text, nullable=False))
    if change == "volatile_default":
        users_extra.append(
            sa.Column(
                "token",
                sa.Uuid,
                nullable=False,
                server_default=sa.text("gen_random_uuid()"),
            )
        )
    if change == "enum_column":
        users_extra.append(sa.Column("mood", sa.Enum("happy", "sad", name="mood")))
    if change == "not_null":
        name_nullable = False
    if change == "unique_constraint":
        email_unique = True
    if change == "foreign_key":
        user_fk = True
    if change == "defaults_comments":
        note_default, age_comment, total_nullable = "y", "years", True
    if change == "destructive":
        age_type = sa.BigInteger()
    users = sa.Table(
        "users",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=name_nullable),
        sa.Column("email", sa.Text, unique=email_unique),
        sa.Column("note", sa.String(20), server_default=note_default),
        sa.Column("age", age_type, comment=age_comment),
        *users_extra,
        comment="people" if change == "defaults_comments" else None,
    )
    fk = [sa.ForeignKey("users.id", ondelete="CASCADE")] if user_fk else []
    orders = sa.Table(
        "orders",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.BigInteger, *fk),
    )
    if change != "destructive":
        orders.append_column(sa.Column("total", sa.Integer, nullable=total_nullable))
        orders.append_constraint(sa.UniqueConstraint("id", "user_id", name="orders_uq"))
        sa.Table("legacy", md, sa.Column("id", sa.BigInteger, primary_key=True))
        sa.Index("users_email_idx", users.c.email)
    if change == "new_index":
        sa.Index("orders_user_id_idx", orders.c.user_id)
        sa.Index(
            "users_name_key",
            users.c.name,
            unique=True,
            postgresql_where=users.c.name.isnot(None),
        )
        sa.Index("users_email_lower_idx", sa.func.lower(users.c.email))
    if change == "new_table":
        sa.Table(
            "items",
            md,
            sa.Column("id", sa.BigInteger, primary_key=True),
            sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.id")),
            sa.Column("kind", sa.Enum("small", "large", name="item_kind")),
            sa.Column("sku", sa.Text, index=True, comment="stock unit"),
            comment="things",
        )
    return md


@dataclass
class Case:
    """One change kind: the models after it, and what a person fills in."""

    change: str
    values: dict[str, str] = field(default_factory=dict)
    allow_destructive: bool = False


CASES = [
    pytest.param(Case("new_table"), id="new_table"),
    pytest.param(Case("new_column"), id="new_column"),
    pytest.param(Case("new_index"), id="new_index"),
    pytest.param(Case("unique_constraint"), id="unique_constraint"),
    pytest.param(Case("foreign_key"), id="foreign_key"),
    pytest.param(Case("not_null"), id="not_null"),
    pytest.param(
        Case("not_null_column", values={"USERS_STATUS_VALUE": "'active'"}),
        id="not_null_column",
    ),
    pytest.param(Case("volatile_default"), id="volatile_default"),
    pytest.param(Case("enum_column"), id="enum_column"),
    pytest.param(Case("defaults_comments"), id="defaults_comments"),
    pytest.param(Case("destructive", allow_destructive=True), id="destructive"),
]


class Project:
    """A package holding a registry (``ext.migrate``) and the generated modules."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.name = f"genpkg_{uuid.uuid4().hex[:10]}"
        self.path = root / self.name
        self.path.mkdir()
        (self.path / "__init__.py").write_text("")
        (self.path / "ext.py").write_text(
            "from flask_safe_migrate.core.steps import StepRegistry\n"
            "migrate = StepRegistry()\n"
        )
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        self.registry: StepRegistry = importlib.import_module(
            f"{self.name}.ext"
        ).migrate

    @property
    def registrar(self) -> str:
        """Where the generated modules import ``migrate`` from."""
        return f"{self.name}.ext:migrate"

    def load(self, path: str, values: t.Mapping[str, str] | None = None) -> None:
        """Fill the TODO values of a generated module (as a person would), import it."""
        source = Path(path).read_text()
        for name, value in (values or {}).items():
            source = source.replace(f"{name}: str | None = None", f"{name} = {value!r}")
        Path(path).write_text(source)
        importlib.invalidate_caches()
        importlib.import_module(f"{self.name}.{Path(path).stem}")


def settings_for(url: str) -> MigrateSettings:
    """Settings with quick retries."""
    return MigrateSettings(
        database_uri=url, retry_backoff_seconds=0.02, retry_max_attempts=20
    )


def create_schema(url: str, metadata: sa.MetaData, rows: t.Sequence[str] = ()) -> None:
    """``metadata.create_all()`` and ``rows`` on a direct connection."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            for sql in rows:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def generate(
    engine: sa.Engine,
    project: Project,
    metadata: sa.MetaData,
    output: Path | None = None,
    **options: t.Any,
) -> GenerateReport:
    """``commands.generate`` into the project's package."""
    return commands.generate(
        settings_for(str(engine.url.render_as_string(hide_password=False))),
        project.registry,
        engine,
        metadata=metadata,
        message="models changed",
        registrar=project.registrar,
        output=str(output) if output else None,
        **options,
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A fresh package for generated modules, importable."""
    return Project(tmp_path, monkeypatch)


@pytest.fixture
def engine(database: TestDatabase, engines: list[sa.Engine]) -> sa.Engine:
    """The migration engine, through TLS PgBouncer."""
    made = build_migration_engine(settings_for(database.bouncer_url))
    engines.append(made)
    return made


@pytest.fixture
def reference(database: TestDatabase) -> t.Iterator[TestDatabase]:
    """A second, empty database, for ``create_all`` of the models after the change."""
    name = f"{database.name}_ref"
    database.postgres.create_database(name)
    try:
        yield TestDatabase(
            name=name,
            direct_url=database.direct_url.replace(database.name, name),
            bouncer_url=database.bouncer_url.replace(database.name, name),
            postgres=database.postgres,
        )
    finally:
        database.postgres.drop_database(name)


@pytest.mark.parametrize("case", CASES)
def test_generated_module_takes_the_database_to_the_models(
    case: Case,
    database: TestDatabase,
    reference: TestDatabase,
    engine: sa.Engine,
    project: Project,
) -> None:
    """generate, check, one run through PgBouncer: the schema is create_all's, and
    generate then reports no changes."""
    create_schema(database.direct_url, models(), ROWS)
    after = models(case.change)
    report = generate(
        engine,
        project,
        after,
        project.path / "0001_change.py",
        allow_destructive=case.allow_destructive,
    )
    assert report.has_changes
    assert report.written
    assert report.findings == []
    assert report.todo_values == list(case.values)
    project.load(t.cast(str, report.path), case.values)

    settings = settings_for(database.bouncer_url)
    lint = commands.check(settings, project.registry)
    assert lint.errors == [], [f.message for f in lint.errors]
    commands.run(settings, project.registry, engine, phases=list(Phase))

    again = generate(engine, project, after, dry_run=True)
    assert not again.has_changes, again.step_ids and [s.change for s in again.steps]
    assert sorted(p.name for p in project.path.glob("0*.py")) == ["0001_change.py"]
    create_schema(reference.direct_url, after)
    assert schema_of(database) == schema_of(reference)
    # The rows are still there, and a backfill filled them.
    assert database.scalar("SELECT count(*) FROM users") == 2


class FlaskProject(Project):
    """A Flask project: ``ext.migrate`` is a SafeMigrate, steps in ``steps/``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(root, monkeypatch)
        (self.path / "ext.py").write_text(
            "from flask_safe_migrate import SafeMigrate\nmigrate = SafeMigrate()\n"
        )
        (self.path / "steps").mkdir()
        (self.path / "steps" / "__init__.py").write_text("")
        importlib.reload(importlib.import_module(f"{self.name}.ext"))

    def app(self, database: TestDatabase, metadata: sa.MetaData) -> Flask:
        """A fresh app on ``database`` (through PgBouncer) with ``metadata`` as db."""
        app = Flask(self.name, instance_path=str(self.path / "instance"))
        app.config.update(
            SQLALCHEMY_DATABASE_URI=database.direct_url,
            SAFE_MIGRATE_DATABASE_URI=database.bouncer_url,
            SAFE_MIGRATE_STEP_MODULES=[f"{self.name}.steps"],
            SAFE_MIGRATE_ON_BOOT="off",
            SAFE_MIGRATE_RETRY_BACKOFF_SECONDS=0.02,
        )
        db = SQLAlchemy(metadata=metadata)
        db.init_app(app)
        importlib.import_module(f"{self.name}.ext").migrate.init_app(app, db)
        return app


def cli(app: Flask, *args: str) -> Result:
    """Run ``flask safe-migrate ARGS`` on ``app``."""
    return app.test_cli_runner().invoke(args=["safe-migrate", *args])


def test_cli_generate_check_dry_run_write_run_then_no_changes(
    database: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--check exits 1, --dry-run writes nothing, generate writes the next file in
    the steps package, one run applies it, then generate says no changes (exit 0)."""
    project = FlaskProject(tmp_path, monkeypatch)
    create_schema(database.direct_url, models(), ROWS)
    after = models("new_table")
    app = project.app(database, after)
    steps_dir = project.path / "steps"

    checked = cli(app, "generate", "add items", "--check")
    assert checked.exit_code == 1, checked.output
    assert "differ: new enum type, new index, new table" in checked.output
    dry = cli(app, "generate", "add items", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "CREATE TABLE items" in dry.output
    assert list(steps_dir.glob("*.py")) == [steps_dir / "__init__.py"]

    wrote = cli(app, "generate", "add items")
    assert wrote.exit_code == 0, wrote.output
    assert (steps_dir / "0001_add_items.py").is_file()
    app = project.app(database, after)  # a new deploy imports the new module
    assert cli(app, "check").exit_code == 0
    ran = cli(app, "run")
    assert ran.exit_code == 0, ran.output
    assert database.scalar("SELECT count(*) FROM safe_migrate_ledger") == 3

    again = cli(app, "generate", "nothing")
    assert again.exit_code == 0, again.output
    assert "No changes" in again.output
    assert sorted(p.name for p in steps_dir.glob("0*.py")) == ["0001_add_items.py"]
    assert cli(app, "generate", "nothing", "--check").exit_code == 0


def test_module_with_an_unset_todo_refuses_to_load(
    database: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new NOT NULL column on a table with rows needs a value: until it is set,
    the app does not start and safe-migrate commands exit 2 naming it."""
    project = FlaskProject(tmp_path, monkeypatch)
    create_schema(database.direct_url, models(), ROWS)
    after = models("not_null_column")
    wrote = cli(project.app(database, after), "generate", "user status")
    assert wrote.exit_code == 0, wrote.output
    assert "Set USERS_STATUS_VALUE in the module" in wrote.output

    with pytest.raises(RegistrationError, match="set USERS_STATUS_VALUE in 0001_"):
        project.app(database, after)
    assert database.scalar("SELECT to_regclass('safe_migrate_ledger')") is None


def test_excluded_tables_and_the_ledger_are_ignored(
    database: TestDatabase, engine: sa.Engine, project: Project
) -> None:
    """A table matching SAFE_MIGRATE_GENERATE_EXCLUDE and the ledger table are never
    reported; without the pattern, the table shows up as a (commented) drop."""
    create_schema(database.direct_url, models(), ROWS)
    database.query(
        "CREATE TABLE legacy_audit (id int); CREATE TABLE safe_migrate_ledger (x int)"
    )
    settings = settings_for(database.bouncer_url)
    common: dict[str, t.Any] = {
        "message": "m",
        "registrar": project.registrar,
        "metadata": models(),
    }
    excluded = commands.generate(
        settings.replace(generate_exclude=("legacy_*",)),
        project.registry,
        engine,
        check=True,
        **common,
    )
    assert not excluded.has_changes
    seen = commands.generate(settings, project.registry, engine, check=True, **common)
    assert [(s.change, s.active) for s in seen.steps] == [("drop table", False)]


def test_example_app_database_matches_its_models(database: TestDatabase) -> None:
    """The example app, as a user runs it: after `flask safe-migrate`, including the
    committed generated module, `generate --check` finds no change (exit 0)."""

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFE_MIGRATE")}
        env["DATABASE_URL"] = database.bouncer_url
        return subprocess.run(
            [
                BIN / "flask",
                "--app",
                "example_app.app:create_app",
                "safe-migrate",
                *args,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ran = flask()
    assert ran.returncode == 0, ran.stderr
    assert "0008_index_messages_by_lead_01_ix_messages_lead_id" in ran.stdout
    checked = flask("generate", "nothing", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No changes" in checked.stdout
