"""Which deliveries one `multiple` ack may settle: the delivery tags of a channel not settled yet.

A worker acks its finished tasks in batches (`acks.py`). A basic.ack with `multiple`
settles every unsettled tag of its channel up to its own, so it may stand for a batch only when
no other delivery of that channel below its tag is still held, buffered, being leased or being
settled otherwise. `Unsettled` knows them: every delivery is noted when it reaches the transport
and forgotten once a settle of it was written (or its channel was gone); a settle cut short
keeps it noted, so no `multiple` ack ever passes it.

Invariants: tags are counted per channel (a new channel after a reconnect starts over, and the
deliveries of the old one are stale, never acked); a tag counts as known only once every tag
below it on that channel has been noted, so a delivery that reached aiormq but not the transport
yet is never covered; the caller plans and sends one batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.engines.amqp.delivered import Delivered

__all__ = ["Plan", "Unsettled"]

#: Messages to ack in one way (see `Unsettled.split`).
Plan = list[Delivered]


def _channel(message: Delivered) -> Any:
    """The channel a message came on, or None when it is closed."""
    return None if message.stale else message.channel


class Unsettled:
    """The deliveries of the consumers' current channel that are not settled yet."""

    __slots__ = ("_channel", "_early", "_open", "_through")

    def __init__(self) -> None:
        self._channel: Any = None
        self._open: set[int] = set()
        self._early: set[int] = set()  # noted before a lower tag was
        self._through = 0  # every tag up to this one has been noted

    def noted(self, message: Delivered) -> None:
        """Note a delivery (the first of a new channel starts the count over)."""
        channel, tag = _channel(message), message.delivery_tag
        if channel is None or not tag:
            return
        if channel is not self._channel:
            self._channel, self._open, self._early, self._through = channel, set(), set(), 0
        self._open.add(tag)
        if tag != self._through + 1:
            self._early.add(tag)
            return
        self._through = tag
        while self._through + 1 in self._early:
            self._through += 1
            self._early.discard(self._through)

    def settled(self, message: Delivered) -> None:
        """Forget a delivery whose settle was written (or whose channel is gone)."""
        if message.delivery_tag and _channel(message) is self._channel:
            self._open.discard(message.delivery_tag)

    def split(self, messages: Sequence[Delivered]) -> tuple[Plan, Plan, Plan]:
        """Plan the acks of held `messages`: `([top], covered, rest)` where a `multiple` ack of
        `top` settles exactly `covered` (`top` included), and `rest` are acked one by one
        (`([], [], messages)` when no `multiple` ack fits). `covered` is forgotten here, so
        the caller sends that ack before it awaits anything else."""
        mine = {
            m.delivery_tag: m
            for m in messages
            if m.delivery_tag in self._open and _channel(m) is self._channel
        }
        others = self._open.difference(mine)
        below = min(min(others, default=self._through + 1), self._through + 1)
        tags = [tag for tag in mine if tag < below]
        if len(tags) < 2:  # one message: a plain ack says the same
            return [], [], list(messages)
        self._open.difference_update(tags)
        covered = [mine[tag] for tag in tags]
        ids = {id(m) for m in covered}
        return [mine[max(tags)]], covered, [m for m in messages if id(m) not in ids]
