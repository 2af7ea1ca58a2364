"""The automatic pipeline of one event loop over one RESP2 connection.

redis-py spends most of an awaited command on its own machinery: a pool checkout, a retry
wrapper, a timeout task around each send and each read (see bench/NOTES.md), and importing it
costs a process about 11 MB. This pipeline only does "send these commands, give each caller its
reply": a command on an idle connection is written at once, and those issued while others are
queued or unanswered go out together in one write from a `call_soon` callback; replies are
parsed by hiredis as they arrive and set straight on each caller's future, with no task per
call. Plain TCP (`redis://`) and Unix sockets (`unix://`) only.

Through a lost connection the pipeline reconnects and, for up to `retry_seconds`, sends again
the commands that were never written and those written but unanswered that its user calls
`resendable` (they change nothing the second time); the others fail with the connection error,
since the server may have run them. A server that forgot the Lua scripts (NOSCRIPT) gets them
loaded and the command again, once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    import hiredis
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the Redis engine needs the redis extra: pip install 'conveyor[redis]'"
    ) from exc

__all__ = ["BarePipeline", "auth_command", "open_socket", "pack_command", "parse_url", "supports"]

log = logging.getLogger("conveyor.redis")

#: Seconds without any reply to a sent command after which the connection is dropped.
REPLY_TIMEOUT = 15.0


def supports(url: str) -> bool:
    """True when `url` can use the bare client (plain TCP or a Unix socket)."""
    return urlsplit(url).scheme in ("redis", "unix")


def parse_url(url: str) -> dict[str, Any]:
    """host/port or path, username, password and db of a `redis://` or `unix://` URL."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    out: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
    }
    db = query.get("db")
    if parts.scheme == "unix":
        out["path"] = unquote(parts.path)
    else:
        out["host"] = parts.hostname or "localhost"
        out["port"] = parts.port or 6379
        db = parts.path.lstrip("/") or db
    out["db"] = int(db or 0)
    return out


def _reader() -> hiredis.Reader:
    return hiredis.Reader()  # error replies come back as hiredis.ReplyError values


def _no_script(reply: Any) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


class _Call:
    """One command and the future of its caller."""

    __slots__ = ("command", "failed_at", "future", "internal", "reloaded")

    def __init__(
        self, command: tuple[Any, ...], future: asyncio.Future[Any], internal: bool = False
    ) -> None:
        self.command = command
        self.future = future
        self.internal = internal  # sent by the pipeline itself while (re)connecting
        self.failed_at: float | None = None  # first connection failure while it was unanswered
        self.reloaded = False  # scripts were loaded once for it already


def pack_command(command: Sequence[Any]) -> bytes:
    """Encode one command as a RESP array of bulk strings (str, bytes, int or float words)."""
    data: bytes = hiredis.pack_command(command if isinstance(command, tuple) else tuple(command))
    return data


def pack(calls: list[_Call]) -> bytes:
    """Encode the commands of calls, one after another."""
    return b"".join([hiredis.pack_command(call.command) for call in calls])


def _packs(call: _Call) -> bool:
    """Whether `call` can be encoded; if not, its caller gets the TypeError."""
    try:
        hiredis.pack_command(call.command)
    except TypeError as exc:
        if not call.future.done():
            call.future.set_exception(TypeError(f"cannot send {call.command[0]!r}: {exc}"))
        return False
    return True


P = TypeVar("P", bound=asyncio.Protocol)


async def open_socket(url: str, protocol: Callable[[], P], timeout: float = 5.0) -> P:
    """Connect to the host and port, or the socket path, that a bare URL names."""
    options = parse_url(url)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        if options.get("path"):
            _, conn = await loop.create_unix_connection(protocol, options["path"])
        else:
            _, conn = await loop.create_connection(protocol, options["host"], options["port"])
    return conn


def auth_command(options: dict[str, Any]) -> tuple[Any, ...] | None:
    """The AUTH command a URL's credentials need, or None."""
    if options.get("password") is None:
        return None
    user = options.get("username")
    return ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])


