"""`Scheduler`: sends each due run of every schedule exactly once, however many run.

Schedules come from two sources: the `schedule=[...]` labels of the broker's tasks, and entries
stored in the broker (`add`, `Task.schedule_by_cron/interval/time`; `conveyor.state` keeps
them). Before sending the run due at time T, a scheduler claims `fire:<id>:<T ms>`
(`State.claim_send`); only the process whose claim succeeds sends it, with the task id
`s-<hash of id>-<T ms>` (the same in every process, so a run is recognisable in results and
logs), and then marks the claim sent. The state store keeps each schedule's last fire time, so
a scheduler that starts again knows what it missed while nobody ran.

A scheduler that finds a fire claimed but not marked sent keeps it (`_State.unsure`) and looks
again at its next ticks: once it is marked, nothing is left to do; a claim older than the
transport's lease that was never marked belonged to a scheduler that died between its claim and
its send, and one scheduler takes it over and sends the run, unless the run's task id shows it
reached the broker after all. A send that raises gives the claim back and the next tick sends the
run again with the same task id, which the engines ignore while the first copy is queued or
running (see `Outgoing`); so a run is doubled only when a send that raised, or a holder that
stalled longer than a lease, had in fact reached the broker and that copy finished first.

Missed runs (due more than `misfire_grace` seconds ago: the scheduler, or every scheduler, was
down or cut off from the broker) are skipped by default (`misfire="skip"`), or caught up with a
single run (`misfire="once"`). A one-off (`Once`) run is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import BrokerError, ConfigurationError, ConveyorError, SerializationError
from conveyor.message import TaskMessage
from conveyor.options import TaskOptions
from conveyor.schedules import Interval, Once, Schedule, ScheduleEntry

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.task import Signature

__all__ = ["FIRING", "ScheduleInfo", "Scheduler"]

log = logging.getLogger("conveyor.scheduler")

#: How long a fire-time claim is kept (at least): other schedulers try the same fire time only
#: while it is on time (`misfire_grace`) or missed by all, which the last fire time tells.
CLAIM_TTL = 300.0
_MAX_PAUSE = 10.0
#: The id of the schedule whose run is being sent, while a scheduler sends it: tracing
#: (`conveyor.otel`) starts a trace for each run, linked to the scheduler's span, rather than
#: making every run of a long-lived scheduler a child of one span.
FIRING: ContextVar[str | None] = ContextVar("conveyor_schedule_firing", default=None)


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as `conveyor inspect schedules` and the dashboard show it."""

    id: str
    task_name: str
    schedule: str
    args: list[Any]
    kwargs: dict[str, Any]
    labels: dict[str, Any]
    stored: bool
    next_fire: datetime | None


@dataclass(slots=True)
class _State:
    cursor: dict[str, float] = field(default_factory=dict)  # fire times up to here are handled
    stored: list[ScheduleEntry] = field(default_factory=list)
    refreshed: float = float("-inf")
    failures: int = 0
    warned: set[str] = field(default_factory=set)  # unreadable stored schedules, logged once
    # Fires another scheduler claimed and has not marked sent yet: claim -> (entry, fire time).
    unsure: dict[str, tuple[ScheduleEntry, float]] = field(default_factory=dict)


