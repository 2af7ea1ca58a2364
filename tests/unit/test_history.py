"""The dashboard's stored history (`conveyor.history`): bounded, one point per step however many
web processes record, kept across a restart, and nothing read back trusted without its shape
and, with a secret key, its signature."""

from __future__ import annotations

import msgspec
import pytest

from conveyor.engines.memory import MemoryStore
from conveyor.history import SERIES, SIGNED_HISTORY, History, Point, Series
from conveyor.recent import SIGNED_RECENT
from conveyor.serializers import Signer
from conveyor.state import State

SMALL = (Series("small", 10.0, 5), Series("large", 60.0, 3))
KEY = "the-apps-key"


def _history(state: State, key: str | None = None) -> History:
    return History(state, Signer(key), SMALL)


def _point(t: float, succeeded: int = 0) -> Point:
    return Point(t=t, succeeded=succeeded, waiting=2, running=1, workers=1)


async def test_a_series_keeps_one_point_per_step_and_at_most_its_size() -> None:
    state = State(MemoryStore())
    first, second = _history(state), _history(state)  # two web processes
    now = 1_000_000.0
    for i in range(40):  # a point every 5 s from each process, for 200 s
        await first.record(_point(now + i * 5, i))
        await second.record(_point(now + i * 5 + 1, i))
    small = await first.points("small")
    assert len(small) == 5
    assert [p.t // 10 for p in small] == [(now + 195) // 10 - k for k in (4, 3, 2, 1, 0)]
    assert len(await first.points("large")) == 3
    restarted = _history(state)  # a new web process reads what the others recorded
    assert await restarted.points("small") == small
    await restarted.record(_point(now + 5000))  # after a long stop: the old points are gone
    assert [p.t for p in await restarted.points("small")] == [now + 5000]


async def test_the_default_series_cover_an_hour_a_day_and_a_week() -> None:
    assert [(s.name, s.seconds) for s in SERIES] == [
        ("hour", 3600.0),
        ("day", 86400.0),
        ("week", 604800.0),
    ]


@pytest.mark.parametrize(
    "planted",
    [
        msgspec.json.encode([[1_000_000.0, 5, 0, 0, 0, 0, 0, 0]]),  # no signature
        Signer(KEY).derive(SIGNED_RECENT).sign(b"[[1000000.0,5,0,0,0,0,0,0]]"),  # another kind
        Signer(KEY).derive(SIGNED_HISTORY).sign(b"[[1000000.0,-5,0,0,0,0,0,0]]"),  # negative
        Signer(KEY).derive(SIGNED_HISTORY).sign(b'[["now",5]]'),  # wrong types
        Signer(KEY).derive(SIGNED_HISTORY).sign(b"[" + b"[1e6,1]," * 10_000 + b"[1e6,1]]"),
    ],
    ids=["unsigned", "signed-as-recent", "negative", "wrong-types", "too-large"],
)
async def test_what_the_app_did_not_write_is_ignored_whole(planted: bytes) -> None:
    state = State(MemoryStore())
    history = _history(state, KEY)
    await state.put_history("small", planted, 60)
    assert await history.points("small") == []
    await history.record(_point(2_000_000.0, 7))  # the series starts afresh, signed
    assert await history.points("small") == [_point(2_000_000.0, 7)]
    stored = await state.history("small")
    assert stored is not None
    assert Signer(KEY).derive(SIGNED_HISTORY).verify(stored).startswith(b"[[")
    assert await _history(state).points("small") == []  # without the key, signed data is refused
