"""The ZeroMQ transport: fire-and-forget, from one sending process to any number of workers.

The sending process binds a PUSH socket on `zmq_pub_host`; each worker connects a PULL socket to
`zmq_sub_host`. PUSH hands each message to exactly one connected worker, round-robin (the seed's
PUB/SUB would run every task on every worker). A worker reads the socket only when it has free
capacity and keeps what it read in an in-process `MemoryTransport`, which gives priorities,
delays, retries and leases inside that worker. Nothing is durable: see `docs/engines/zmq.md`.

Small shared state (rate limits, heartbeats, cancel requests) lives in the state store
(`DelegatedState`). The sockets and the in-process queues live in a thread of their own
(`IoThread`): every call reaches them through it, so they need no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from conveyor.errors import BrokerConnectionError, BrokerError
from conveyor.transports._delegated import DelegatedState, IoThread, reset_after_fork
from conveyor.transports.base import DeadLetter, Delivery, Outgoing, QueueStats, TransportState
from conveyor.transports.memory import MemoryTransport

try:
    import zmq
    import zmq.asyncio
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the ZeroMQ engine needs the zmq extra: pip install 'conveyor[zmq]'") from exc

__all__ = ["ZmqTransport"]

_CANCEL_TTL = 3600.0
#: Messages ZeroMQ may queue toward one worker before PUSH skips it for the next.
_HIGH_WATER_MARK = 16
#: How often an idle receive looks at this worker's delayed or released messages.
_LOCAL_POLL_SECONDS = 0.05


class ZmqTransport(DelegatedState):
    """Messages over ZeroMQ PUSH/PULL; everything else in this process or the state store.

    Args:
        zmq_pub_host: where the sending process binds, e.g. `tcp://0.0.0.0:5555`.
        zmq_sub_host: where workers connect, e.g. `tcp://localhost:5555`.
        state_url: shared state (`redis://...`, `sqlite:///state.db`); memory when None.
        lease_seconds: lease of a delivery inside its worker.
        send_timeout: seconds a send waits for a connected worker before `BrokerError`.
        connect_wait: after binding, how long the first send waits for workers to reconnect,
            so the first messages are spread over all of them.
    """

    tracks_state = False

    def __init__(
        self,
        zmq_pub_host: str = "tcp://0.0.0.0:5555",
        zmq_sub_host: str = "tcp://localhost:5555",
        *,
        state_url: str | None = None,
        lease_seconds: float = 30.0,
        send_timeout: float = 10.0,
        connect_wait: float = 0.3,
    ) -> None:
        self.zmq_pub_host, self.zmq_sub_host = zmq_pub_host, zmq_sub_host
        self.safe_url = f"zmq://{zmq_sub_host.partition('://')[2]}"
        self.lease_seconds = lease_seconds
        self.send_timeout, self.connect_wait = send_timeout, connect_wait
        self.init_state(state_url)
        self.local = MemoryTransport(lease_seconds=lease_seconds)
        self._io = IoThread("conveyor-zmq")
        self._context: Any = None
        self._push: Any = None
        self._pull: Any = None
        self.consumer = False  # set by the first receive: this process's sends stay here
        reset_after_fork(self._forget)

    def _forget(self) -> list[Any]:
        """In a forked child: drop the parent's context, sockets and in-process queues."""
        dropped = [self._context, self._push, self._pull, self.local]
        self._context = self._push = self._pull = None
        self.local = MemoryTransport(lease_seconds=self.lease_seconds)
        self.consumer = False
        return dropped

    async def startup(self) -> None:
        """Start the state store; sockets open on first use."""
        await self.start_state()

    async def shutdown(self) -> None:
        """Close the sockets (queued sends get `send_timeout` to leave) and the state store."""
        await self._io.run(self._close())
        await self.stop_state()
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
                return got
            if await self._read(pull, max_count):
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self._wait(pull, left)

    async def _read(self, pull: Any, count: int) -> int:
        """Move up to `count` waiting messages from the socket into the local queues."""
        read: list[Outgoing] = []
        while len(read) < count:
            try:
                frames = await pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            task_id, queue, priority, eta, body = frames
            due = float(eta) or None
            read.append(Outgoing(task_id.decode(), queue.decode(), body, int(priority), due))
        if read:
            await self.local.publish(read)
        return len(read)

    async def _wait(self, pull: Any, seconds: float) -> None:
        """Sleep until the socket has a message or `seconds` pass; in short slices while this
        worker holds messages that a delay or a release may make ready."""
        if await self.local.queue_stats():
            seconds = min(seconds, _LOCAL_POLL_SECONDS)
        await pull.poll(max(int(seconds * 1000), 1), zmq.POLLIN)

    # -- settling: inside this worker -------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget deliveries (nothing to tell the sender)."""
        await self._io.run(self.local.ack(deliveries))

    async def release(
        self,
        delivery: Delivery,
        *,
        body: bytes | None = None,
        delay: float = 0.0,
        retrying: bool = False,
    ) -> None:
        """Put a delivery back in this worker (a retry runs here, after `delay`)."""
        await self._io.run(self.local.release(delivery, body=body, delay=delay, retrying=retrying))

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew leases inside this worker."""
        await self._io.run(self.local.extend(deliveries))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Keep a delivery aside in this worker's memory."""
        await self._io.run(self.local.dead_letter(delivery, reason))

    # -- cancellation, state, inspection: this process only -----------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Drop it if this process holds it waiting; else ask whoever runs it to stop."""
        return await self._io.run(self._cancel(task_id))

    async def _cancel(self, task_id: str) -> bool:
        if await self.local.cancel(task_id):
            return True
        await self.state_store.kv_set(f"zmq:cancel:{task_id}", b"1", _CANCEL_TTL)
        return False

    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these task ids were asked to cancel, here or through the state store."""
        return await self._io.run(self._cancel_requested(task_ids))

    async def _cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        wanted = await self.local.cancel_requested(task_ids)
        found = await asyncio.gather(
            *(self.state_store.kv_get(f"zmq:cancel:{task_id}") for task_id in task_ids)
        )
        return wanted | {t for t, v in zip(task_ids, found, strict=True) if v is not None}

    async def state(self, task_id: str) -> TransportState | None:
        """Where the message is, when this process holds it."""
        return await self._io.run(self.local.state(task_id))

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of what this process holds."""
        return await self._io.run(self.local.queue_stats())

    async def purge(self, queue: str | None = None) -> int:
        """Drop what this process holds waiting."""
        return await self._io.run(self.local.purge(queue))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of this process."""
        return await self._io.run(self.local.dead_letters(limit))

    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Requeue dead letters of this process, to run here."""
        return await self._io.run(self.local.requeue_dead(task_ids))