class Scheduler:
    """Sends the runs of the label schedules and the stored schedules of `broker`.

    Args:
        broker: the application's broker; its tasks' `schedule` labels are read at each tick.
        misfire: "skip" (default) drops runs missed while no scheduler ran; "once" sends one.
        misfire_grace: seconds (at least 1) a run may be late and still be sent (a stalled
            event loop, a short outage); runs later than that were missed.
        refresh_seconds: how often stored schedules are read again from the broker.

    Raises:
        ConfigurationError: an option is out of range.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        misfire: str = "skip",
        misfire_grace: float = 10.0,
        refresh_seconds: float = 1.0,
    ) -> None:
        if misfire not in ("skip", "once"):
            raise ConfigurationError(f"misfire must be 'skip' or 'once', not {misfire!r}")
        if not misfire_grace >= 1:  # a tick is rarely on the dot: a smaller grace skips runs
            raise ConfigurationError(f"misfire_grace must be at least 1 s, not {misfire_grace!r}")
        self.broker = broker
        self.misfire = misfire
        self.misfire_grace = misfire_grace
        self.refresh_seconds = refresh_seconds
        self._state = _State()
        # With a secret key a stored schedule is signed: one written by someone without the key
        # is never sent (it would be signed and run as if the app had scheduled it).
        self._seal = broker.signer.derive("stored schedule")

    async def startup(self) -> None:
        """Start the broker (and, in subclasses, what else the schedules come from)."""
        await self.broker.startup()

    async def shutdown(self) -> None:
        """Shut the broker down."""
        await self.broker.shutdown()

    # -- stored schedules ---------------------------------------------------------------------

    async def add(
        self, signature: Signature[Any], schedule: Schedule, *, schedule_id: str | None = None
    ) -> str:
        """Store a schedule of `signature` (its args, kwargs and labels) in the broker, under
        `schedule_id` (replacing a schedule stored with that id) or a new id.

        Returns:
            The schedule's id, for `remove`.

        Raises:
            TypeError: the arguments do not fit the task's signature, or (a
                `SerializationError`) cannot be sent: not encodable, too large or too deep.
            ConfigurationError: a known label has a bad value.
        """
        TaskOptions.parse(signature.labels, signature.task_name)
        call = TaskMessage(
            task_id="schedule",
            task_name=signature.task_name,
            labels=dict(signature.labels),
            args=list(signature.args),
            kwargs=dict(signature.kwargs),
        )
        task = self.broker.find_task(signature.task_name)
        if task is not None:
            try:
                task.call_signature.bind(*signature.args, **signature.kwargs)
            except TypeError as exc:
                raise TypeError(f"{task.name}: {exc}") from None
        try:  # what each fire will send: refused now rather than at every fire
            self.broker.codec.encode(call)
        except SerializationError as exc:
            raise SerializationError(f"schedule of {call.task_name}: {exc}") from None
        await self.broker.ensure_started()
        schedule_id = schedule_id or uuid.uuid4().hex
        if isinstance(schedule, Interval) and schedule.anchor == 0.0:
            schedule = Interval(schedule.seconds, anchor=time.time())
        entry = ScheduleEntry(
            id=schedule_id,
            task_name=call.task_name,
            schedule=schedule,
            args=call.args,
            kwargs=call.kwargs,
            labels=call.labels,
            stored=True,
        )
        now = time.time()
        if isinstance(schedule, Once):  # due from its time on, even if that is now or past
            now = min(now, schedule.at - 0.001)
        await self.broker.state.put_schedule(schedule_id, self._seal.sign(entry.to_json()), now)
        self._state.refreshed = float("-inf")
        return schedule_id

    async def remove(self, schedule_id: str) -> bool:
        """Delete a stored schedule; True when it existed. Label schedules cannot be removed."""
        await self.broker.ensure_started()
        existed = await self.broker.state.drop_schedule(schedule_id)
        self._state.refreshed = float("-inf")
        return existed

    async def stored_entries(self) -> list[ScheduleEntry]:
        """The schedules stored in the broker (unreadable ones, and with a secret key unsigned
        ones, are logged once and left out)."""
        await self.broker.ensure_started()
        found, warned = [], self._state.warned
        for schedule_id, raw in (await self.broker.state.schedules()).items():
            try:
                found.append(ScheduleEntry.from_json(self._seal.verify(raw)))
            except (ConfigurationError, SerializationError) as exc:
                level = logging.DEBUG if schedule_id in warned else logging.WARNING
                log.log(level, "skipping schedule %s: %s", schedule_id, exc)
                warned.add(schedule_id)
        return sorted(found, key=lambda e: e.id)

    def label_entries(self) -> list[ScheduleEntry]:
        """The schedules declared in the `schedule` labels of the broker's tasks."""
        tasks = self.broker.get_all_tasks().values()
        return [entry for task in tasks for entry in task.schedules]

    async def list(self) -> list[ScheduleInfo]:
        """Every schedule, label ones first, with its next fire time."""
        now = time.time()
        entries = self.label_entries() + await self.stored_entries()
        return [_info(entry, now) for entry in entries]

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send due runs until `stop` is set, riding out broker outages with backoff."""
        stop = stop or asyncio.Event()
        log.info(
            "scheduler on %s: %d label schedule(s), misfire=%s",
            self.broker.transport.safe_url,
            len(self.label_entries()),
            self.misfire,
        )
        while not stop.is_set():
            pause = await self._guarded_tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        log.info("scheduler stopped")

    async def _guarded_tick(self) -> float:
        state = self._state
        try:
            pause = await self.tick()
        except (ConveyorError, OSError) as exc:
            state.failures += 1
            pause = min(0.2 * 2.0**state.failures, _MAX_PAUSE)
            level = logging.WARNING if state.failures == 1 else logging.DEBUG
            log.log(level, "scheduler: broker unavailable (%s); retrying in %.1f s", exc, pause)
            return pause
        if state.failures:
            log.warning("scheduler: broker reachable again after %d failure(s)", state.failures)
            state.failures = 0
        return pause

    async def tick(self, now: float | None = None) -> float:
        """Send every run due by `now`; return the seconds until the next may be due."""
        state = self._state
        now = time.time() if now is None else now
        if now - state.refreshed >= self.refresh_seconds:
            state.stored = await self.stored_entries()
            state.refreshed = now
        entries = self.label_entries() + state.stored
        live = {entry.id for entry in entries}
        state.cursor = {k: v for k, v in state.cursor.items() if k in live}
        state.unsure = {k: v for k, v in state.unsure.items() if v[0].id in live}
        soonest = now + self.refresh_seconds
        for entry in entries:
            try:
                await self._run_due(entry, now)
                upcoming = entry.schedule.next_after(state.cursor[entry.id])
            except (BrokerError, OSError):
                raise  # an outage: the whole tick is tried again
            except Exception:  # this schedule is broken: skip it, keep the others going
                log.exception("schedule %s of %s failed", entry.id, entry.task_name)
                state.cursor[entry.id] = now
                continue
            if upcoming is not None:
                soonest = min(soonest, upcoming)
        return max(soonest - time.time(), 0.0)

    async def _run_due(self, entry: ScheduleEntry, now: float) -> None:
        for unsure, due in [v for v in self._state.unsure.values() if v[0].id == entry.id]:
            await self._fire(unsure, due)  # claimed by another scheduler: sent since?
        cursor = self._state.cursor.get(entry.id)
        if cursor is None:
            cursor = await self._last_fire(entry, now)
        schedule, grace = entry.schedule, self.misfire_grace
        first = schedule.next_after(cursor)
        if first is not None and first <= now - grace and not isinstance(schedule, Once):
            await self._missed(entry, now)
            cursor = now - grace
        at = schedule.next_after(cursor)
        while at is not None and at <= now:
            await self._fire(entry, at)
            at = schedule.next_after(at)
        self._state.cursor[entry.id] = now

    async def _missed(self, entry: ScheduleEntry, now: float) -> None:
        """This scheduler is late (it was down or stalled): apply the misfire policy to the runs
        that no scheduler sent (the last fire time in the broker says which)."""
        missed = entry.schedule.next_after(await self._last_fire(entry, now))
        if missed is None or missed > now - self.misfire_grace:
            return  # another scheduler kept the schedule going
        if self.misfire == "once":
            await self._fire(entry, missed)
        else:
            log.info("skipped missed run(s) of %s since %s", entry.task_name, _iso(missed))

    async def _last_fire(self, entry: ScheduleEntry, now: float) -> float:
        last = await self.broker.state.last_fire(entry.id)
        return now if last is None else min(last, now)

    async def _fire(self, entry: ScheduleEntry, at: float) -> None:
        """Send the run of `entry` due at `at` unless another scheduler sends it."""
        state, at_ms, unsure = self.broker.state, round(at * 1000), self._state.unsure
        claim, ttl = f"fire:{entry.id}:{at_ms}", max(CLAIM_TTL, 10 * self.misfire_grace)
        if entry.stored and await state.schedule(entry.id) is None:
            unsure.pop(claim, None)
            return  # removed since the last refresh
        run = run_id(entry.id, at_ms)

        async def was_sent() -> bool:
            return await self.broker.task_status(run) is not None

        lease = self.broker.transport.lease_seconds
        wait = await state.claim_send(claim, ttl, lease, was_sent)
        if wait:  # claimed by another scheduler, not yet marked sent: look again next tick
            unsure[claim] = (entry, at)
            return
        unsure.pop(claim, None)
        if wait is None:
            await self._send(entry, at, claim, ttl)
        if isinstance(entry.schedule, Once) and entry.stored:
            await state.drop_schedule(entry.id)

    async def _send(self, entry: ScheduleEntry, at: float, claim: str, ttl: float) -> None:
        """Send a claimed run, mark its claim sent and record the fire time."""
        state = self.broker.state
        firing = FIRING.set(entry.id)
        try:
            await self.broker.send([self._message(entry, round(at * 1000))])
        except BaseException:
            with contextlib.suppress(Exception):  # unclaim: the next tick tries again
                await state.give_back(claim)
            raise
        finally:
            FIRING.reset(firing)
        log.info("sent %s for %s (%s)", entry.task_name, _iso(at), entry.schedule.describe())
        await self.on_sent(entry, at)
        await state.mark_sent(claim, ttl)
        last = await state.last_fire(entry.id)
        if last is None or at > last:  # a run taken over late never moves it back
            await state.set_last_fire(entry.id, at)

    async def on_sent(self, entry: ScheduleEntry, at: float) -> None:
        """Called after the run of `entry` due at `at` was sent (by this scheduler only);
        nothing here, for subclasses."""

    def _message(self, entry: ScheduleEntry, at_ms: int) -> Any:
        task = self.broker.find_task(entry.task_name)
        return self.broker.build_message(
            entry.task_name,
            entry.args,
            entry.kwargs,
            task.labels if task is not None else None,
            entry.labels,
            run_id(entry.id, at_ms),
        )


def run_id(schedule_id: str, at_ms: int) -> str:
    """The task id of the run of `schedule_id` due at `at_ms`: the same in every scheduler."""
    digest = hashlib.sha1(schedule_id.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"s-{digest}-{at_ms}"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _info(entry: ScheduleEntry, now: float) -> ScheduleInfo:
    try:
        upcoming = entry.schedule.next_after(now)
    except Exception:  # a broken schedule is still listed
        log.exception("schedule %s of %s: no next fire time", entry.id, entry.task_name)
        upcoming = None
    if upcoming is None and isinstance(entry.schedule, Once) and entry.stored:
        upcoming = entry.schedule.at  # late, not yet sent (a sent one is deleted)
    return ScheduleInfo(
        id=entry.id,
        task_name=entry.task_name,
        schedule=entry.schedule.describe(),
        args=entry.args,
        kwargs=entry.kwargs,
        labels=entry.labels,
        stored=entry.stored,
        next_fire=None if upcoming is None else datetime.fromtimestamp(upcoming, UTC),
    )
