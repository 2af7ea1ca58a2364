"""The ZeroMQ transport: fire-and-forget, from one sending process to any number of workers.

The sending process binds a PUSH socket on `zmq_pub_host`; each worker connects a PULL socket to
`zmq_sub_host`. PUSH hands each message to exactly one connected worker, round-robin (the seed's
PUB/SUB would run every task on every worker). A worker reads the socket only when it has free
capacity and keeps what it read in a `LocalQueue`, which gives priorities, delays, retries,
leases and dead letters inside that worker. Nothing is durable: see `docs/engines/zmq.md`.

A frame is `[task id, queue, priority, eta, body]`. Frames that do not read as one (another
count of parts, a priority or eta that is not a number, an id or queue that is not UTF-8) go
into the local queue under a stand-in id of their own and come out of `receive` as a delivery
with its `problem` (task id "" unless the id frame read), to be dead-lettered locally.

The sockets and the local queue live in a thread of their own (`IoThread`): every call reaches
them through it, so they need no lock. The engine keeps no state: `locate` sees only this
process's local queue, so `locates` is False and the worker records a running task's status.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from conveyor.engines.base import (
    DEFAULT_LEASE_SECONDS,
    DeadLetter,
    Delivery,
    Location,
    MessageTransport,
    Outgoing,
    QueueStats,
    StateStore,
)
from conveyor.engines.localqueue import LocalQueue
from conveyor.engines.loops import IoThread, reset_after_fork
from conveyor.errors import BrokerConnectionError, BrokerError

try:
    import zmq
    import zmq.asyncio
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the ZeroMQ engine needs the zmq extra: pip install 'conveyor[zmq]'") from exc

__all__ = ["ZmqTransport"]

log = logging.getLogger("conveyor.zmq")

#: Messages ZeroMQ may queue toward one worker before PUSH skips it for the next.
_HIGH_WATER_MARK = 16
#: How often an idle receive looks at this worker's delayed or released messages.
_LOCAL_POLL_SECONDS = 0.05
_PER_PROCESS_WARNING = (
    "%s keeps no shared state: rate limits, unique_for, cancel requests, heartbeats and results "
    "are per-process; pass state_url (redis://... or sqlite:///state.db) to share them"
)


def _parse(frames: list[bytes]) -> Outgoing:
    """The message of one read's frames.

    Raises:
        ValueError: they do not read as `[task id, queue, priority, eta, body]`.
    """
    if len(frames) != 5:
        raise ValueError(f"it has {len(frames)} frames, not 5")
    task_id, queue, priority, eta, body = frames
    try:
        due = float(eta) or None
        return Outgoing(task_id.decode(), queue.decode(), body, int(priority), due)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise ValueError(f"its frames do not read as a message ({exc})") from None


class ZmqTransport(MessageTransport):
    """Messages over ZeroMQ PUSH/PULL; leases, delays and dead letters in the receiving worker.

    Args:
        zmq_pub_host: where the sending process binds, e.g. `tcp://0.0.0.0:5555`.
        zmq_sub_host: where workers connect, e.g. `tcp://localhost:5555`.
        store: the state store the engine is paired with: only read to warn, once at startup,
            when it is per-process.
        lease_seconds: lease of a delivery inside its worker.
        send_timeout: seconds a send waits for a connected worker before `BrokerError`.
        connect_wait: after binding, how long the first send waits for workers to reconnect,
            so the first messages are spread over all of them.
    """

    locates = False

    def __init__(
        self,
        zmq_pub_host: str,
        zmq_sub_host: str,
        *,
        store: StateStore,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        send_timeout: float = 10.0,
        connect_wait: float = 0.3,
    ) -> None:
        self.zmq_pub_host, self.zmq_sub_host = zmq_pub_host, zmq_sub_host
        self.safe_url = f"zmq://{zmq_sub_host.partition('://')[2]}"
        self.lease_seconds = lease_seconds
        self.send_timeout, self.connect_wait = send_timeout, connect_wait
        self._store = store
        self._warned = False
        self.local = LocalQueue(lease_seconds)
        self._problems: dict[str, tuple[str, str]] = {}  # stand-in id -> (task id, problem)
        self._strays = itertools.count()
        self._io = IoThread("conveyor-zmq")
        self._context: Any = None
        self._push: Any = None
        self._pull: Any = None
        self.consumer = False  # set by the first receive: this process's sends stay here
        reset_after_fork(self._forget)

    def _forget(self) -> list[Any]:
        """In a forked child: drop the parent's context, sockets and local queue."""
        dropped = [self._context, self._push, self._pull, self.local]
        self._context = self._push = self._pull = None
        self.local, self._problems = LocalQueue(self.lease_seconds), {}
        self.consumer = False
        return dropped

    async def startup(self) -> None:
        """Warn once when the state store is per-process; sockets open on first use."""
        if not self._store.shared and not self._warned:
            self._warned = True
            log.warning(_PER_PROCESS_WARNING, type(self).__name__)

    async def shutdown(self) -> None:
        """Close the sockets (queued sends get `send_timeout` to leave)."""
        await self._io.run(self._close())
        self._io.stop()

    async def _close(self) -> None:
        for sock, linger in ((self._push, self.send_timeout), (self._pull, 0)):
            if sock is not None:
                sock.close(linger=int(linger * 1000))
        if self._context is not None:
            self._context.term()
        self._context = self._push = self._pull = None

    def _ctx(self) -> Any:
        if self._context is None:
            self._context = zmq.asyncio.Context()
        return self._context

    # -- sending --------------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Send each message to one worker; a worker's own sends stay in that worker."""
        await self._io.run(self._publish(messages))

    async def _publish(self, messages: Sequence[Outgoing]) -> None:
        if self.consumer:
            await self.local.publish(messages)
            return
        push = await self._pusher()
        for m in messages:
            frames = [m.task_id.encode(), m.queue.encode(), b"%d" % m.priority,
                      repr(m.eta or 0.0).encode(), m.body]  # fmt: skip
            try:
                await asyncio.wait_for(push.send_multipart(frames, copy=False), self.send_timeout)
            except TimeoutError:
                raise BrokerConnectionError(
                    f"no worker connected to {self.zmq_pub_host} took a message"
                    f" within {self.send_timeout} s"
                ) from None

    async def _pusher(self) -> Any:
        if self._push is not None:
            return self._push
        push = self._ctx().socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, _HIGH_WATER_MARK)
        try:
            push.bind(self.zmq_pub_host)
        except zmq.ZMQError as exc:
            push.close(linger=0)
            raise BrokerError(
                f"cannot bind {self.zmq_pub_host} to send ({exc}): ZeroMQ allows one sending"
                " process per address"
            ) from None
        self._push = push
        await asyncio.sleep(self.connect_wait)  # let waiting workers' PULL sockets reconnect
        return push

    # -- receiving ------------------------------------------------------------------------------

    def _puller(self) -> Any:
        if self._pull is None:
            pull = self._ctx().socket(zmq.PULL)
            pull.setsockopt(zmq.RCVHWM, _HIGH_WATER_MARK)
            pull.setsockopt(zmq.RECONNECT_IVL, 50)
            pull.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            pull.connect(self.zmq_sub_host)
            self._pull = pull
        return self._pull

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, reading the socket only for free capacity.

        Every queue is read: one ZeroMQ address carries them all (see the docs).
        """
        if max_count <= 0:
            return []
        return await self._io.run(self._receive(max_count, timeout))

    async def _receive(self, max_count: int, timeout: float) -> list[Delivery]:
        self.consumer = True
        pull = self._puller()
        deadline = time.monotonic() + timeout
        while True:
            got = await self.local.receive([], max_count, 0)
            if got:
                return [self._outward(delivery) for delivery in got]
            if await self._read(pull, max_count):
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self._wait(pull, left)

    async def _read(self, pull: Any, count: int) -> int:
        """Move up to `count` waiting messages from the socket into the local queue."""
        read: list[Outgoing] = []
        while len(read) < count:
            try:
                frames = await pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                read.append(_parse(frames))
            except ValueError as exc:
                read.append(self._stray(frames, str(exc)))
        if read:
            await self.local.publish(read)
        return len(read)

    def _stray(self, frames: list[bytes], problem: str) -> Outgoing:
        """Frames that are no message, queued under a stand-in id with their problem."""
        task_id = ""
        if len(frames) == 5:
            task_id = frames[0].decode(errors="replace")
        stand_in = f"<zmq frames {next(self._strays)}>"
        self._problems[stand_in] = (task_id, problem)
        return Outgoing(stand_in, "", b"".join(frames))

    def _outward(self, delivery: Delivery) -> Delivery:
        """A local delivery as the caller sees it: a stray one with its task id and problem, and
        the local delivery as its receipt."""
        found = self._problems.get(delivery.task_id)
        if found is None:
            return delivery
        return replace(delivery, task_id=found[0], receipt=delivery, problem=found[1])

    def _inward(self, delivery: Delivery) -> Delivery:
        """The local delivery of one `receive` returned."""
        return delivery.receipt if isinstance(delivery.receipt, Delivery) else delivery

    async def _wait(self, pull: Any, seconds: float) -> None:
        """Sleep until the socket has a message or `seconds` pass; in short slices while this
        worker holds messages that a delay or a release may make ready."""
        if await self.local.queue_stats():
            seconds = min(seconds, _LOCAL_POLL_SECONDS)
        await pull.poll(max(int(seconds * 1000), 1), zmq.POLLIN)

    # -- settling: inside this worker -------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget deliveries (nothing to tell the sender)."""
        await self._io.run(self._ack([self._inward(d) for d in deliveries]))

    async def _ack(self, local: list[Delivery]) -> None:
        await self.local.ack(local)
        await self._settled(local)

    async def _settled(self, local: list[Delivery]) -> None:
        """Forget the problems of stray entries that have left the local queue."""
        for delivery in local:
            if delivery.task_id in self._problems and not await self.local.locate(delivery.task_id):
                del self._problems[delivery.task_id]

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a delivery back in this worker (a retry runs here, after `delay`)."""
        await self._io.run(self.local.release(self._inward(delivery), body=body, delay=delay))

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew leases inside this worker."""
        await self._io.run(self.local.extend([self._inward(d) for d in deliveries]))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Keep a delivery aside in this worker's memory (a stray one under its stand-in id)."""
        await self._io.run(self._dead_letter(self._inward(delivery), reason))

    async def _dead_letter(self, local: Delivery, reason: str) -> None:
        await self.local.dead_letter(local, reason)
        await self._settled([local])

    # -- inspection and operations: this process only -------------------------------------------

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is, when this process holds it."""
        return await self._io.run(self.local.locate(task_id))

    async def remove(self, task_id: str) -> bool:
        """Drop it if this process holds it waiting or delayed."""
        return await self._io.run(self.local.remove(task_id))

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of what this process holds."""
        return await self._io.run(self.local.queue_stats())

    async def purge(self, queue: str | None = None) -> int:
        """Drop what this process holds waiting."""
        return await self._io.run(self.local.purge(queue))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of this process."""
        return await self._io.run(self.local.dead_letters(limit))

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Forget dead letters of this process."""
        return await self._io.run(self.local.drop_dead(letters))
