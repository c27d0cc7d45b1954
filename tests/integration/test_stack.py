"""The test stack itself: PostgreSQL, PgBouncer, and every FaultProxy feature.

Pinned to psycopg2 (not run per driver): these test the servers and the proxy,
through psycopg2 as a plain client; the product's drivers are tested elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import os
import random
import signal
import ssl
import subprocess
import time
import typing as t
import warnings

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from .drivers import pinned_driver
from .services import PG_PASSWORD
from .services import FaultProxy
from .services import PgBouncer
from .services import Postgres
from .services import TestDatabase
from .services import connect_psycopg2
from .services import free_port
from .services import reap
from .services import wait_until
from .services.proxy import start_tls

url_driver = pinned_driver("psycopg2")


def _fetch(conn: psycopg2.extensions.connection, sql: str) -> list[tuple[t.Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall()) if cur.description is not None else []


def _autocommit(url: str) -> psycopg2.extensions.connection:
    conn = connect_psycopg2(url, connect_timeout=10)
    conn.autocommit = True
    return conn


def _make_ledger(database: TestDatabase) -> None:
    database.query("CREATE TABLE ledger (id int PRIMARY KEY)")


class TestPostgres:
    """The private PostgreSQL cluster."""

    def test_is_a_tuned_postgres_15(self, postgres: Postgres) -> None:
        """The cluster runs PostgreSQL 15 with the speed and auth settings applied."""
        assert postgres.execute("SHOW server_version_num")[0][0].startswith("15")
        settings = {
            name: postgres.execute(f"SHOW {name}")[0][0]
            for name in ("fsync", "synchronous_commit", "max_connections")
        }
        assert settings == {
            "fsync": "off",
            "synchronous_commit": "off",
            "max_connections": "300",
        }
        assert postgres.execute("SHOW password_encryption") == [("scram-sha-256",)]

    def test_rejects_a_wrong_password(self, postgres: Postgres) -> None:
        """SCRAM authentication is enforced on TCP connections."""
        url = sa.make_url(postgres.url("postgres")).set(password="wrong")
        with pytest.raises(psycopg2.OperationalError, match="password authentication"):
            connect_psycopg2(url)

    def test_log_tail_reads_the_server_log(self, postgres: Postgres) -> None:
        """log_tail returns the end of the server log file."""
        assert postgres.log_file.exists()
        assert isinstance(postgres.log_tail(5), str)
        assert PG_PASSWORD not in postgres.log_tail(1000)


class TestDatabaseFixture:
    """The per-test database."""

    def test_is_fresh_and_named(self, database: TestDatabase) -> None:
        """The database exists, is empty, and answers direct queries."""
        assert database.name.startswith("t_")
        assert database.scalar("SELECT current_database()") == database.name
        assert (
            database.scalar("SELECT count(*) FROM pg_tables WHERE schemaname='public'")
            == 0
        )
        assert database.query("SELECT %s::int + 1", (41,)) == [(42,)]

    def test_is_reachable_direct_and_through_pgbouncer(
        self, database: TestDatabase
    ) -> None:
        """Both URLs work with SQLAlchemy; only the PgBouncer one uses TLS."""
        for url in (database.direct_url, database.bouncer_url):
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                assert (
                    conn.scalar(sa.text("SELECT current_database()")) == database.name
                )
            engine.dispose()
        direct = connect_psycopg2(database.direct_url)
        bounced = connect_psycopg2(database.bouncer_url)
        try:
            assert not direct.info.ssl_in_use
            assert bounced.info.ssl_in_use
        finally:
            direct.close()
            bounced.close()

    def test_is_dropped_after_use(
        self, postgres: Postgres, pgbouncer: PgBouncer
    ) -> None:
        """drop_database removes a database even while a session is open in it."""
        postgres.create_database("t_dropme")
        holder = _autocommit(pgbouncer.url("t_dropme"))
        try:
            _fetch(holder, "SELECT 1")
            postgres.drop_database("t_dropme")
        finally:
            holder.close()
        assert (
            postgres.execute("SELECT 1 FROM pg_database WHERE datname = 't_dropme'")
            == []
        )


class TestPgBouncer:
    """The TLS-only, transaction-pooling PgBouncer."""

    def test_requires_tls(self, pgbouncer: PgBouncer, database: TestDatabase) -> None:
        """A client without TLS is turned away with ``SSL required``."""
        with pytest.raises(psycopg2.OperationalError, match="SSL required"):
            connect_psycopg2(pgbouncer.url(database.name, sslmode="disable"))

    def test_admin_console(self, pgbouncer: PgBouncer, database: TestDatabase) -> None:
        """The admin console answers SHOW commands and lists the per-database pool."""
        config = {row[0]: row[1] for row in pgbouncer.admin("SHOW CONFIG")}
        assert config["pool_mode"] == "transaction"
        assert config["client_tls_sslmode"] == "require"
        conn = _autocommit(database.bouncer_url)
        try:
            _fetch(conn, "SELECT 1")
        finally:
            conn.close()
        pools = {row[0] for row in pgbouncer.admin("SHOW POOLS")}
        assert database.name in pools

    def test_restart_keeps_the_port(
        self, make_pgbouncer: t.Callable[..., PgBouncer], database: TestDatabase
    ) -> None:
        """A restart (SIGTERM or SIGINT) comes back on the same port."""
        bouncer = make_pgbouncer()
        port = bouncer.port
        for sig in (signal.SIGTERM, signal.SIGINT):
            bouncer.restart(sig)
            assert bouncer.port == port
            assert bouncer.running
            conn = _autocommit(bouncer.url(database.name))
            try:
                assert _fetch(conn, "SELECT 1") == [(1,)]
            finally:
                conn.close()
        bouncer.stop()
        assert not bouncer.running

    def test_extra_settings(
        self, make_pgbouncer: t.Callable[..., PgBouncer], database: TestDatabase
    ) -> None:
        """make_pgbouncer applies extra settings and database entries."""
        bouncer = make_pgbouncer(
            settings={"default_pool_size": 3},
            databases={
                "alias": f"host=127.0.0.1 port={database.postgres.port} "
                f"dbname={database.name}"
            },
        )
        config = {row[0]: row[1] for row in bouncer.admin("SHOW CONFIG")}
        assert config["default_pool_size"] == "3"
        conn = _autocommit(bouncer.url("alias"))
        try:
            assert _fetch(conn, "SELECT current_database()") == [(database.name,)]
        finally:
            conn.close()


class TestFaultProxy:
    """Every FaultProxy feature, through the real PgBouncer."""

    def test_relays_tls_and_counts_round_trips(
        self, proxy: FaultProxy, proxy_url: str
    ) -> None:
        """Queries pass; each simple Query is one round trip of its connection."""
        first = _autocommit(proxy_url)
        second = _autocommit(proxy_url)
        try:
            assert first.info.ssl_in_use
            assert proxy.active_connections == 2
            proxy.reset_counters()
            for _ in range(3):
                assert _fetch(first, "SELECT 1") == [(1,)]
            _fetch(second, "SELECT 2")
            assert proxy.round_trips == 4
            assert proxy.round_trips_by_connection == [3, 1]
            assert proxy.connections_opened == 0
        finally:
            first.close()
            second.close()
        wait_until(lambda: proxy.active_connections == 0, 5)
        third = _autocommit(proxy_url)
        third.close()
        assert proxy.connections_opened == 1

    @pytest.mark.parametrize("mode", ["fin", "rst"])
    def test_kill_all(self, proxy: FaultProxy, proxy_url: str, mode: str) -> None:
        """kill_all drops every open connection at once and counts the kills."""
        conns = [_autocommit(proxy_url) for _ in range(3)]
        try:
            for conn in conns:
                _fetch(conn, "SELECT 1")
            assert proxy.kill_all(mode) == 3  # type: ignore[arg-type]
            assert proxy.kills == 3
            for conn in conns:
                with pytest.raises(psycopg2.OperationalError):
                    _fetch(conn, "SELECT 1")
                assert conn.closed == 2
        finally:
            for conn in conns:
                conn.close()
        wait_until(lambda: proxy.active_connections == 0, 5)
        fresh = _autocommit(proxy_url)
        try:
            assert _fetch(fresh, "SELECT 1") == [(1,)]
        finally:
            fresh.close()

    def test_chaos_kills_every_connection_until_turned_off(
        self, proxy: FaultProxy, proxy_url: str
    ) -> None:
        """Under chaos each connection dies within its window; chaos_off stops that."""
        proxy.chaos(0.2, 0.4)
        conn = _autocommit(proxy_url)
        try:
            wait_until(lambda: proxy.active_connections == 0, 5)
            with pytest.raises(psycopg2.OperationalError):
                _fetch(conn, "SELECT 1")
        finally:
            conn.close()
        assert proxy.kills == 1
        survivor = _autocommit(proxy_url)
        try:
            proxy.chaos_off()
            time.sleep(0.5)
            assert _fetch(survivor, "SELECT 1") == [(1,)]
        finally:
            survivor.close()
        assert proxy.kills == 1

    def test_drop_commit_reply_commits_but_kills(
        self, proxy: FaultProxy, proxy_url: str, database: TestDatabase
    ) -> None:
        """The COMMIT lands although the client sees a dropped connection."""
        _make_ledger(database)
        conn = connect_psycopg2(proxy_url)
        try:
            _fetch(conn, "INSERT INTO ledger VALUES (1)")
            proxy.drop_commit_reply()
            with pytest.raises(psycopg2.OperationalError, match="EOF detected"):
                conn.commit()
        finally:
            conn.close()
        assert proxy.dropped_commits == 1
        assert database.query("SELECT id FROM ledger") == [(1,)]

    def test_drop_commit_reply_filter(
        self, proxy: FaultProxy, proxy_url: str, database: TestDatabase
    ) -> None:
        """The filter sees the whole transaction's text and picks the COMMIT to hit."""
        _make_ledger(database)
        seen: list[str] = []

        def only_second(txn_text: str) -> bool:
            seen.append(txn_text)
            return "VALUES (2)" in txn_text

        proxy.drop_commit_reply(only_second)
        conn = connect_psycopg2(proxy_url)
        try:
            _fetch(conn, "INSERT INTO ledger VALUES (1)")
            conn.commit()
            _fetch(conn, "INSERT INTO ledger VALUES (2)")
            with pytest.raises(psycopg2.OperationalError):
                conn.commit()
        finally:
            conn.close()
        assert seen == [
            "BEGIN\nINSERT INTO ledger VALUES (1)\nCOMMIT",
            "BEGIN\nINSERT INTO ledger VALUES (2)\nCOMMIT",
        ]
        assert proxy.dropped_commits == 1
        assert database.query("SELECT id FROM ledger ORDER BY id") == [(1,), (2,)]
        proxy.drop_commit_reply_off()
        conn = _autocommit(proxy_url)
        try:
            _fetch(conn, "BEGIN; INSERT INTO ledger VALUES (3); COMMIT")
        finally:
            conn.close()
        assert len(seen) == 2

    def test_drop_each_commit_once(
        self, proxy: FaultProxy, proxy_url: str, database: TestDatabase
    ) -> None:
        """The first COMMIT per key loses its reply; a retry with that key passes."""
        _make_ledger(database)
        proxy.drop_each_commit_once(lambda text: "ledger" if "ledger" in text else None)
        statement = (
            "BEGIN; INSERT INTO ledger SELECT coalesce(max(id), 0) + 1 FROM ledger;"
            " COMMIT"
        )
        outcomes = []
        for _ in range(3):
            conn = _autocommit(proxy_url)
            try:
                _fetch(conn, statement)
                outcomes.append("ok")
            except psycopg2.OperationalError:
                outcomes.append("lost")
            finally:
                conn.close()
        assert outcomes == ["lost", "ok", "ok"]
        assert proxy.dropped_commits == 1
        assert database.scalar("SELECT count(*) FROM ledger") == 3

    def test_kill_before_commit_never_commits(
        self, proxy: FaultProxy, proxy_url: str, database: TestDatabase
    ) -> None:
        """A COMMIT killed before forwarding leaves nothing committed."""
        _make_ledger(database)
        proxy.kill_before_commit(lambda text: "ledger" in text)
        conn = connect_psycopg2(proxy_url)
        try:
            _fetch(conn, "INSERT INTO ledger VALUES (1)")
            with pytest.raises(psycopg2.OperationalError):
                conn.commit()
        finally:
            conn.close()
        assert proxy.kills == 1
        assert proxy.dropped_commits == 0
        open_transactions = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
        )
        wait_until(lambda: database.scalar(open_transactions) == 0, 5)
        assert database.query("SELECT id FROM ledger") == []

    @pytest.mark.parametrize(
        ("mode", "message"),
        [("close", "Connection refused"), ("rst", "server closed the connection")],
    )
    def test_refuse_connects(
        self, proxy: FaultProxy, proxy_url: str, mode: str, message: str
    ) -> None:
        """New connections fail during the window and succeed again afterwards."""
        established = _autocommit(proxy_url)
        try:
            proxy.refuse_connects(0.5, mode)  # type: ignore[arg-type]
            with pytest.raises(psycopg2.OperationalError, match=message):
                connect_psycopg2(proxy_url)
            assert _fetch(established, "SELECT 1") == [(1,)]
        finally:
            established.close()

        def connects() -> bool:
            try:
                connect_psycopg2(proxy_url).close()
            except psycopg2.OperationalError:
                return False
            return True

        wait_until(connects, 5)
        if mode == "rst":
            assert proxy.refused_connections >= 1

    def test_kill_during_auth(self, proxy: FaultProxy, proxy_url: str) -> None:
        """Connections die mid-SCRAM while kill_during_auth is on."""
        proxy.kill_during_auth()
        with pytest.raises(
            psycopg2.OperationalError, match="failed: SSL SYSCALL error"
        ):
            connect_psycopg2(proxy_url)
        assert proxy.kills == 1
        proxy.kill_during_auth(False)
        connect_psycopg2(proxy_url).close()

    def test_latency_delays_each_direction_and_keeps_order(
        self, proxy: FaultProxy, proxy_url: str
    ) -> None:
        """Latency delays each direction and keeps large replies intact."""
        conn = _autocommit(proxy_url)
        try:
            proxy.latency_seconds = 0.05
            started = time.monotonic()
            for _ in range(3):
                _fetch(conn, "SELECT 1")
            assert time.monotonic() - started >= 3 * 2 * 0.05
            proxy.latency_seconds = 0.002
            rows = _fetch(
                conn,
                "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 60000) i",
            )
            expected = "".join(
                hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 60001)
            )
            assert rows == [(expected,)]
        finally:
            conn.close()

    def test_tls_passthrough(
        self, pgbouncer: PgBouncer, database: TestDatabase
    ) -> None:
        """Without terminate_tls the proxy relays TLS untouched and can still kill."""
        with FaultProxy(
            "127.0.0.1", pgbouncer.port, terminate_tls=False
        ) as passthrough:
            conn = _autocommit(passthrough.url(database.name))
            try:
                assert conn.info.ssl_in_use
                assert _fetch(conn, "SELECT 1") == [(1,)]
                assert passthrough.round_trips == 0  # encrypted: nothing to count
                assert passthrough.kill_all() == 1
                with pytest.raises(psycopg2.OperationalError, match="EOF detected"):
                    _fetch(conn, "SELECT 1")
            finally:
                conn.close()

    def test_stops_after_max_lifetime(
        self, pgbouncer: PgBouncer, database: TestDatabase
    ) -> None:
        """A proxy past its max lifetime stops listening by itself."""
        short = FaultProxy(
            "127.0.0.1",
            pgbouncer.port,
            cert_file=pgbouncer.cert_file,
            key_file=pgbouncer.key_file,
            max_lifetime_seconds=0.3,
        )
        short.start()
        try:
            conn = _autocommit(short.url(database.name))
            wait_until(lambda: not short.running, 5)
            with pytest.raises(psycopg2.OperationalError):
                _fetch(conn, "SELECT 1")
            conn.close()
            with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
                connect_psycopg2(short.url(database.name))
        finally:
            short.stop()
        short.stop()  # idempotent

    def test_chaos_sanity(
        self, proxy: FaultProxy, proxy_url: str, pgbouncer: PgBouncer
    ) -> None:
        """200 fresh connections under chaos and latency: some die, the stack lives."""
        engine = sa.create_engine(proxy_url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:  # run the dialect's first-connect queries calmly
            conn.exec_driver_sql("SELECT 1")
        proxy.latency_seconds = 0.002
        proxy.chaos(0.05, 0.3)
        think = random.Random(7)
        pauses = [think.uniform(0, 0.1) for _ in range(200)]

        def use_once(pause: float) -> bool:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                    time.sleep(pause)  # an app holding its connection a while
                    conn.exec_driver_sql("SELECT 1")
            except sa.exc.OperationalError:
                return False
            return True

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(use_once, pauses))
        proxy.chaos_off()
        proxy.latency_seconds = 0
        assert len(outcomes) == 200
        assert proxy.kills > 0
        assert outcomes.count(False) > 0
        assert outcomes.count(True) > 0
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        engine.dispose()
        assert pgbouncer.admin("SHOW POOLS")


