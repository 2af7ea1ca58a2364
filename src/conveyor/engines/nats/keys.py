"""Values by key on a JetStream stream used as a key/value bucket: one subject per key, one
message kept per subject. The NATS engine's lease markers, state store and result store are
all `Keys`.

"Only if absent" and compare-and-set are publishes with `Nats-Expected-Last-Subject-Sequence`
(0 for absent, else the revision read), retried by `update` when another writer wins.

Invariants: a key's subject is made by `escape` (any text is one token: `.`, `*`, `>`, spaces,
`=`... become `=XX`), reversed by `unescape`; an expired value reads as absent; deleting is by
sequence, never by a purge of a subject (nats-server 2.9 reads every block of the stream for such
a purge), so a value written again meanwhile stays.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from conveyor.engines.nats.client import NatsClient, Stored, WrongSequence, expiry

__all__ = ["Keys", "Update", "escape", "task_of", "unescape"]

_SAFE = re.compile(r"[A-Za-z0-9_:@+,~!#$%&()|^-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9_:@+,~!#$%&()|^-]+")
_EXPECT = "Nats-Expected-Last-Subject-Sequence"

#: Given the live entry (None when absent or expired): (new value, ttl), or None to change nothing.
Update = Callable[[Stored | None], "tuple[bytes, float | None] | None"]


class Keys:
    """Values by key on one stream, under subject `P.<token>.`.

    Args:
        client: the app's client.
        kind: the stream (`STREAM_SETTINGS`).
        token: the subjects' root token(s) after the prefix (`i`, `r.res`...).
        split: one subject token per `:`-separated segment of a key, instead of one in all.
    """

    def __init__(self, client: NatsClient, kind: str, token: str, *, split: bool = False) -> None:
        self.client, self.kind, self.split = client, kind, split
        self.root = client.subject(token)

    def subject(self, key: str) -> str:
        """The subject holding `key`."""
        if self.split:
            return ".".join([self.root, *(escape(part) for part in key.split(":"))])
        return f"{self.root}.{escape(key)}"

    def key(self, subject: str) -> str:
        """The key `subject` holds (the reverse of `subject`)."""
        tokens = subject[len(self.root) + 1 :].split(".")
        return ":".join(unescape(token) for token in tokens)

    async def read(self, key: str) -> Stored | None:
        """The stored entry of `key`, expired or not."""
        return await self.client.get(self.kind, self.subject(key))

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        entry = await self.read(key)
        return None if entry is None or entry.expired else entry.data

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        """Store `key` unconditionally; its revision."""
        return await self.client.publish(self.subject(key), value, expiry(ttl))

    async def put_if(self, key: str, value: bytes, ttl: float | None, revision: int) -> int | None:
        """Store `key` if its revision is still `revision` (0: absent); else None."""
        headers = {**expiry(ttl), _EXPECT: str(revision)}
        try:
            return await self.client.publish(self.subject(key), value, headers)
        except WrongSequence:
            return None

    async def delete(self, key: str) -> bool:
        """Remove `key` (no tombstone is left); True when it held a live value."""
        entry = await self.read(key)
        if entry is None:
            return False
        await self.client.delete(self.kind, entry.seq)
        return not entry.expired

    async def update(self, key: str, change: Update) -> bytes | None:
        """Apply `change` to the live entry atomically (a compare-and-set loop).

        Returns the value stored, or None when `change` chose to store nothing.
        """
        while True:
            entry = await self.read(key)
            wanted = change(None if entry is None or entry.expired else entry)
            if wanted is None:
                return None
            revision = 0 if entry is None else entry.seq
            if await self.put_if(key, *wanted, revision) is not None:
                return wanted[0]

    async def present(self, keys: Sequence[str]) -> list[str]:
        """Which of `keys` have a message (live or expired), with one subject listing."""
        subjects = [self.subject(key) for key in keys]
        parents = [s.split(".")[:-1] for s in subjects]
        common = parents[0]
        for tokens in parents[1:]:
            while tokens[: len(common)] != common:
                common = common[:-1]
        held = await self.client.subject_counts(self.kind, ".".join([*common, ">"]))
        return [key for key, subject in zip(keys, subjects, strict=True) if subject in held]


def escape(text: str) -> str:
    """`text` as one subject token (and a valid consumer name): `.`, `*`, `>`, spaces, `=`...
    become `=XX`; the empty text is `=`."""
    if _ALL_SAFE.fullmatch(text):
        return text
    return "".join(c if _SAFE.fullmatch(c) else _hex(c) for c in text) or "="


def _hex(char: str) -> str:
    return "".join(f"={b:02X}" for b in char.encode())


def unescape(token: str) -> str:
    """The text `escape` made `token` from.

    Raises:
        ValueError: `token` was not made by `escape` (a foreign writer's).
    """
    if "=" not in token:
        return token
    parts = token.split("=")
    raw = bytearray(parts[0].encode())
    for part in parts[1:]:
        raw += bytes.fromhex(part[:2]) + part[2:].encode()
    return raw.decode(errors="replace")


def task_of(headers: dict[str, str] | None) -> str | None:
    """The task id in a message's `Conveyor-Task` header; None when absent or not escaped."""
    token = (headers or {}).get("Conveyor-Task")
    try:
        return None if token is None else unescape(token)
    except ValueError:
        return None
