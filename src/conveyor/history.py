"""The dashboard's history: what the cluster did over the last hour, day and week, kept in the
state store so that it outlives a reload of the page and a restart of `conveyor web`.

A `Point` is the cluster's cumulative task counters at one time, with how many messages wait,
how many tasks run and how many workers live. Rates are differences between two points, so a
point that was never recorded only widens one interval of a chart.

Invariants: each `Series` is one key (`conveyor.state`: `history:<series>`) holding at most
`Series.size` points, oldest first, at most one per `Series.step` seconds of wall clock (the
"bucket" `t // step`). With a secret key the value is signed (`SIGNED_HISTORY`). Read back, a
value that is larger than its series can be, not signed with the key, or not a list of points of
the right types is ignored whole (the next point recorded starts the series afresh): nothing
read from the store is trusted more than a worker's recent-task list is. Several web processes
may record at once; all of them put a time in the same bucket, and a race between two of them
loses one of two nearly equal points, never the series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from conveyor.errors import SerializationError
from conveyor.serializers import Signer
from conveyor.state import State

__all__ = ["FIELDS", "SERIES", "SIGNED_HISTORY", "History", "Point", "Series"]

#: What the history is signed as (`Signer.derive`) when a secret key is set.
SIGNED_HISTORY: Final = "dashboard history"

_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Time = Annotated[float, msgspec.Meta(ge=0.0, le=1e11)]
#: The largest encoded point: a time and seven 19-digit counts, with their commas.
_POINT_BYTES: Final = 200


class Point(msgspec.Struct, array_like=True, frozen=True):
    """The cluster at time `t` (unix seconds): cumulative counters, then the current sizes."""

    t: _Time
    succeeded: _Count = 0
    failed: _Count = 0
    retried: _Count = 0
    cancelled: _Count = 0
    waiting: _Count = 0
    running: _Count = 0
    workers: _Count = 0


#: The fields of a point, in the order they are stored and served.
FIELDS: Final = Point.__struct_fields__


@dataclass(frozen=True, slots=True)
class Series:
    """A series of at most `size` points, one per `step` seconds."""

    name: str
    step: float
    size: int

    @property
    def seconds(self) -> float:
        """The span of time the series covers."""
        return self.step * self.size

    def bucket(self, t: float) -> int:
        """The step `t` falls in."""
        return int(t // self.step)


#: The series the dashboard keeps: an hour by 10 s, a day by 5 min, a week by 30 min.
SERIES: Final = (Series("hour", 10.0, 360), Series("day", 300.0, 288), Series("week", 1800.0, 336))

_POINTS = msgspec.json.Decoder(list[Point])


class History:
    """The dashboard's series over one app's state store.

    Args:
        state: the app's shared state.
        signer: the app's signer (`Broker.signer`); the history gets a key of its own from it.
        series: the series kept.
    """

    def __init__(self, state: State, signer: Signer, series: tuple[Series, ...] = SERIES) -> None:
        self.state = state
        self.seal = signer.derive(SIGNED_HISTORY)
        self.series = {s.name: s for s in series}
        self._recorded: dict[str, int] = {}  # the last bucket this process stored, per series

    async def record(self, point: Point) -> None:
        """Add `point` to every series whose current bucket has no point yet.

        Costs nothing once this process has stored the bucket's point; else one read and at
        most one write per series.
        """
        for series in self.series.values():
            bucket = series.bucket(point.t)
            if self._recorded.get(series.name) == bucket:
                continue
            points = await self.points(series.name)
            if not points or series.bucket(points[-1].t) < bucket:
                kept = [p for p in points if p.t > point.t - series.seconds]
                data = msgspec.json.encode([*kept, point][-series.size :])
                await self.state.put_history(series.name, self.seal.sign(data), series.seconds)
            self._recorded[series.name] = bucket

    async def points(self, name: str) -> list[Point]:
        """The points of the series `name`, oldest first; [] when it holds none we trust.

        Raises:
            KeyError: no series is called `name`.
        """
        series = self.series[name]
        raw = await self.state.history(name)
        if raw is None or len(raw) > series.size * _POINT_BYTES + 64:
            return []
        try:
            points = _POINTS.decode(self.seal.verify(raw))
        except (SerializationError, msgspec.DecodeError, msgspec.ValidationError):
            return []  # written without the key, or by another version: start again
        points.sort(key=lambda p: p.t)
        return points[-series.size :]
