"""A fault-injecting TCP proxy that speaks enough PostgreSQL to kill around COMMITs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import random
import re
import socket
import ssl
import struct
import threading
import typing as t
from pathlib import Path

from .common import LOCALHOST
from .common import PG_PASSWORD
from .common import ServiceError
from .common import make_url
from .wire import CANCEL_REQUEST_CODE
from .wire import GSSENC_REQUEST_CODE
from .wire import SSL_REQUEST
from .wire import SSL_REQUEST_CODE
from .wire import FrameParser
from .wire import packet_code
from .wire import read_initial_packet

_COMMIT_RE = re.compile(r"\b(COMMIT|END)\b", re.IGNORECASE)

KillMode = t.Literal["fin", "rst"]
_FORWARD, _DROP_REPLY, _KILL = "forward", "drop_reply", "kill"


@dataclasses.dataclass(eq=False)
class _CommitRule:
    action: str
    predicate: t.Callable[[str], bool] | None
    any_query: bool = False  # not only COMMITs: implicit transactions too

    def matches(self, txn_text: str) -> bool:
        return True if self.predicate is None else bool(self.predicate(txn_text))


@dataclasses.dataclass(eq=False)
class _Connection:
    id: int
    opened: float
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    client_socket: t.Any
    upstream_reader: asyncio.StreamReader | None = None
    upstream_writer: asyncio.StreamWriter | None = None
    upstream_socket: t.Any = None
    txn: list[str] = dataclasses.field(default_factory=list)
    swallow_reply: bool = False
    killed: bool = False
    chaos_handle: asyncio.TimerHandle | None = None
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


class _Counter:
    """A counter of :class:`FaultProxy`, read under its lock.

    The attribute ``kills`` reads the int ``_kills`` that the proxy's loop updates.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_" + name

    def __get__(self, proxy: FaultProxy, owner: type | None = None) -> int:
        with proxy._lock:
            count: int = getattr(proxy, self._attr)
            return count


