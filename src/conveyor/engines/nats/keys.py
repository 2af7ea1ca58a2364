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

import contextlib
import itertools
import re
from collections.abc import Callable, Sequence

from conveyor.engines.nats.client import EXPECT, NatsClient, Stored, WrongSequence, expiry

__all__ = ["Keys", "Update", "escape", "unescape", "unescaped"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_:@+,~!#$%&()|^-]")
_ESCAPED = re.compile(rb"=([^=]{0,2})")  # what follows each `=` up to 2 bytes (hex digits)

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
        self.client, self.kind, self.split, self.root = client, kind, split, client.subject(token)

    def subject(self, key: str) -> str:
        """The subject holding `key`."""
        return ".".join([self.root, *map(escape, key.split(":") if self.split else [key])])

    def key(self, subject: str) -> str:
        """The key `subject` holds (the reverse of `subject`)."""
        return ":".join(map(unescape, subject[len(self.root) + 1 :].split(".")))

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
        headers = {**expiry(ttl), EXPECT: str(revision)}
        with contextlib.suppress(WrongSequence):
            return await self.client.publish(self.subject(key), value, headers)
        return None

    async def create(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        return await self.update(key, lambda live: None if live else (value, ttl)) is not None

    async def delete(self, key: str) -> bool:
        """Remove `key` (no tombstone is left); True when it held a live value."""
        if (entry := await self.read(key)) is None:
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
        """Which of `keys` have a message (live or expired), with one listing of the subjects
        under their common leading tokens."""
        subjects = [self.subject(key) for key in keys]
        # zip stops at the shortest subject
        tokens = zip(*(s.split(".")[:-1] for s in subjects), strict=False)
        common = [t[0] for t in itertools.takewhile(lambda t: len(set(t)) == 1, tokens)]
        held = await self.client.subject_counts(self.kind, ".".join([*common, ">"]))
        return [key for key, subject in zip(keys, subjects, strict=True) if subject in held]


def escape(text: str) -> str:
    """`text` as one subject token (and a valid consumer name): `.`, `*`, `>`, spaces, `=`...
    become `=XX`; the empty text is `=`."""
    return _UNSAFE.sub(lambda m: "".join(f"={b:02X}" for b in m[0].encode()), text) or "="


def unescape(token: str) -> str:
    """The text `escape` made `token` from.

    Raises:
        ValueError: `token` was not made by `escape` (a foreign writer's).
    """
    if "=" not in token:
        return token
    raw = _ESCAPED.sub(lambda m: bytes.fromhex(m[1].decode()), token.encode())
    return raw.decode(errors="replace")


def unescaped(token: str | None) -> str | None:
    """`unescape(token)`; None when `token` is None or was not made by `escape` (a foreign
    writer's subject token or `Conveyor-Task` header)."""
    with contextlib.suppress(ValueError):
        return None if token is None else unescape(token)
    return None