class _Connection(asyncio.Protocol):
    """One socket: writes batches, hands each reply to the oldest unanswered call."""

    def __init__(self, pipeline: BarePipeline) -> None:
        self.pipeline = pipeline
        self.reader = _reader()
        self.waiting: collections.deque[_Call] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.replies = 0
        self.watchdog: asyncio.TimerHandle | None = None
        self.gone: asyncio.Future[None] = pipeline.loop.create_future()  # set when closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                self.replies += 1
                self.pipeline.answer(self.waiting.popleft(), reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.abort(f"bad reply from Redis: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.gone.done():
            self.gone.set_result(None)
        if self.watchdog is not None:
            self.watchdog.cancel()
        lost, self.waiting = list(self.waiting), collections.deque()
        self.pipeline.lost(lost, exc or ConnectionError("connection to Redis closed"))

    async def close(self) -> None:
        """Close the socket and wait until it is closed (a loop about to end must not leave
        it to the garbage collector)."""
        if self.transport is not None:
            self.transport.close()
        await self.gone

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, calls: list[_Call]) -> None:
        assert self.transport is not None
        try:
            data = pack(calls)
        except TypeError:  # a word that is not str/bytes/int/float fails its own caller only
            calls = [call for call in calls if _packs(call)]
            data = pack(calls)
        self.transport.write(data)
        self.waiting.extend(calls)
        if self.watchdog is None:
            loop = self.pipeline.loop
            self.watchdog = loop.call_later(REPLY_TIMEOUT, self._check, self.replies)

    def _check(self, replies_before: int) -> None:
        self.watchdog = None
        if not self.waiting:
            return
        if self.replies == replies_before:
            self.abort(f"Redis sent no reply for {REPLY_TIMEOUT:.0f} s")
            return
        loop = self.pipeline.loop
        self.watchdog = loop.call_later(REPLY_TIMEOUT, self._check, self.replies)

    def abort(self, why: str) -> None:
        if self.transport is not None:
            self.transport.abort()  # connection_lost hands the unanswered calls back
        self.reader = _reader()
        log.debug("dropping the Redis connection: %s", why)


class BarePipeline:
    """The automatic pipeline of one event loop over one bare connection.

    Args:
        url: a `redis://` or `unix://` URL.
        error: turns a redis-py or connection exception into what the caller sees.
        scripts: the Lua sources to load again when the server says NOSCRIPT.
        resendable: whether a command written to a connection that dropped before its reply
            may be sent again (it changes nothing the second time).
        retry_seconds: how long unanswered commands are sent again through connection failures.
    """

    def __init__(
        self,
        url: str,
        error: Callable[[BaseException], BaseException],
        scripts: Sequence[str],
        resendable: Callable[[tuple[Any, ...]], bool],
        retry_seconds: float,
    ) -> None:
        self.url = url
        self.error = error
        self.scripts = scripts
        self.resendable = resendable
        self.retry_seconds = retry_seconds
        self.loop = asyncio.get_running_loop()
        self.connection: _Connection | None = None
        self.queued: list[_Call] = []
        self.scheduled = False
        self.recovery: asyncio.Task[None] | None = None
        self.recovery_calls: list[_Call] = []
        self.recovery_reload = False
        self.closed = False

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Send a command; the future gets its reply or error.

        On an idle connection (nothing queued or unanswered) it is written at once, which saves
        a lone awaited call a turn of the loop; otherwise it joins this turn's write.
        """
        future: asyncio.Future[Any] = self.loop.create_future()
        connection = self.connection
        if (
            not self.queued
            and connection is not None
            and not connection.waiting
            and self.recovery is None
            and connection.usable
        ):
            connection.send([_Call(command, future)])
            return future
        self.queued.append(_Call(command, future))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._write)
        return future

    def _write(self) -> None:
        self.scheduled = False
        calls, self.queued = self.queued, []
        if not calls:
            return
        if self.recovery is None and self.connection is not None and self.connection.usable:
            self.connection.send(calls)
        else:
            self._recover(calls)

    def answer(self, call: _Call, reply: Any) -> None:
        """A reply arrived for `call`."""
        if call.future.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            if _no_script(reply) and not call.reloaded:
                call.reloaded = True
                self._recover([call], reload=True)
                return
            call.future.set_exception(reply if call.internal else self.error(reply))
            return
        call.future.set_result(reply)

    def lost(self, calls: list[_Call], exc: BaseException) -> None:
        """The connection dropped with `calls` unanswered: send them again, or fail them."""
        if self.connection is not None and not self.connection.usable:
            self.connection = None
        now = time.monotonic()
        again = []
        for call in calls:
            if call.future.done():
                continue
            call.failed_at = call.failed_at or now
            late = now - call.failed_at > self.retry_seconds
            if self.closed or late or call.internal or not self.resendable(call.command):
                call.future.set_exception(self.error(ConnectionError(str(exc))))
            else:
                again.append(call)
        if again:
            self._recover(again)

    def _recover(self, calls: list[_Call], reload: bool = False) -> None:
        if self.recovery is not None and not self.recovery.done():
            self.recovery_calls.extend(calls)
            self.recovery_reload = self.recovery_reload or reload
            return
        self.recovery_calls = calls
        self.recovery_reload = reload
        self.recovery = self.loop.create_task(self._reconnect(), name="conveyor-redis-recover")

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + self.retry_seconds
        try:
            while True:
                try:
                    if self.connection is None or not self.connection.usable:
                        self.connection = await self._open()
                    if self.recovery_reload:
                        async with asyncio.timeout(REPLY_TIMEOUT):
                            await self.direct([("SCRIPT", "LOAD", src) for src in self.scripts])
                        self.recovery_reload = False
                    break
                except (OSError, TimeoutError) as exc:
                    if self.closed or time.monotonic() > deadline:
                        self._fail(self.recovery_calls, exc)
                        return
                    await asyncio.sleep(0.1)
                except asyncio.CancelledError as exc:
                    self._fail(self.recovery_calls, exc)
                    raise
                except hiredis.ReplyError as exc:  # refused AUTH/SELECT or script load: final
                    self._fail(self.recovery_calls, ConnectionError(f"Redis refused: {exc}"))
                    return
                except Exception as exc:  # not transient either
                    self._fail(self.recovery_calls, exc)
                    return
        finally:
            self.recovery = None
        calls, self.recovery_calls = self.recovery_calls, []
        assert self.connection is not None
        self.connection.send([c for c in calls if not c.future.done()])

    def _fail(self, calls: list[_Call], exc: BaseException) -> None:
        error = self.error(exc)
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)
        self.recovery_calls = []

    async def _open(self, timeout: float = 5.0) -> _Connection:
        conn = await open_socket(self.url, lambda: _Connection(self), timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._setup(conn, parse_url(self.url))
        except BaseException:
            conn.abort("could not set the connection up")
            raise
        return conn

    async def direct(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands on the open connection at once, ahead of anything queued."""
        assert self.connection is not None
        return await _internal(self.connection, commands)

    async def _setup(self, conn: _Connection, options: Any) -> None:
        """Authenticate and select the database, before any queued command."""
        auth = auth_command(options)
        commands: list[tuple[Any, ...]] = [auth] if auth else []
        if options.get("db"):
            commands.append(("SELECT", options["db"]))
        if commands:
            await _internal(conn, commands)

    async def close(self) -> None:
        """Close the connection (unanswered commands fail) and wait until it is closed."""
        self.closed = True
        if self.recovery is not None:
            self.recovery.cancel()
        if self.connection is not None:
            await self.connection.close()


async def _internal(conn: _Connection, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send the pipeline's own commands on `conn` and wait for every reply; raise the first
    error (a `hiredis.ReplyError` as Redis sent it) once all are in, so none is left unread."""
    loop = asyncio.get_running_loop()
    calls = [_Call(command, loop.create_future(), internal=True) for command in commands]
    conn.send(calls)
    replies = await asyncio.gather(*(call.future for call in calls), return_exceptions=True)
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies
