"""The shared state of an app, written once on the `StateStore` primitives: cancel requests, task
status, `unique_for`, rate limits, claims (schedule fires, workflow steps), heartbeats, counters
and stored schedules. Every key conveyor keeps in a state store is made here:

- `cancel:<task id>`: a cancel request for a running task; kept `CANCEL_TTL`.
- `status:<task id>`: `retrying` while a retry waits, or `running` on a transport that cannot
  locate its messages; kept for the result TTL.
- `unique:<task id>`: the first send of a `unique_for` task; kept `unique_for`.
- `rate:<task name>`: the grants of a `rate_limit` window (the engine's own layout).
- `claim:fire:<schedule id>:<ms>`: a scheduler's claim of one fire; `claim:step:<step id>`: a
  workflow step's claim of what follows it. Each holds the time it was taken, then `sent`;
  `claim:<name>:<time>` is the takeover of a claim whose holder died.
- `group:<workflow id>-<path>`: the set of finished members of a workflow's group.
- `worker:<host:pid>`: a worker's heartbeat (`Heartbeat`, JSON); kept three beats.
- `stats:<counter>:<task name>`: counts summed over every worker (`COUNTERS`, `BUCKETS`).
- `recent:<host:pid>`: a worker's recent and failed tasks (JSON); kept `RECENT_TTL`.
- `history:<series>`: the dashboard's points of one series (`conveyor.history`); kept as long
  as the series spans.
- `sched:def:<id>` and `sched:last:<id>`: a stored schedule (JSON) and its last fire time.
- `amqp:<prefix>:...`: the RabbitMQ engine's index of its messages (docs/engines/amqp.md).

Claims are how "send once" is written once: `claim` (and `give_back` when the send fails) keeps
every other sender off a send; `claim_send` also lets a sender that died before it marked the
send done be taken over, so the send happens exactly once (schedule fires, workflow steps).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec

from conveyor.engines.base import StateStore

__all__ = [
    "BUCKETS",
    "CANCEL_TTL",
    "COUNTERS",
    "COUNTER_HELP",
    "RECENT_TTL",
    "SENT",
    "Heartbeat",
    "State",
]

#: Seconds a cancel request waits for the worker running its task.
CANCEL_TTL: Final = 3600.0
#: Seconds a stopped worker's recent tasks stay visible.
RECENT_TTL: Final = 3600.0
#: The value of a `claim_send` claim once what it guards was sent.
SENT: Final = b"sent"
#: The counters kept per task name (`stats:<counter>:<task name>`); `duration_us` and
#: `bucket:<i>` (runs per duration bucket) follow them.
COUNTERS: Final = ("received", "succeeded", "failed", "retried", "cancelled")
#: What each counter counts (the help of the metrics `conveyor.prometheus` and `conveyor.otel`
#: export).
COUNTER_HELP: Final = {
    "received": "Task runs started by workers.",
    "succeeded": "Task runs that succeeded.",
    "failed": "Tasks that failed for good (no retry left).",
    "retried": "Task runs that failed and were scheduled again.",
    "cancelled": "Task runs cancelled on request.",
}
#: Upper bounds (seconds) of the duration histogram's buckets; one more bucket holds the rest.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Seconds before a caller whose claim is held by a failing sender tries again.
_RETRY: Final = 1.0


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """What a live worker process says about itself every few seconds, and within a second of
    a change in what it runs: `running` holds task ids, `running_names` their task names in the
    same order."""

    name: str
    host: str
    pid: int
    queues: list[str]
    running: list[str]
    processed: int
    started: float
    seen: float
    rss_mb: float = 0.0
    concurrency: int = 0
    counters: dict[str, int] = msgspec.field(default_factory=dict)
    running_names: list[str] = msgspec.field(default_factory=list)


_HEARTBEAT = msgspec.json.Decoder(Heartbeat)


class State:
    """The app's shared state over one `StateStore` (keys in this module's docstring)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    # -- cancel requests ----------------------------------------------------------------------

    async def request_cancel(self, task_id: str) -> None:
        """Ask the worker running `task_id` to stop it."""
        await self.store.set(f"cancel:{task_id}", b"1", CANCEL_TTL)

    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these (running) task ids were asked to cancel."""
        if not task_ids:
            return set()
        found = await self.store.get_many([f"cancel:{t}" for t in task_ids])
        return {t for t, value in zip(task_ids, found, strict=True) if value is not None}

    async def forget_cancel(self, task_id: str) -> None:
        """Drop a cancel request once its task has ended."""
        await self.store.delete(f"cancel:{task_id}")

    # -- task status --------------------------------------------------------------------------

    async def mark(self, task_id: str, status: str, ttl: float | None) -> None:
        """Record a status the transport cannot tell (`retrying`, or `running`)."""
        await self.store.set(f"status:{task_id}", status.encode(), ttl)

    async def marked(self, task_id: str) -> str | None:
        """The status recorded with `mark`, or None."""
        data = await self.store.get(f"status:{task_id}")
        return None if data is None else data.decode(errors="replace")

    # -- claims ---------------------------------------------------------------------------------

    async def claim(self, key: str, ttl: float) -> bool:
        """Take `claim:<key>` for `ttl` seconds; False when someone holds it."""
        return await self.store.set_nx(f"claim:{key}", repr(time.time()).encode(), ttl)

    async def give_back(self, key: str) -> None:
        """Drop a claim whose send failed, so it may be taken again."""
        await self.store.delete(f"claim:{key}")

    async def claim_send(
        self, key: str, ttl: float, stale_after: float, was_sent: Callable[[], Awaitable[bool]]
    ) -> float | None:
        """Claim the one send guarded by `key`.

        Returns None when this caller is to send (then `mark_sent`, or `give_back` when the send
        failed); 0.0 when it was sent; else the seconds to wait for another holder. A claim held
        longer than `stale_after` and never marked sent belonged to a sender that died: one
        caller takes it over, and sends unless `was_sent()` finds the send arrived after all.
        """
        now = time.time()
        if await self.claim(key, ttl):
            return None
        held = await self.store.get(f"claim:{key}")
        if held == SENT:
            return 0.0
        if held is None:  # its holder's send just failed and gave it back
            return _RETRY
        try:
            age = now - float(held)
        except ValueError:
            age = stale_after  # not a time: nobody can be still sending
        if age < stale_after:
            return max(stale_after - age, _RETRY)
        if not await self.store.set_nx(f"claim:{key}:{held.decode()}", b"1", ttl):
            return stale_after  # another caller takes it over
        if await was_sent():
            await self.mark_sent(key, ttl)
            return 0.0
        await self.store.set(f"claim:{key}", repr(now).encode(), ttl)
        return None

    async def mark_sent(self, key: str, ttl: float) -> None:
        """Mark a `claim_send` claim as sent: every later claim of it finds it done."""
        await self.store.set(f"claim:{key}", SENT, ttl)

    # -- unique_for and rate limits -------------------------------------------------------------

    async def claim_unique(self, task_id: str, seconds: float) -> bool:
        """Take the `unique_for` window of `task_id`; False when a send holds it."""
        return await self.store.set_nx(f"unique:{task_id}", b"1", seconds)

    async def release_unique(self, task_id: str) -> None:
        """Give a `unique_for` window back: its send failed, so a retry must not be deduped."""
        await self.store.delete(f"unique:{task_id}")

    async def rate_wait(self, task_name: str, limit: int, period: float) -> float:
        """Take a grant of `task_name`'s rate limit: 0.0, or the seconds until one is free."""
        return await self.store.window_acquire(f"rate:{task_name}", limit, period)

    # -- workflow groups ------------------------------------------------------------------------

    async def join_group(self, group: str, member: int, ttl: float | None) -> int:
        """Count `member` of a workflow's group as finished (once); the number finished."""
        return await self.store.set_add(f"group:{group}", str(member), ttl)

    # -- heartbeats, counters and recent tasks ---------------------------------------------------

    async def beat(self, heartbeat: Heartbeat, ttl: float) -> None:
        """Publish a worker's heartbeat, live for `ttl` seconds."""
        await self.store.set(f"worker:{heartbeat.name}", msgspec.json.encode(heartbeat), ttl)

    async def forget_worker(self, name: str) -> None:
        """Drop a stopped worker's heartbeat."""
        await self.store.delete(f"worker:{name}")

    async def heartbeats(self) -> list[Heartbeat]:
        """The heartbeats of live workers (unreadable ones are skipped)."""
        found = []
        for raw in (await self.store.scan("worker:")).values():
            try:
                found.append(_HEARTBEAT.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a heartbeat from another version: skip rather than fail the listing
        return sorted(found, key=lambda beat: beat.name)

    async def add_count(self, counter: str, task_name: str, delta: int) -> None:
        """Add `delta` to the cluster-wide `counter` of `task_name`."""
        await self.store.incr(f"stats:{counter}:{task_name}", delta)

    async def counts(self) -> dict[str, bytes]:
        """Every counter as `<counter>:<task name>` -> its raw value."""
        found = await self.store.scan("stats:")
        return {key.removeprefix("stats:"): value for key, value in found.items()}

    async def put_recent(self, worker: str, data: bytes) -> None:
        """Publish a worker's recent and failed tasks."""
        await self.store.set(f"recent:{worker}", data, RECENT_TTL)

    async def recent(self) -> list[bytes]:
        """Every worker's recent-task lists, as published."""
        return list((await self.store.scan("recent:")).values())

    async def put_history(self, series: str, data: bytes, ttl: float) -> None:
        """Store the dashboard's points of `series`, replacing them."""
        await self.store.set(f"history:{series}", data, ttl)

    async def history(self, series: str) -> bytes | None:
        """The dashboard's points of `series`, as stored, or None."""
        return await self.store.get(f"history:{series}")

    # -- stored schedules ----------------------------------------------------------------------

    async def put_schedule(self, schedule_id: str, entry: bytes, last_fire: float) -> None:
        """Store a schedule with the time its next fire is counted from."""
        await self.store.set(f"sched:last:{schedule_id}", repr(last_fire).encode())
        await self.store.set(f"sched:def:{schedule_id}", entry)

    async def drop_schedule(self, schedule_id: str) -> bool:
        """Delete a stored schedule; True when it existed."""
        existed = await self.store.delete(f"sched:def:{schedule_id}")
        await self.store.delete(f"sched:last:{schedule_id}")
        return existed

    async def schedule(self, schedule_id: str) -> bytes | None:
        """A stored schedule, or None when it was removed."""
        return await self.store.get(f"sched:def:{schedule_id}")

    async def schedules(self) -> dict[str, bytes]:
        """Every stored schedule by id."""
        found = await self.store.scan("sched:def:")
        return {key.removeprefix("sched:def:"): value for key, value in found.items()}

    async def last_fire(self, schedule_id: str) -> float | None:
        """When a schedule last fired, or None when unknown."""
        raw = await self.store.get(f"sched:last:{schedule_id}")
        try:
            return None if raw is None else float(raw)
        except ValueError:
            return None

    async def set_last_fire(self, schedule_id: str, at: float) -> None:
        """Record when a schedule fired."""
        await self.store.set(f"sched:last:{schedule_id}", repr(at).encode())