def test_free_port_is_bindable() -> None:
    """free_port returns a port nobody listens on."""
    port = free_port()
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        psycopg2.connect(host="127.0.0.1", port=port, connect_timeout=2)


def test_wait_until_times_out() -> None:
    """wait_until raises TimeoutError when the condition never holds."""
    with pytest.raises(TimeoutError):
        wait_until(lambda: False, 0.1, 0.01)


def _warnings_collecting(
    make: t.Callable[[], subprocess.Popen[bytes]],
) -> tuple[int, list[str]]:
    """Make a child, drop it inside a reference cycle (as a failed test's traceback
    frames hold it) and collect: return its pid and the warnings that gave."""
    holder: list[t.Any] = [make()]
    pid: int = holder[0].pid
    holder.append(holder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del holder
        gc.collect()
    return pid, [str(w.message) for w in caught]


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE)


def test_a_child_left_running_warns_when_a_later_gc_collects_it() -> None:
    """Why a failed test must reap its children: the warning lands on a later test."""
    pid, messages = _warnings_collecting(_sleeper)
    os.kill(pid, signal.SIGKILL)
    assert any("still running" in m for m in messages), messages


def test_reap_kills_waits_and_closes_pipes() -> None:
    """A reaped child leaves nothing for the garbage collector to warn about."""

    def reaped() -> subprocess.Popen[bytes]:
        child = _sleeper()
        reap(child)
        assert child.returncode == -signal.SIGKILL
        assert child.stdout is not None
        assert child.stdout.closed
        return child

    _, messages = _warnings_collecting(reaped)
    assert messages == []


def test_start_tls_keeps_the_transport_of_a_connection_lost_mid_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handshake whose connection is lost raises, and the writer stays collectable.

    CPython 3.11 returns no transport from ``loop.start_tls`` then; its
    ``StreamWriter`` kept ``None`` and raised from ``__del__`` in a later test.
    """

    async def scenario() -> asyncio.StreamWriter:
        accepted: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.append(w)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()

        async def lost_during_handshake(*args: object, **kwargs: object) -> None:
            return None

        monkeypatch.setattr(loop, "start_tls", lost_during_handshake)
        with pytest.raises(AttributeError):
            await start_tls(writer, ssl.create_default_context())
        assert writer.transport is not None
        writer.close()
        for w in accepted:
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
        return writer

    writer = asyncio.run(scenario())
    assert writer.transport.is_closing()
    del writer
    gc.collect()  # an AttributeError from __del__ would fail this test
