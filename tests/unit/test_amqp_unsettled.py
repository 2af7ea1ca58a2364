"""Which acks of a batch one `multiple` ack may stand for (`engines/amqp/unsettled.py`).

The deliveries here are plain values with the three fields the plan reads; the same plan on a real
RabbitMQ is `test_acks_made_together_settle_their_deliveries_and_no_other`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("aio_pika")

from conveyor.engines.amqp.unsettled import Unsettled  # after the skip


@dataclass(eq=False)
class Delivered:
    """What `Unsettled` reads of a delivery (`engines/amqp/delivered.py`)."""

    delivery_tag: int
    channel: Any
    stale: bool = False  # its channel is closed


def delivered(plan: Unsettled, channel: object, tags: list[int]) -> dict[int, Any]:
    messages = {tag: Delivered(tag, channel) for tag in tags}
    for message in messages.values():
        plan.noted(message)  # type: ignore[arg-type]  # a stand-in with the fields it reads
    return messages


def split(plan: Unsettled, *messages: Any) -> tuple[list[int], list[int], list[int]]:
    top, covered, rest = plan.split(list(messages))
    return tags(top), tags(covered), tags(rest)


def tags(messages: list[Any]) -> list[int]:
    return sorted(m.delivery_tag for m in messages)


def test_a_run_from_the_lowest_unsettled_tag_is_one_multiple_ack() -> None:
    plan, channel = Unsettled(), object()
    m = delivered(plan, channel, [1, 2, 3, 4, 5])
    assert split(plan, m[3], m[1], m[2]) == ([3], [1, 2, 3], [])
    assert split(plan, m[5]) == ([], [], [5])  # one left: a plain ack
    assert split(plan, m[4], m[5]) == ([5], [4, 5], [])


def test_a_multiple_ack_never_passes_a_delivery_still_held_or_being_settled() -> None:
    plan, channel = Unsettled(), object()
    m = delivered(plan, channel, [1, 2, 3, 4, 5])
    assert split(plan, m[2], m[3], m[5]) == ([], [], [2, 3, 5])  # 1 is held
    assert split(plan, m[1], m[2], m[4]) == ([2], [1, 2], [4])  # 3 is held
    plan.settled(m[3])  # its own settle (a nack, say) was written
    assert split(plan, m[4], m[5]) == ([5], [4, 5], [])


def test_a_tag_counts_once_every_tag_below_it_was_noted() -> None:
    plan, channel = Unsettled(), object()
    m = delivered(plan, channel, [1, 2, 4])  # 3 reached aiormq, not the transport yet
    assert split(plan, m[1], m[2], m[4]) == ([2], [1, 2], [4])
    m |= delivered(plan, channel, [3, 5, 6])
    assert split(plan, m[3], m[5], m[6]) == ([], [], [3, 5, 6])  # 4's own ack is not written
    for tag in (4, 3, 5, 6):  # their plain acks were written
        plan.settled(m[tag])
    m |= delivered(plan, channel, [7, 8])
    assert split(plan, m[7], m[8]) == ([8], [7, 8], [])


def test_a_new_channel_starts_over_and_the_old_ones_deliveries_are_acked_alone() -> None:
    plan, old, new = Unsettled(), object(), object()
    stale = delivered(plan, old, [1, 2, 3])
    fresh = delivered(plan, new, [1, 2])
    top, covered, rest = plan.split([stale[1], stale[2], fresh[1], fresh[2]])
    assert (tags(top), covered, rest) == ([2], [fresh[1], fresh[2]], [stale[1], stale[2]])
