"""The NATS connection of one app, shared by its transport, state store and result store.

A `NatsClient` names the app's JetStream streams (`<prefix>_<kind>`, `STREAM_SETTINGS`) and
subjects (`<prefix>.<token>...`), and keeps one nats-py connection per event loop
(`conn.LoopConn` in an `engines.loops.PerLoop`: a portal thread or `asyncio.run` elsewhere gets
its own, closed when its loop ends). It speaks the JetStream API as JSON requests, so every
call is one round trip that can run concurrently with others on the same connection.

Invariants: every error reaching a caller is a `BrokerError` / `BrokerConnectionError` naming
the URL with its password hidden; callers pass subject tokens already escaped (`keys.escape`);
an expiring value carries its unix expiry in `Conveyor-Expires` (nats-server before 2.11 has no
per-message TTL) and reads as absent once it has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from conveyor._urls import safe_url
from conveyor.engines.loops import PerLoop
from conveyor.engines.nats.conn import CONNECTION_ERRORS, LoopConn, Msg, NatsConnection, NatsError
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError
from conveyor.logs import named_line

__all__ = ["EXPECT", "MARKER_SECONDS", "Msg", "NatsClient", "Stored", "WrongSequence"]


#: Seconds a request waits for the server before it fails.
REQUEST_TIMEOUT = 5.0
#: Seconds a pull without waiting waits for its answer before the consumer is looked at.
_PULL_WAIT = 1.0
#: Decodes an API answer (msgspec: several times quicker than `json.loads` on every `kiq`).
_json = msgspec.json.Decoder().decode
#: The header of a publish stored only if the subject's last sequence is the one it gives.
EXPECT = "Nats-Expected-Last-Subject-Sequence"
#: Seconds a lease marker `P.l.<seq>` guards a redelivered message (its stream's `max_age`).
MARKER_SECONDS = 24 * 3600.0
#: The header holding a value's unix expiry.
EXPIRES = "Conveyor-Expires"
#: A message's headers, if it has any.
Headers = dict[str, str] | None

#: Streams of one app, created (or updated to these settings) at startup. A stream whose values
#: all share one lifetime has it as `max_age`, so the server drops them.
_ONE = {"max_msgs_per_subject": 1}
STREAM_SETTINGS: dict[str, dict[str, Any]] = {
    # One subject per task id, holding at most one message: "create only" is a publish header.
    "work": {"subjects": ["w"], "retention": "workqueue", **_ONE, "duplicate_window": 120 * 10**9},
    "later": {"subjects": ["a"], "retention": "workqueue", **_ONE},
    "dead": {"subjects": ["x"], "max_msgs": 100_000},
    "leases": {"subjects": ["l"], **_ONE, "max_age": int(MARKER_SECONDS * 1e9)},
    # No age limit: some values live for ever; expired ones are removed by `NatsStore.expire`.
    "kv": {"subjects": ["kv", "set"], **_ONE},
    # Expired results are hidden on read and removed by the age limit (a week), which also
    # bounds results kept "for ever".
    "results": {"subjects": ["r"], **_ONE, "max_age": 7 * 24 * 3600 * 10**9},
}


@dataclass(frozen=True, slots=True)
class Stored:
    """The last message of a subject: its value, stream sequence and headers."""

    data: bytes
    seq: int
    headers: dict[str, str]

    @property
    def expired(self) -> bool:
        """Whether the value's own expiry has passed."""
        return has_expired(self.headers)


def has_expired(headers: Headers) -> bool:
    """Whether a message's own expiry (header `Conveyor-Expires`) has passed."""
    expires = (headers or {}).get(EXPIRES)
    return expires is not None and float(expires) <= time.time()


def expiry(ttl: float | None) -> dict[str, str]:
    """Headers giving a value an expiry `ttl` seconds from now (none for None)."""
    return {} if ttl is None else {EXPIRES: repr(time.time() + max(ttl, 0.001))}


class WrongSequence(BrokerError):
    """A compare-and-set publish lost: the subject's last sequence was not the expected one."""