class FaultProxy:
    """A TCP proxy in front of a pooler (or PostgreSQL) that injects connection faults.

    With ``terminate_tls`` (the default) it answers the client's SSLRequest itself,
    using ``cert_file``/``key_file``, and opens its own TLS connection upstream (a
    plain one with ``upstream_tls=False``, for a server built without OpenSSL), so it
    sees the PostgreSQL protocol in clear: it counts round trips, tracks the text of
    the current transaction, and can kill a connection around its COMMIT. Without it,
    bytes are relayed untouched (TLS passthrough) and only the kill features work.

    Everything runs on an asyncio loop in one daemon thread; the public methods are
    thread-safe and take effect before they return. The proxy stops by itself after
    ``max_lifetime_seconds``.

    :meth:`url` names ``driver`` (a SQLAlchemy driver name) unless told another: the
    ``proxy`` fixture passes the test's ``url_driver``, so every client a test makes
    from ``proxy.url()`` runs on the driver of the test's parametrization.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        terminate_tls: bool = True,
        upstream_tls: bool = True,
        seed: int = 0,
        max_lifetime_seconds: float = 900.0,
        host: str = LOCALHOST,
        driver: str = "postgresql+psycopg2",
    ) -> None:
        if terminate_tls and (cert_file is None or key_file is None):
            raise ValueError("terminate_tls needs cert_file and key_file")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.driver = driver
        self.terminate_tls = terminate_tls
        self.upstream_tls = upstream_tls
        self.max_lifetime_seconds = max_lifetime_seconds
        #: Delay added to every forwarded chunk, in each direction.
        self.latency_seconds: float = 0.0
        self._cert_file = cert_file
        self._key_file = key_file
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._listen_socket: socket.socket | None = None
        self._conns: dict[int, _Connection] = {}
        self._next_id = 0
        self._chaos: tuple[float, float, KillMode] | None = None
        self._commit_rule: _CommitRule | None = None
        self._kill_during_auth = False
        self._refuse_rst_until = 0.0
        self._reopen_handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: ssl.SSLContext | None = None
        # Counters, guarded by _lock.
        self._round_trips = 0
        self._round_trips_by_conn: dict[int, int] = {}
        self._connections_opened = 0
        self._kills = 0
        self._dropped_commits = 0
        self._refused_connections = 0

    def __repr__(self) -> str:
        upstream = f"{self.upstream_host}:{self.upstream_port}"
        return f"<FaultProxy port={self.port} -> {upstream}>"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Listen on a free port and start relaying."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy.start() called twice")
        if self.terminate_tls:
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.load_cert_chain(str(self._cert_file), str(self._key_file))
            client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_ctx.check_hostname = False
            client_ctx.verify_mode = ssl.CERT_NONE
            self._server_ctx, self._client_ctx = server_ctx, client_ctx
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._listen_socket = sock
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, _context: None)
        self._loop = loop
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(loop, started), name=repr(self), daemon=True
        )
        self._thread.start()
        started.result(timeout=10)

    def _thread_main(
        self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[None]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._listen(self._listen_socket))
                loop.call_later(self.max_lifetime_seconds, self._shutdown_soon)
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
        except BaseException:  # never let a proxy failure reach threading.excepthook
            pass
        finally:
            with contextlib.suppress(BaseException):
                self._close_loop(loop)
            self._stopped.set()

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns.values()):
            self._kill(conn, "fin", count=False)
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        """Close the listener and every connection; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._shutdown_soon)
            thread.join(timeout=10)
        if self._listen_socket is not None:
            self._listen_socket.close()

    def _shutdown_soon(self) -> None:
        assert self._loop is not None
        self._loop.create_task(self._shutdown())

    async def _shutdown(self) -> None:
        self._chaos = None
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns.values()):
            self._kill(conn, "fin", count=False)
        await asyncio.sleep(0)
        assert self._loop is not None
        self._loop.stop()

    def __enter__(self) -> t.Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the proxy thread is alive."""
        return self._thread is not None and not self._stopped.is_set()

    def url(self, dbname: str, *, driver: str | None = None) -> str:
        """Return a SQLAlchemy URL to ``dbname`` through the proxy (TLS required), on
        ``driver`` (default: the proxy's :attr:`driver`)."""
        return make_url(
            self.port,
            dbname,
            driver=driver or self.driver,
            password=PG_PASSWORD,
            query={"sslmode": "require"},
        )

    def _call(self, fn: t.Callable[[], t.Any], default: t.Any = None) -> t.Any:
        """Run ``fn`` on the proxy loop and wait for its (awaited) result.

        Before start or after stop there is no loop: a plain ``fn`` runs here, a
        coroutine ``fn`` is dropped and ``default`` returned.
        """
        loop = self._loop
        if loop is None or not self.running:
            result = fn()
            if asyncio.iscoroutine(result):
                result.close()
                return default
            return result

        async def runner() -> t.Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        coro = runner()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed in the meantime
            coro.close()
            return default
        try:
            return future.result(timeout=10)
        except concurrent.futures.CancelledError:  # the proxy stopped meanwhile
            return default

    # ---------------------------------------------------------------- counters

    #: Query ('Q') and Sync ('S') messages from clients since the last reset.
    round_trips = _Counter()
    #: Client connections accepted (not refused) since the last reset.
    connections_opened = _Counter()
    #: Connections killed by the proxy (any feature) since the last reset.
    kills = _Counter()
    #: COMMIT replies swallowed since the last reset.
    dropped_commits = _Counter()
    #: Connections accepted and reset by ``refuse_connects(mode="rst")``.
    refused_connections = _Counter()

    @property
    def round_trips_by_connection(self) -> list[int]:
        """Round trips per connection (those with any since the reset), oldest first."""
        with self._lock:
            return list(self._round_trips_by_conn.values())

    @property
    def active_connections(self) -> int:
        """Client connections open right now."""
        return len(self._conns)

    def reset_counters(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._round_trips = 0
            self._round_trips_by_conn.clear()
            self._connections_opened = 0
            self._kills = 0
            self._dropped_commits = 0
            self._refused_connections = 0

    # ---------------------------------------------------------------- faults

    def kill_all(self, mode: KillMode = "fin") -> int:
        """Kill every open client connection and its upstream at once; return how many.

        ``fin`` closes without TLS close_notify; ``rst`` resets (SO_LINGER 0).
        """
        _check_mode(mode)

        async def kill_all() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                self._kill(conn, mode)
            # Let the transports really close their sockets before returning.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return len(conns)

        return int(self._call(kill_all, default=0))

    def chaos(
        self, min_seconds: float, max_seconds: float, mode: KillMode = "fin"
    ) -> None:
        """Kill each connection after a random delay drawn from [min, max].

        New connections count from when they were accepted, current ones from now.
        """
        _check_mode(mode)
        if not 0 <= min_seconds <= max_seconds:
            raise ValueError("need 0 <= min_seconds <= max_seconds")

        def enable() -> None:
            self._chaos = (min_seconds, max_seconds, mode)
            for conn in self._conns.values():
                self._schedule_chaos(conn)

        self._call(enable)

    def chaos_off(self) -> None:
        """Stop killing connections at random."""

        def disable() -> None:
            self._chaos = None
            for conn in self._conns.values():
                if conn.chaos_handle is not None:
                    conn.chaos_handle.cancel()
                    conn.chaos_handle = None

        self._call(disable)

    def drop_commit_reply(self, filter: t.Callable[[str], bool] | None = None) -> None:
        """Forward matching COMMITs, then kill the connection instead of the reply.

        A client Query containing COMMIT or END matches when ``filter(txn_text)``
        is true (always when ``filter`` is None); ``txn_text`` is every Query text
        of the current transaction joined by newlines. Replaces any other commit rule.
        """
        self._set_commit_rule(_CommitRule(_DROP_REPLY, filter))

    def drop_reply(self, filter: t.Callable[[str], bool]) -> None:
        """Forward a Query for which ``filter(txn_text)`` is true, then kill the
        connection instead of the reply: an ambiguous commit of an implicit
        (single-message) transaction. Replaces any commit rule."""
        self._set_commit_rule(_CommitRule(_DROP_REPLY, filter, any_query=True))

    def drop_commit_reply_off(self) -> None:
        """Stop dropping (or killing before) COMMITs."""
        self._set_commit_rule(None)

    def drop_each_commit_once(self, key: t.Callable[[str], t.Hashable | None]) -> None:
        """Drop the COMMIT reply the first time a non-None ``key(txn_text)`` is seen."""
        seen: set[t.Hashable] = set()

        def first_time(txn_text: str) -> bool:
            value = key(txn_text)
            if value is None or value in seen:
                return False
            seen.add(value)
            return True

        self._set_commit_rule(_CommitRule(_DROP_REPLY, first_time))

    def kill_before(self, filter: t.Callable[[str], bool]) -> None:
        """Kill the connection instead of forwarding a Query for which
        ``filter(txn_text)`` is true (any Query, not only COMMITs). Replaces any
        commit rule."""
        self._set_commit_rule(_CommitRule(_KILL, filter, any_query=True))

    def kill_before_commit(self, filter: t.Callable[[str], bool] | None = None) -> None:
        """Kill the connection instead of forwarding a matching COMMIT."""
        self._set_commit_rule(_CommitRule(_KILL, filter))

    def _set_commit_rule(self, rule: _CommitRule | None) -> None:
        def assign() -> None:
            self._commit_rule = rule

        self._call(assign)

    def kill_during_auth(self, enabled: bool = True) -> None:
        """Kill new connections when the client sends its SASL response (mid-auth)."""

        def assign() -> None:
            self._kill_during_auth = enabled

        self._call(assign)

    def refuse_connects(
        self, seconds: float, mode: t.Literal["rst", "close"] = "rst"
    ) -> None:
        """Refuse new connections for ``seconds``.

        ``rst`` accepts and resets them at once; ``close`` closes the listener, so
        connects get ECONNREFUSED, and reopens it on the same port afterwards.
        """
        if mode not in ("rst", "close"):
            raise ValueError(f"unknown mode {mode!r}")

        async def refuse() -> None:
            assert self._loop is not None
            if mode == "rst":
                self._refuse_rst_until = self._loop.time() + seconds
                return
            if self._reopen_handle is not None:
                self._reopen_handle.cancel()
            if self._server is not None:
                self._server.close()
                self._server = None
            if self._listen_socket is not None:
                self._listen_socket.close()
                self._listen_socket = None
            self._reopen_handle = self._loop.call_later(seconds, self._reopen_soon)

        self._call(refuse)

    def _reopen_soon(self) -> None:
        assert self._loop is not None
        self._reopen_handle = None
        self._loop.create_task(self._listen(None))

    async def _listen(self, sock: socket.socket | None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self._listen_socket = sock
        self._server = await asyncio.start_server(self._handle, sock=sock, backlog=512)

    # ---------------------------------------------------------------- per connection

    def _schedule_chaos(self, conn: _Connection) -> None:
        chaos = self._chaos
        if chaos is None or conn.killed:
            return
        assert self._loop is not None
        low, high, mode = chaos
        if conn.chaos_handle is not None:
            conn.chaos_handle.cancel()
        conn.chaos_handle = self._loop.call_later(
            self._rng.uniform(low, high), self._kill, conn, mode
        )

    def _kill(self, conn: _Connection, mode: KillMode, *, count: bool = True) -> None:
        if conn.killed:
            return
        conn.killed = True
        if count:
            with self._lock:
                self._kills += 1
        if conn.chaos_handle is not None:
            conn.chaos_handle.cancel()
        for writer, sock in (
            (conn.client_writer, conn.client_socket),
            (conn.upstream_writer, conn.upstream_socket),
        ):
            if writer is None:
                continue
            if mode == "rst" and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in conn.tasks:
            task.cancel()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        sock = writer.get_extra_info("socket")
        # asyncio sets TCP_NODELAY only when the socket's proto is IPPROTO_TCP, which an
        # accepted socket of a plain socket() listener is not: without it, Nagle plus
        # delayed ACKs add 40 ms to every handshake step.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if loop.time() < self._refuse_rst_until:
            with self._lock:
                self._refused_connections += 1
            # Wait for the client's first packet, so the reset reliably hits a client
            # that is past connect() and waiting for an answer.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(8), timeout=1)
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            writer.transport.abort()
            return
        with self._lock:
            self._next_id += 1
            conn = _Connection(self._next_id, loop.time(), reader, writer, sock)
            self._connections_opened += 1
        self._conns[conn.id] = conn
        self._schedule_chaos(conn)
        try:
            await self._serve(conn)
        except (Exception, asyncio.CancelledError):
            pass  # any failure ends this connection only
        finally:
            self._conns.pop(conn.id, None)
            if conn.chaos_handle is not None:
                conn.chaos_handle.cancel()
            for task in conn.tasks:
                task.cancel()
            for w in (conn.client_writer, conn.upstream_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.transport.abort()

    async def _serve(self, conn: _Connection) -> None:
        reader, writer = conn.client_reader, conn.client_writer
        packet = await read_initial_packet(reader)
        while packet_code(packet) == GSSENC_REQUEST_CODE:
            writer.write(b"N")
            await writer.drain()
            packet = await read_initial_packet(reader)
        code = packet_code(packet)
        if not self.terminate_tls or code == CANCEL_REQUEST_CODE:
            await self._open_upstream(conn, tls=False)
            await self._relay(conn, packet, parse=False)
            return
        tls = code == SSL_REQUEST_CODE
        if tls:
            assert self._server_ctx is not None
            writer.write(b"S")
            await writer.drain()
            await start_tls(writer, self._server_ctx)
            packet = await read_initial_packet(reader)
        await self._open_upstream(conn, tls=tls and self.upstream_tls)
        await self._relay(conn, packet, parse=True)

    async def _open_upstream(self, conn: _Connection, *, tls: bool) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            self.upstream_host, self.upstream_port
        )
        conn.upstream_reader, conn.upstream_writer = up_reader, up_writer
        conn.upstream_socket = up_writer.get_extra_info("socket")
        if conn.killed:
            raise ConnectionAbortedError("killed while connecting upstream")
        if tls:
            assert self._client_ctx is not None
            up_writer.write(SSL_REQUEST)
            await up_writer.drain()
            answer = await up_reader.readexactly(1)
            if answer != b"S":
                raise ServiceError(f"upstream refused TLS: {answer!r}")
            await start_tls(up_writer, self._client_ctx)

    async def _relay(self, conn: _Connection, first: bytes, *, parse: bool) -> None:
        assert conn.upstream_reader is not None
        assert conn.upstream_writer is not None
        to_server: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        to_client: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self._enqueue(to_server, first)
        loop = asyncio.get_running_loop()
        from_client = loop.create_task(self._pump_client(conn, to_server, parse))
        from_server = loop.create_task(
            self._pump_server(conn, conn.upstream_reader, to_client, parse)
        )
        send_server = loop.create_task(self._send(to_server, conn.upstream_writer))
        send_client = loop.create_task(self._send(to_client, conn.client_writer))
        conn.tasks.extend([from_client, from_server, send_server, send_client])
        if conn.killed:
            return
        done, _ = await asyncio.wait(
            {from_client, from_server}, return_when="FIRST_COMPLETED"
        )
        # One side hung up: let what it said reach the other side, then close both.
        sender = send_server if from_client in done else send_client
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(sender), timeout=5)
        for writer in (conn.client_writer, conn.upstream_writer):
            with contextlib.suppress(Exception):
                writer.close()

    def _enqueue(
        self, queue: asyncio.Queue[tuple[float, bytes | None]], data: bytes | None
    ) -> None:
        latency = self.latency_seconds
        due = asyncio.get_running_loop().time() + latency if latency > 0 else 0.0
        queue.put_nowait((due, data))

    async def _send(
        self,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if data is None:
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()

    async def _pump_client(
        self,
        conn: _Connection,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        parse: bool,
    ) -> None:
        parser = FrameParser()
        try:
            while True:
                data = await conn.client_reader.read(65536)
                if not data:
                    return
                verdict = (
                    self._inspect_client(conn, parser.feed(data)) if parse else _FORWARD
                )
                if verdict == _KILL:
                    self._kill(conn, "fin")
                    return
                if verdict == _DROP_REPLY:
                    conn.swallow_reply = True
                self._enqueue(queue, data)
        finally:
            self._enqueue(queue, None)

    async def _pump_server(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        parse: bool,
    ) -> None:
        parser = FrameParser()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if conn.swallow_reply:
                    # The COMMIT reached the server and its answer is here: lose it.
                    with self._lock:
                        self._dropped_commits += 1
                    self._kill(conn, "fin")
                    return
                if parse:
                    for kind, body in parser.feed(data):
                        if kind == b"Z" and body[:1] == b"I":
                            conn.txn.clear()
                self._enqueue(queue, data)
        finally:
            self._enqueue(queue, None)

    def _inspect_client(
        self, conn: _Connection, frames: list[tuple[bytes, bytes]]
    ) -> str:
        verdict = _FORWARD
        for kind, body in frames:
            if kind in (b"Q", b"S"):
                with self._lock:
                    self._round_trips += 1
                    self._round_trips_by_conn[conn.id] = (
                        self._round_trips_by_conn.get(conn.id, 0) + 1
                    )
            if kind == b"p" and self._kill_during_auth:
                return _KILL
            if kind == b"P":
                parts = body.split(b"\0", 2)
                if len(parts) >= 2:
                    conn.txn.append(parts[1].decode("utf-8", "replace"))
            if kind == b"Q":
                text = body.rstrip(b"\0").decode("utf-8", "replace")
                conn.txn.append(text)
                rule = self._commit_rule
                if (
                    rule is not None
                    and (rule.any_query or _COMMIT_RE.search(text))
                    and rule.matches("\n".join(conn.txn))
                ):
                    if rule.action == _KILL:
                        return _KILL
                    verdict = rule.action
        return verdict


def _check_mode(mode: str) -> None:
    if mode not in ("fin", "rst"):
        raise ValueError(f"unknown kill mode {mode!r}")


async def start_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
    """Upgrade ``writer`` to TLS; a connection killed during the handshake raises.

    CPython 3.11's ``StreamWriter.start_tls`` stores ``None`` as the writer's
    transport when the connection is lost between the handshake and its return
    (then raises AttributeError from ``_replace_writer``); the writer's ``__del__``
    then raises AttributeError whenever garbage collection reaches it, which pytest
    reports against whichever later test is running. Keep the old transport instead.
    """
    transport = writer.transport
    try:
        await writer.start_tls(context, ssl_handshake_timeout=10)
    finally:
        if writer.transport is None:
            writer._transport = transport  # see docstring
    if writer.transport is transport:
        raise ConnectionAbortedError("killed during the TLS handshake")
