"""Stream entries as the Redis transport reads them: its receipts, the deliveries its fetch
and blocking reads return, and the dead letters of the dead-letter streams.

Invariant: an entry's fields are read by name, never by position, and an entry that lacks one
or holds a wrong one becomes a `Delivery` with its `problem` (and the fields it had as its body
when it has no `b`), never an exception: one foreign entry never fails a batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from conveyor.engines.base import DeadLetter, Delivery
from conveyor.engines.kit import typed_receipt

__all__ = ["Receipt", "dead_letter_of", "delivery_of", "receipt_of"]


class Receipt(NamedTuple):
    """Where a delivery lives and the token that proves the lease is still ours (the pending
    entry's delivery count when it was leased)."""

    stream: str
    band: str
    entry: str
    token: int


def receipt_of(delivery: Delivery) -> Receipt:
    """The receipt of a delivery of the Redis transport.

    Raises:
        TypeError: the delivery came from another transport.
    """
    return typed_receipt(delivery, Receipt, "a RedisTransport")


def _fields(flat: Any) -> dict[bytes, bytes]:
    """A stream entry's fields: a flat list from a script or the bare connection, a dict from
    redis-py's XREADGROUP."""
    if isinstance(flat, dict):
        return flat
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=False))  # one iterator: each name, then its value


def delivery_of(queue: str, receipt: Receipt, flat: Any) -> Delivery:
    """A stream entry as a delivery; a malformed one with its problem."""
    fields = _fields(flat)
    task_id, body, earlier = fields.get(b"t"), fields.get(b"b"), fields.get(b"n")
    if task_id and body is not None and earlier is not None and earlier.isdigit():
        try:
            return Delivery(task_id.decode(), queue, body, int(earlier) + receipt.token, receipt)
        except UnicodeDecodeError:
            pass
    return _malformed(queue, receipt, fields)


def _malformed(queue: str, receipt: Receipt, fields: dict[bytes, bytes]) -> Delivery:
    """The delivery of an entry a foreign client wrote: what could be read, and what is wrong."""
    issues, task_id = [], ""
    try:
        task_id = fields.get(b"t", b"").decode()
    except UnicodeDecodeError:
        issues.append("its task id (field t) is not UTF-8")
    if not task_id and not issues:
        issues.append("no task id (field t)")
    body = fields.get(b"b")
    if body is None:  # keep what the entry holds, for whoever reads the dead letter
        issues.append("no body (field b)")
        body = b"\n".join(name + b"=" + value for name, value in fields.items())
    raw = fields.get(b"n")
    earlier = int(raw) if raw is not None and raw.isdigit() else 0
    if raw is None:
        issues.append("no delivery count (field n)")
    elif not raw.isdigit():
        issues.append(f"n={raw.decode(errors='replace')!r} is not a delivery count")
    names = ", ".join(name.decode(errors="replace") for name in fields) or "no fields"
    problem = f"stream entry {receipt.entry} ({names}): " + "; ".join(issues)
    return Delivery(task_id, queue, body, earlier + receipt.token, receipt, problem)


def dead_letter_of(queue: str, flat: Any, ref: tuple[str, Any]) -> DeadLetter:
    """An entry of a queue's dead-letter stream (written by `dead_letter` in `redis.lua`);
    `ref` is (stream key, entry id), for `drop_dead`."""
    fields = _fields(flat)
    failed_at, band = fields.get(b"f", b"0"), fields.get(b"p", b"0")
    try:
        when = float(failed_at)
    except ValueError:  # not written by conveyor: still listed, first
        when = 0.0
    return DeadLetter(
        task_id=fields.get(b"t", b"").decode(errors="replace"),
        queue=fields.get(b"q", queue.encode()).decode(errors="replace"),
        body=fields.get(b"b", b""),
        reason=fields.get(b"r", b"").decode(errors="replace"),
        failed_at=when,
        priority=int(band) if band.isdigit() else 0,
        ref=ref,
    )