class NatsClient:
    """One NATS server (or cluster) seen through a name prefix.

    Args:
        url: `nats://[user:password@]host:4222` (or `tls://`); several separated by commas.
        prefix: the start of every stream name and subject, so several apps share one server.

    Raises:
        ConfigurationError: the prefix has characters other than letters, digits, - and _, or
            a server URL is not a NATS one.
    """

    def __init__(self, url: str, prefix: str = "conveyor") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
            bad = f"invalid NATS prefix {prefix!r}: use letters, digits, - and _"
            raise ConfigurationError(bad)
        self.prefix, self.safe_url = prefix, ",".join(safe_url(u) for u in url.split(","))
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        for server in self.servers:
            if urlsplit(server).scheme not in ("nats", "tls", "ws", "wss"):
                raise ConfigurationError(f"not a NATS URL: {safe_url(server)!r}")
        self._conns = PerLoop(lambda _loop: LoopConn(self.servers), LoopConn.close)
        self._streams_ready = False
        self._consumers: set[tuple[str, str, str]] = set()  # (stream kind, name, config)

    def stream(self, kind: str) -> str:
        """The name of one of the app's streams (`STREAM_SETTINGS`)."""
        return f"{self.prefix}_{kind}"

    def subject(self, *tokens: str) -> str:
        """`prefix.token.token`; tokens must already be escaped."""
        return ".".join((self.prefix, *tokens))

    # -- connections --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Translate a lost or unreachable server into `BrokerConnectionError`."""
        try:
            yield
        except CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None

    async def connection(self) -> NatsConnection:
        """This loop's nats-py connection, connecting if needed."""
        with self._reaching():
            return await self._conns.here().connection()

    async def loop_conn(self) -> LoopConn:
        """This loop's connection with its long polls, subscribed to the nudges on `P.n.>`."""
        with self._reaching():
            return await self._conns.here().wake_on(self.subject("n", ">"))

    async def startup(self) -> None:
        """Connect and create the app's streams (once per client)."""
        await self.connection()
        if not self._streams_ready:
            await asyncio.gather(*(self._add_stream(kind) for kind in STREAM_SETTINGS))
            self._streams_ready = True

    async def _add_stream(self, kind: str) -> None:
        name, settings = self.stream(kind), STREAM_SETTINGS[kind]
        subjects = [self.subject(s, ">") for s in settings["subjects"]]
        config = {"storage": "file", "allow_direct": True, "discard": "old", **settings}
        config |= {"name": name, "subjects": subjects}
        try:
            await self.api(f"STREAM.CREATE.{name}", config)
        except BrokerError as exc:
            if "overlap" in str(exc):
                raise await self._overlap(name, subjects, exc) from None
            if "already in use" not in str(exc):
                raise
            await self.api(f"STREAM.UPDATE.{name}", config)

    async def _overlap(self, name: str, subjects: list[str], exc: BrokerError) -> BrokerError:
        """`exc` naming the streams that already hold `subjects` (another app's, often)."""
        holders: set[str] = set()
        for subject in subjects:
            with contextlib.suppress(BrokerError):
                answer = await self.api("STREAM.NAMES", {"subject": subject})
                holders.update(answer.get("streams") or [])
        if not (holders := holders - {name}):
            return exc
        return BrokerError(
            f"{exc}: stream {name} needs {', '.join(subjects)}, held by stream(s)"
            f" {', '.join(sorted(holders))}; give this app another prefix (?prefix=)"
        )

    async def ensure_consumer(self, kind: str, name: str, config: dict[str, Any]) -> None:
        """Create (or update) a durable pull consumer, once per client: the server keeps it."""
        key = (kind, name, json.dumps(config, sort_keys=True))
        if key not in self._consumers:
            stream = self.stream(kind)
            body = {"stream_name": stream, "config": {"durable_name": name, **config}}
            await self.api(f"CONSUMER.DURABLE.CREATE.{stream}.{name}", body)
            self._consumers.add(key)

    async def close(self) -> None:
        """Close this loop's connection, and ask the other running loops to close theirs."""
        await self._conns.close_all(REQUEST_TIMEOUT)

    def connection_error(self, exc: BaseException) -> BrokerConnectionError:
        """The error a caller sees when the server cannot be reached."""
        return BrokerConnectionError(f"cannot reach NATS at {self.safe_url}: {named_line(exc)}")

    def refused(self, what: str, error: Any) -> BrokerError:
        """The error a caller sees when JetStream refuses a request."""
        return BrokerError(f"NATS at {self.safe_url} refused {what}: {error}")

    # -- requests -----------------------------------------------------------------------------

    async def request(self, subject: str, payload: bytes = b"", headers: Headers = None) -> Msg:
        """One request/reply round trip, errors translated (inline, not `_reaching`: this is
        every `kiq`'s path)."""
        nc = await self.connection()
        try:
            return await nc.request(subject, payload, timeout=REQUEST_TIMEOUT, headers=headers)
        except CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None
        except NatsError as exc:  # a payload over the server's limit, a bad subject
            raise self.refused("a request", named_line(exc)) from None

    async def api(self, call: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call `$JS.API.<call>` with a JSON body; raise `BrokerError` on an API error."""
        payload = b"" if body is None else json.dumps(body).encode()
        reply = await self.request(f"$JS.API.{call}", payload)
        return self._answer(reply, call.split(".")[0].lower())

    async def publish(self, subject: str, data: bytes, headers: Headers = None) -> int:
        """Publish to a stream and wait for its ack; the message's stream sequence.

        Raises:
            WrongSequence: an expected last subject sequence (`EXPECT`) did not match.
        """
        reply = await self.request(subject, data, headers or None)
        return int(self._answer(reply, "a publish", subject)["seq"])

    def _answer(self, reply: Msg, what: str, subject: str = "") -> dict[str, Any]:
        answer: dict[str, Any] = _json(reply.data)
        if error := answer.get("error"):
            if error.get("err_code") == 10071 and subject:  # a wrong last sequence
                raise WrongSequence(subject)
            code = error.get("err_code", "?")
            raise self.refused(what, f"{error.get('description', error)} (code {code})")
        return answer

    async def get(self, kind: str, subject: str) -> Stored | None:
        """The last message of `subject` in a stream (a direct get), or None."""
        return _stored(await self.request(f"$JS.API.DIRECT.GET.{self.stream(kind)}.{subject}"))

    async def get_next(self, kind: str, seq: int, subjects: str) -> Stored | None:
        """The first message at or after `seq` on `subjects` (a direct get), or None."""
        payload = json.dumps({"seq": seq, "next_by_subj": subjects}).encode()
        return _stored(await self.request(f"$JS.API.DIRECT.GET.{self.stream(kind)}", payload))

    async def purge(self, kind: str, subject: str) -> int:
        """Remove every message of `subject` (wildcards allowed); how many."""
        answer = await self.api(f"STREAM.PURGE.{self.stream(kind)}", {"filter": subject})
        return int(answer.get("purged", 0))

    async def delete(self, kind: str, seq: int) -> bool:
        """Remove one message by sequence; False when it was not there."""
        try:
            await self.api(f"STREAM.MSG.DELETE.{self.stream(kind)}", {"seq": seq, "no_erase": True})
        except BrokerError as exc:
            if "not found" in str(exc) or "10057" in str(exc):
                return False
            raise
        return True

    async def paged(self, call: str, field: str, **body: Any) -> dict[str, Any]:
        """Every entry of a paged listing (`STREAM.INFO`'s subjects, `CONSUMER.LIST`), by key."""
        found: dict[str, Any] = {}
        while True:
            answer = await self.api(call, {**body, "offset": len(found)})
            page = answer.get("state", answer).get(field) or {}
            found.update(page if isinstance(page, dict) else ((e["name"], e) for e in page))
            if not page or len(found) >= int(answer.get("total", 0)):
                return found

    async def subject_counts(self, kind: str, subjects: str) -> dict[str, int]:
        """Messages per subject matching `subjects`, for the subjects holding any."""
        call = f"STREAM.INFO.{self.stream(kind)}"
        return await self.paged(call, "subjects", subjects_filter=subjects)

    async def pull(self, kind: str, consumer: str, batch: int) -> list[Msg]:
        """Lease up to `batch` messages from a durable pull consumer without waiting.

        nats-server 2.9 may leave such a request unanswered when a message the consumer had
        not delivered was deleted: a consumer info makes it count again, and the pull is
        sent once more.
        """
        for wait in (_PULL_WAIT, REQUEST_TIMEOUT):
            got, answered = await self._pull(kind, consumer, batch, wait)
            if got or answered:
                return got
            try:
                await self.api(f"CONSUMER.INFO.{self.stream(kind)}.{consumer}")
            except BrokerError:  # deleted: made again by the next `ensure_consumer`
                self._consumers = {c for c in self._consumers if c[:2] != (kind, consumer)}
                raise
        raise self.connection_error(TimeoutError("no answer to a pull"))

    async def _pull(self, kind: str, name: str, batch: int, wait: float) -> tuple[list[Msg], bool]:
        nc = await self.connection()
        got: list[Msg] = []
        done = asyncio.get_running_loop().create_future()  # awaited without a task of its own

        async def collect(msg: Msg) -> None:
            if msg.reply and msg.reply.startswith("$JS.ACK."):
                got.append(msg)
                if len(got) < batch:
                    return
            if not done.done():  # a status (404 no messages, 408) or the batch is full
                done.set_result(None)

        with self._reaching():
            sub = await nc.subscribe(inbox := nc.new_inbox(), cb=collect)
            try:
                request = json.dumps({"batch": batch, "no_wait": True}).encode()
                subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream(kind)}.{name}"
                await nc.publish(subject, request, reply=inbox)
                await asyncio.wait_for(done, wait)
            except TimeoutError:
                return got, False
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        return got, True

    async def send(self, subject: str, data: bytes) -> None:
        """Publish without waiting for an answer (acks, nudges): the server handles a
        connection's messages in order, so a later request on this loop sees its effect."""
        nc = await self.connection()
        with self._reaching():
            await nc.publish(subject, data)

    async def ack(self, msg: Msg, kind: bytes = b"+ACK") -> None:
        """Acknowledge (or `-NAK`, `+WPI`, `+TERM`) a leased message; no reply is awaited."""
        await self.send(msg.reply, kind)

    async def flushed(self) -> None:
        """Wait until the server has handled everything this loop sent (a ping round trip)."""
        nc = await self.connection()
        with self._reaching():
            await nc.flush(timeout=int(REQUEST_TIMEOUT))


def _stored(reply: Msg) -> Stored | None:
    headers = dict(reply.headers or {})
    if (status := headers.get("Status")) == "404":
        return None
    if status is not None:
        raise BrokerError(f"NATS direct get failed: {status} {headers.get('Description', '')}")
    return Stored(reply.data, int(headers.get("Nats-Sequence", 0)), headers)
