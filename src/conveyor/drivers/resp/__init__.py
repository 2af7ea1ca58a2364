"""A RESP2 client for asyncio, with hiredis parsing replies: an automatic pipeline and pub/sub.

Used by the Redis engine for `redis://` and `unix://` URLs, where redis-py's per-command
machinery cost an awaited `kiq` about three times the CPU (bench/NOTES.md, 2026-11-21).
"""

from conveyor.drivers.resp.pipeline import (
    BarePipeline,
    auth_command,
    open_socket,
    pack_command,
    parse_url,
    supports,
)
from conveyor.drivers.resp.pubsub import Subscriber, Watchers

__all__ = [
    "BarePipeline",
    "Subscriber",
    "Watchers",
    "auth_command",
    "open_socket",
    "pack_command",
    "parse_url",
    "supports",
]
