"""The NATS connection shared by `NatsTransport` and `NatsResultBackend`.

A `NatsBroker` makes one `NatsClient` for its transport and result store (a standalone one
makes its own); it holds the names of the JetStream streams of one app and, per event loop, one
nats-py connection (a portal thread or `asyncio.run` elsewhere gets its own).
It speaks the JetStream API as JSON requests, so every call is one round trip that can run
concurrently with others on the same connection. Errors surface as `BrokerError` /
`BrokerConnectionError` naming the URL with its password hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import weakref
from typing import Any
from urllib.parse import urlsplit

from conveyor._urls import safe_url
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError
from conveyor.transports._nats_conn import (
    CONNECTION_ERRORS,
    LoopConn,
    Msg,
    NatsConnection,
    NatsError,
    Stored,
    one_line,
)

__all__ = [
    "CANCEL_SECONDS",
    "MARKER_SECONDS",
    "STREAM_SETTINGS",
    "NatsClient",
    "WrongSequence",
]

#: Seconds a request waits for the server before it fails.
REQUEST_TIMEOUT = 5.0
#: JetStream error code of a publish whose expected last subject sequence did not match.
WRONG_LAST_SEQUENCE = 10071
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")
#: Nanoseconds anything stays in the results stream (its `max_age`).
RESULTS_MAX_AGE = 7 * 24 * 3600 * 10**9
#: Seconds a lease marker `P.l.<seq>` guards a redelivered message (its stream's `max_age`).
MARKER_SECONDS = 24 * 3600.0
#: Seconds a cancel request `P.c.<id>` is kept (its stream's `max_age`).
CANCEL_SECONDS = 3600.0

#: Streams of one app; each is created (with these settings) on startup. Expiring values carry
#: a `Conveyor-Expires` header (no per-message TTL before nats-server 2.11); a stream whose
#: values all share one lifetime also has it as `max_age`, so the server drops them.
STREAM_SETTINGS: dict[str, dict[str, Any]] = {
    "tasks": {"subjects": ["q"], "retention": "workqueue", "duplicate_window": 120 * 10**9},
    "delayed": {"subjects": ["d"], "retention": "workqueue"},
    "dead": {"subjects": ["x"], "max_msgs": 100_000},
    "meta": {"subjects": ["i"], "max_msgs_per_subject": 1},
    "leases": {
        "subjects": ["l"],
        "max_msgs_per_subject": 1,
        "max_age": int(MARKER_SECONDS * 1e9),
    },
    "cancels": {
        "subjects": ["c"],
        "max_msgs_per_subject": 1,
        "max_age": int(CANCEL_SECONDS * 1e9),
    },
    # No max age: values without a TTL (schedules, counters) live for ever; expired ones are
    # removed by `NatsState.expire`.
    "kv": {"subjects": ["kv", "set"], "max_msgs_per_subject": 1},
    # Expired results are hidden on read and removed by the stream's age limit (a week), which
    # also bounds results kept "for ever".
    "results": {"subjects": ["r"], "max_msgs_per_subject": 1, "max_age": RESULTS_MAX_AGE},
}
#: Subjects a stream held in an older layout, purged before its new settings are applied.
LEGACY_SUBJECTS: dict[str, list[str]] = {"meta": ["l", "c"]}
#: Streams created after the others: they hold subjects an older `P_meta` held.
_CREATED_LAST = ("leases", "cancels")


class NatsClient:
    """One NATS server (or cluster) seen through a name prefix; shared by transport and results.

    Args:
        url: `nats://[user:password@]host:4222` (or `tls://`); several separated by commas.
        prefix: the start of every stream name and subject, so several apps share one server.
    """

    def __init__(self, url: str, prefix: str = "conveyor") -> None:
        if not _PREFIX.match(prefix):
            raise ConfigurationError(
                f"invalid NATS prefix {prefix!r}: use letters, digits, - and _"
            )
        self.url = url
        self.prefix = prefix
        self.safe_url = ",".join(safe_url(u) for u in url.split(","))
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        for server in self.servers:
            if urlsplit(server).scheme not in ("nats", "tls", "ws", "wss"):
                raise ConfigurationError(f"not a NATS URL: {safe_url(server)!r}")
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopConn] = (
            weakref.WeakKeyDictionary()
        )
        self._streams_ready = False
        self._consumers: set[tuple[str, str, str]] = set()  # (stream kind, name, config)

    # -- names ------------------------------------------------------------------------------------

    def stream(self, kind: str) -> str:
        """The name of one of the app's streams (`STREAM_SETTINGS`)."""
        return f"{self.prefix}_{kind}"

    def subject(self, *tokens: str) -> str:
        """`prefix.token.token`; tokens must already be escaped."""
        return ".".join((self.prefix, *tokens))

    # -- connections ------------------------------------------------------------------------------

    def here(self) -> LoopConn:
        """The connection of the running event loop (opened on first use)."""
        loop = asyncio.get_running_loop()
        conn = self._loops.get(loop)
        if conn is None:
            conn = self._loops[loop] = LoopConn(self.servers, loop, self.forget)
        return conn

    async def connection(self) -> NatsConnection:
        """This loop's nats-py connection, connecting if needed."""
        try:
            return await self.here().connection()
        except CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None

    async def startup(self) -> None:
        """Connect and create the app's streams (once per client)."""
        await self.connection()
        if self._streams_ready:
            return
        first = [k for k in STREAM_SETTINGS if k not in _CREATED_LAST]
        await asyncio.gather(*(self._add_stream(kind) for kind in first))
        await asyncio.gather(*(self._add_stream(kind) for kind in _CREATED_LAST))
        self._streams_ready = True

    async def _add_stream(self, kind: str) -> None:
        settings = dict(STREAM_SETTINGS[kind])
        subjects = [self.subject(s, ">") for s in settings.pop("subjects")]
        config = {
            "name": self.stream(kind),
            "subjects": subjects,
            "storage": "file",
            "allow_direct": True,
            "discard": "old",
            **settings,
        }
        try:
            await self.api(f"STREAM.CREATE.{config['name']}", config)
        except BrokerError as exc:
            if "already in use" not in str(exc):
                raise
            for old in LEGACY_SUBJECTS.get(kind, []):  # while the stream still holds them
                await self.purge(kind, self.subject(old, ">"))
            await self.api(f"STREAM.UPDATE.{config['name']}", config)

    async def ensure_consumer(self, kind: str, name: str, config: dict[str, Any]) -> None:
        """Create a durable pull consumer once per client (the server keeps it)."""
        key = (kind, name, json.dumps(config, sort_keys=True))
        if key in self._consumers:
            return
        stream = self.stream(kind)
        body = {"stream_name": stream, "config": {"durable_name": name, **config}}
        await self.api(f"CONSUMER.DURABLE.CREATE.{stream}.{name}", body)  # create or update
        self._consumers.add(key)

    async def close(self) -> None:
        """Close this loop's connection and forget those of loops that have ended."""
        loop = asyncio.get_running_loop()
        for other, conn in list(self._loops.items()):
            if other is loop:
                await conn.close()
            elif other.is_running():
                closing = asyncio.run_coroutine_threadsafe(conn.close(), other)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(closing), REQUEST_TIMEOUT)
            self._loops.pop(other, None)

    def forget(self, conn: LoopConn) -> None:
        """Drop the (closed) connection of a loop that has ended."""
        if self._loops.get(conn.loop) is conn:
            del self._loops[conn.loop]

    # -- errors -----------------------------------------------------------------------------------

    def connection_error(self, exc: BaseException) -> BrokerConnectionError:
        """The error a caller sees when the server cannot be reached."""
        return BrokerConnectionError(f"cannot reach NATS at {self.safe_url}: {one_line(exc)}")

    def refused(self, what: str, error: Any) -> BrokerError:
        """The error a caller sees when JetStream refuses a request."""
        return BrokerError(f"NATS at {self.safe_url} refused {what}: {error}")

    # -- requests ---------------------------------------------------------------------------------

    async def request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> Msg:
        """One request/reply round trip, errors translated."""
        nc = await self.connection()
        try:
            return await nc.request(subject, payload, timeout=REQUEST_TIMEOUT, headers=headers)
        except CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None
        except NatsError as exc:  # a payload over the server's limit, a bad subject
            raise self.refused("a request", one_line(exc)) from None

    async def api(self, call: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call `$JS.API.<call>` with a JSON body; raise `BrokerError` on an API error."""
        payload = b"" if body is None else json.dumps(body).encode()
        reply = await self.request(f"$JS.API.{call}", payload)
        answer: dict[str, Any] = json.loads(reply.data)
        error = answer.get("error")
        if error:
            raise self.refused(call.split(".")[0].lower(), _describe(error))
        return answer

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Publish to a stream and wait for its ack: `{"seq": n, "duplicate": bool}`.

        Raises:
            WrongSequence: an expected last subject sequence did not match.
        """
        reply = await self.request(subject, data, headers or None)
        answer: dict[str, Any] = json.loads(reply.data)
        error = answer.get("error")
        if error:
            if error.get("err_code") == WRONG_LAST_SEQUENCE:
                raise WrongSequence(subject)
            raise self.refused("a publish", _describe(error))
        return answer

    async def get(self, kind: str, subject: str) -> Stored | None:
        """The last message of `subject` in a stream (a direct get), or None."""
        reply = await self.request(f"$JS.API.DIRECT.GET.{self.stream(kind)}.{subject}")
        return _stored(reply)

    async def get_seq(self, kind: str, seq: int, next_subject: str | None = None) -> Stored | None:
        """The message at `seq` (or the first at or after it on `next_subject`), or None."""
        body: dict[str, Any] = {"seq": seq}
        if next_subject is not None:
            body["next_by_subj"] = next_subject
        reply = await self.request(
            f"$JS.API.DIRECT.GET.{self.stream(kind)}", json.dumps(body).encode()
        )
        return _stored(reply)

    async def purge(self, kind: str, subject: str) -> int:
        """Remove every message of `subject` (wildcards allowed); return how many."""
        answer = await self.api(f"STREAM.PURGE.{self.stream(kind)}", {"filter": subject})
        return int(answer.get("purged", 0))

    async def purge_later(self, kind: str, subject: str) -> None:
        """`purge` without waiting for the answer (see `send`)."""
        body = json.dumps({"filter": subject}).encode()
        await self.send(f"$JS.API.STREAM.PURGE.{self.stream(kind)}", body)

    async def flushed(self) -> None:
        """Wait until the server has handled everything this loop sent (a ping round trip)."""
        nc = await self.connection()
        try:
            await nc.flush(timeout=int(REQUEST_TIMEOUT))
        except CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None

    async def delete(self, kind: str, seq: int) -> bool:
        """Remove one message by sequence; False when it was not there."""
        try:
            await self.api(f"STREAM.MSG.DELETE.{self.stream(kind)}", {"seq": seq, "no_erase": True})
        except BrokerError as exc:
            if "not found" in str(exc) or "10057" in str(exc):
                return False
            raise
        return True

    async def delete_later(self, kind: str, seq: int) -> None:
        """`delete` without waiting for the answer (see `send`)."""
        body = json.dumps({"seq": seq, "no_erase": True}).encode()
        await self.send(f"$JS.API.STREAM.MSG.DELETE.{self.stream(kind)}", body)

    async def subject_counts(self, kind: str, subjects: str) -> dict[str, int]:
        """Messages per subject matching `subjects`, for subjects holding any."""
        counts: dict[str, int] = {}
        offset = 0
        while True:
            info = await self.api(
                f"STREAM.INFO.{self.stream(kind)}", {"subjects_filter": subjects, "offset": offset}
            )
            page = (info.get("state") or {}).get("subjects") or {}
            counts.update(page)
            offset += len(page)
            if not page or offset >= int(info.get("total", 0)):
                return counts

    async def pull(self, kind: str, consumer: str, batch: int) -> list[Msg]:
        """Lease up to `batch` messages from a durable pull consumer without waiting."""
        nc = await self.connection()
        inbox = nc.new_inbox()
        got: list[Msg] = []
        done = asyncio.get_running_loop().create_future()

        async def collect(msg: Msg) -> None:
            if msg.reply and msg.reply.startswith("$JS.ACK."):
                got.append(msg)
                if len(got) < batch:
                    return
            if not done.done():  # a status (404 no messages, 408) or the batch is full
                done.set_result(None)

        try:
            sub = await nc.subscribe(inbox, cb=collect)
            try:
                request = json.dumps({"batch": batch, "no_wait": True}).encode()
                subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream(kind)}.{consumer}"
                await nc.publish(subject, request, reply=inbox)
                await asyncio.wait_for(done, REQUEST_TIMEOUT)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        except CONNECTION_ERRORS as exc:
            if got:
                return got
            # JetStream does not answer a pull from a consumer that was deleted: make it again
            self._consumers = {c for c in self._consumers if c[:2] != (kind, consumer)}
            raise self.connection_error(exc) from None
        return got

    async def walker(self, kind: str, start: int) -> str:
        """A pull consumer reading a stream from sequence `start` on without acks; the server
        removes it a minute after its last use (`drop_consumer` does at once)."""
        config = {
            "ack_policy": "none",
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": max(start, 1),
            "inactive_threshold": 60 * 10**9,
        }
        stream = self.stream(kind)
        answer = await self.api(
            f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
        )
        return str(answer["name"])

    async def drop_consumer(self, kind: str, name: str) -> None:
        """Delete a consumer (one that is already gone is fine)."""
        with contextlib.suppress(BrokerError):
            await self.api(f"CONSUMER.DELETE.{self.stream(kind)}.{name}")

    async def send(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish without waiting for an answer (acks, index updates): the server handles a
        connection's messages in order, so a later request on this loop sees its effect."""
        nc = await self.connection()
        try:
            await nc.publish(subject, data, headers=headers or None)
        except CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None

    async def ack(self, msg: Msg, kind: bytes = b"+ACK") -> None:
        """Acknowledge (or `-NAK`, `+WPI`, `+TERM`) a leased message; no reply is awaited."""
        await self.send(msg.reply, kind)


class WrongSequence(BrokerError):
    """A compare-and-set publish lost: the subject's last sequence was not the expected one."""


def _stored(reply: Msg) -> Stored | None:
    headers = dict(reply.headers or {})
    status = headers.get("Status")
    if status is not None:
        if status == "404":
            return None
        raise BrokerError(f"NATS direct get failed: {status} {headers.get('Description', '')}")
    seq = int(headers.get("Nats-Sequence", 0))
    return Stored(reply.data, seq, headers)


def _describe(error: dict[str, Any]) -> str:
    return f"{error.get('description', error)} (code {error.get('err_code', '?')})"
