"""Fixtures for the real PostgreSQL + pooler stack, and the fault proxy in front.

Which PostgreSQL major and which pooler: see :mod:`.matrix`.
"""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import subprocess
import typing as t
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from .drivers import url_driver_fixture  # noqa: F401 - ``url_driver``: once per driver
from .matrix import DEFAULT_MAJOR
from .matrix import Combination
from .matrix import is_matrix_test
from .matrix import make_pooler
from .matrix import missing_pooler
from .matrix import require
from .matrix import selected_combination
from .services import FaultProxy
from .services import PgBouncer
from .services import Postgres
from .services import TestDatabase
from .services import find_openssl
from .services import find_pg_bindir
from .services import reap
from .services.direct import Direct
from .services.pooler import Pooler

_HERE = Path(__file__).parent
_LOG_LINES = 40


class _LogSource(t.Protocol):
    def log_tail(self, lines: int = ...) -> str: ...


#: Services whose logs are printed after a failing test, by label.
_running_services: pytest.StashKey[dict[str, _LogSource]] = pytest.StashKey()


def _services(config: pytest.Config) -> dict[str, _LogSource]:
    return config.stash.setdefault(_running_services, {})


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Mark every test under tests/integration as ``integration``, and the subset
    of :data:`.matrix.MATRIX_TESTS` as ``matrix``."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
            if is_matrix_test(item.nodeid.split("tests/integration/", 1)[-1]):
                item.add_marker(pytest.mark.matrix)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> t.Generator[None, pytest.TestReport, pytest.TestReport]:
    """Append the server logs' tails to the report of a failing integration test."""
    report = yield
    if report.failed and item.get_closest_marker("integration") is not None:
        for label, service in _services(item.config).items():
            report.sections.append(
                (f"{label} log (last {_LOG_LINES} lines)", service.log_tail(_LOG_LINES))
            )
    return report


def _missing_server(major: int) -> list[str]:
    """What PostgreSQL ``major`` (and any server) needs that is not here."""
    missing = []
    if find_pg_bindir(major) is None:
        install = "" if major == DEFAULT_MAJOR else f" (scripts/install-pg.sh {major})"
        missing.append(f"PostgreSQL {major} server binaries{install}")
    if find_openssl() is None:
        missing.append("openssl")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' account to run the servers as (we are root)")
    return missing


@pytest.fixture(scope="session")
def combination() -> Combination:
    """Give the PostgreSQL major and the pooler this run uses (see :mod:`.matrix`)."""
    return selected_combination()


@pytest.fixture(scope="session")
def postgres(
    pytestconfig: pytest.Config, combination: Combination
) -> t.Iterator[Postgres]:
    """Give a private PostgreSQL cluster of the selected major, for the session."""
    require(_missing_server(combination.major))
    server = Postgres(bindir=find_pg_bindir(combination.major))
    try:
        server.start()
        _services(pytestconfig)["PostgreSQL"] = server
        yield server
    finally:
        _services(pytestconfig).pop("PostgreSQL", None)
        server.cleanup()


def _started(config: pytest.Config, service: Pooler | Direct) -> None:
    service.start()
    _services(config)[service.label] = service


def _stopped(config: pytest.Config, service: Pooler | Direct) -> None:
    _services(config).pop(service.label, None)
    service.cleanup()


@pytest.fixture(scope="session")
def pgbouncer(pytestconfig: pytest.Config, postgres: Postgres) -> t.Iterator[PgBouncer]:
    """Give a TLS-only, transaction-pooling PgBouncer in front of ``postgres``."""
    require(missing_pooler("pgbouncer-transaction"))
    bouncer = PgBouncer(postgres)
    try:
        _started(pytestconfig, bouncer)
        yield bouncer
    finally:
        _stopped(pytestconfig, bouncer)


@pytest.fixture(scope="session")
def pooler(
    request: pytest.FixtureRequest, combination: Combination, postgres: Postgres
) -> t.Iterator[Pooler | Direct]:
    """Give what the tests' clients connect through: the selected pooler in front of
    ``postgres`` (``pgbouncer`` itself by default), or ``postgres`` directly."""
    if combination.pooler == "pgbouncer-transaction":
        yield request.getfixturevalue("pgbouncer")
        return
    require(missing_pooler(combination.pooler))
    service = make_pooler(combination.pooler, postgres)
    try:
        _started(request.config, service)
        yield service
    finally:
        _stopped(request.config, service)


