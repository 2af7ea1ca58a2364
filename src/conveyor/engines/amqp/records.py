"""The index the RabbitMQ transport keeps in its state store, and RabbitMQ names and URL options.

RabbitMQ cannot say where one message is, remove one message, or count what a consumer holds,
so the transport keeps one small record per held task id in the state store (see
`docs/engines/amqp.md`): `amqp:<prefix>:m:<task_id>` = `state|deliveries|lease_end|eta|prio|tag|
queue`. Its state is "queued", "scheduled", "running", or "x" (removed or purged: the message is
dropped when it is next delivered); a "retrying" record of an older version reads as
"scheduled". `tag` names the copy of the message that counts (its `x-tag` header): a copy with
another tag (a removed copy after the id was sent again, the original of a retry whose new copy
was delivered first) is dropped when delivered. While a retry is being republished the record
names both copies (`new,old`), so a failed publish never leaves the message without a copy that
counts; the first of them to be delivered becomes the only one. `amqp:<prefix>:q:<queue>` notes
every queue and `amqp:<prefix>:d:<k>` every delay bucket declared, for `receive([])` and
`delete_topology`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from conveyor._urls import split_options
from conveyor.engines.base import Location
from conveyor.errors import ConfigurationError

__all__ = [
    "DROPPED",
    "LOCAL_RECORD_TTL",
    "MAX_BUCKET",
    "RECORD_TTL",
    "Record",
    "delay_bucket",
    "new_tag",
    "split_url",
]

#: Seconds a record outlives its message's due time (a backlog older than this loses its index).
RECORD_TTL = 7 * 24 * 3600.0
#: The same in a per-process (memory) state store, where nobody else ever deletes a record.
LOCAL_RECORD_TTL = 600.0
DROPPED = "x"
#: Delay buckets hold messages 2**k milliseconds, k = 0..MAX_BUCKET (about 24.9 days).
MAX_BUCKET = 31
_OURS = ("prefix", "lease", "state")


@dataclass(frozen=True, slots=True)
class Record:
    """Where a held message is, as the index knows it."""

    state: str
    deliveries: int = 0
    lease_end: float = 0.0
    eta: float = 0.0
    priority: int = 0
    queue: str = ""
    tag: str = ""

    def encode(self) -> bytes:
        """The stored form (`queue` last: it may hold `|`)."""
        return (
            f"{self.state}|{self.deliveries}|{self.lease_end:.3f}|{self.eta:.3f}"
            f"|{self.priority}|{self.tag}|{self.queue}"
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Record | None:
        """The record stored as `raw`, or None (also for a malformed one: it counts as absent)."""
        if raw is None:
            return None
        try:
            state, n, lease_end, eta, priority, tag, queue = raw.decode().split("|", 6)
            return cls(state, int(n), float(lease_end), float(eta), int(priority), queue, tag)
        except ValueError:  # a foreign or truncated value: run the message rather than lose it
            return None

    def with_(self, **changes: object) -> Record:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass fields by name

    def where(self, now: float) -> Location | None:
        """Where the message is at `now` (None when dropped); a lapsed lease reads as waiting."""
        if self.state == DROPPED:
            return None
        if self.state == "running":
            return "leased" if self.lease_end > now else "waiting"
        return "delayed" if self.eta > now else "waiting"

    def accepts(self, tag: str) -> bool:
        """True when the copy tagged `tag` counts (an untagged record or copy always does)."""
        return not self.tag or not tag or tag in self.tag.split(",")

    def ttl(self, now: float, keep: float = RECORD_TTL) -> float:
        """How long to keep the record: `keep` seconds past its due time."""
        return max(self.eta - now, 0.0) + keep


def new_tag() -> str:
    """A fresh tag for one published copy of a message."""
    return uuid.uuid4().hex[:12]


def delay_bucket(eta: float) -> int | None:
    """The delay bucket a message due at `eta` waits in next, or None when it is due."""
    left_ms = math.ceil((eta - time.time()) * 1000)
    if left_ms <= 0:
        return None
    return min(left_ms.bit_length() - 1, MAX_BUCKET)


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split conveyor's own query options (`prefix`, `lease`, `state`) off an AMQP URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(f"not an AMQP URL (amqp:// or amqps://): {parts.scheme}://...")
    return split_options(url, _OURS)