@pytest.fixture
def make_pgbouncer(
    pytestconfig: pytest.Config, postgres: Postgres
) -> t.Iterator[t.Callable[..., PgBouncer]]:
    """Give a factory of extra started PgBouncers (``PgBouncer`` kwargs)."""
    made: list[PgBouncer] = []

    def make(**kwargs: t.Any) -> PgBouncer:
        bouncer = PgBouncer(postgres, **kwargs)
        made.append(bouncer)
        bouncer.start()
        _services(pytestconfig)[f"extra PgBouncer #{len(made)}"] = bouncer
        return bouncer

    try:
        yield make
    finally:
        for number, bouncer in enumerate(made, start=1):
            _services(pytestconfig).pop(f"extra PgBouncer #{number}", None)
            bouncer.cleanup()


class _DatabaseSupply:
    """Create the per-test databases one ahead, in a background thread.

    ``CREATE DATABASE`` costs about 0.2 s of server CPU here; making the next one while
    the current test runs takes that off most tests' setup.
    """

    def __init__(self, postgres: Postgres) -> None:
        self._postgres = postgres
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="create-database"
        )
        self._next: concurrent.futures.Future[str] | None = None

    def _create(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._postgres.create_database(name)
        return name

    def take(self) -> str:
        """Return the name of a fresh, empty database; start making the next one."""
        ready = self._next or self._executor.submit(self._create)
        self._next = self._executor.submit(self._create)
        return ready.result(timeout=120)

    def close(self) -> None:
        """Drop the database made ahead, if any, and stop the thread."""
        spare, self._next = self._next, None
        self._executor.shutdown(wait=True)
        if spare is not None and spare.exception() is None:
            self._postgres.drop_database(spare.result())


@pytest.fixture(scope="session")
def _database_supply(postgres: Postgres) -> t.Iterator[_DatabaseSupply]:
    supply = _DatabaseSupply(postgres)
    try:
        yield supply
    finally:
        supply.close()


@pytest.fixture
def database(
    postgres: Postgres,
    pooler: Pooler | Direct,
    _database_supply: _DatabaseSupply,
    url_driver: str,
) -> t.Iterator[TestDatabase]:
    """Give a fresh database ``t_<hex>``, dropped WITH (FORCE) after the test;
    its ``bouncer_url`` goes through ``pooler``. Both URLs name the test's
    ``url_driver``: a test using them runs once per driver."""
    name = _database_supply.take()
    try:
        yield TestDatabase(
            name=name,
            direct_url=postgres.url(name, driver=url_driver),
            bouncer_url=pooler.url(name, driver=url_driver),
            postgres=postgres,
        )
    finally:
        postgres.drop_database(name)


def proxy_in_front(pooler: Pooler | Direct, driver: str) -> FaultProxy:
    """A FaultProxy (not started) that terminates TLS in front of ``pooler``, whose
    URLs name ``driver``."""
    return FaultProxy(
        "127.0.0.1",
        pooler.port,
        cert_file=pooler.cert_file,
        key_file=pooler.key_file,
        upstream_tls=pooler.tls,
        driver=driver,
    )


@pytest.fixture
def proxy(pooler: Pooler | Direct, url_driver: str) -> t.Iterator[FaultProxy]:
    """Give a started FaultProxy (TLS terminated) in front of ``pooler``; its
    ``url()`` names the test's ``url_driver``."""
    with proxy_in_front(pooler, url_driver) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def proxy_url(proxy: FaultProxy, database: TestDatabase) -> str:
    """Give the URL of ``database`` through ``proxy`` (TLS, via the pooler), on the
    test's ``url_driver``."""
    return proxy.url(database.name)


@pytest.fixture
def engines() -> t.Iterator[list[sa.Engine]]:
    """Engines made by a test, disposed after it."""
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def spawn() -> t.Iterator[t.Callable[..., subprocess.Popen[str]]]:
    """Give ``subprocess.Popen`` in text mode whose children are killed and reaped
    after the test, passed or failed (see :func:`.services.reap` for why)."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], **kwargs: t.Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(args, text=True, **kwargs)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            reap(process)


class Stack(t.NamedTuple):
    """A PostgreSQL, the run's pooler in front of it, the fault proxy in front."""

    postgres: Postgres
    proxy: FaultProxy


@pytest.fixture
def own_stack(
    request: pytest.FixtureRequest, combination: Combination, url_driver: str
) -> t.Iterator[Stack]:
    """Give a stack of the run's combination that only this test uses."""
    server = Postgres(bindir=find_pg_bindir(combination.major))
    # PgBouncer waits server_login_retry (15 s) after a failed server login.
    pooler = make_pooler(combination.pooler, server, server_login_retry=1)
    labels = (f"own {pooler.label}", "own PostgreSQL")
    try:
        server.start()
        pooler.start()
        _services(request.config).update(zip(labels, (pooler, server), strict=True))
        with proxy_in_front(pooler, url_driver) as proxy:
            yield Stack(server, proxy)
    finally:
        for label in labels:
            _services(request.config).pop(label, None)
        pooler.cleanup()
        server.cleanup()
