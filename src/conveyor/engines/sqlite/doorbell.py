"""Wakes idle consumers of one SQLite file in other processes when a message becomes ready, so
they need not poll to start a task at once.

Each consuming process binds one Unix datagram socket in a directory kept for the file (under
the system's temporary directory, named by a hash of the file's absolute path, so the socket
paths stay short). A producer that committed a ready message sends one byte to every socket
there. A thread per consuming process turns those bytes into `Signal` notifications.

Invariants: a lost or refused ring costs latency, never a message (consumers still look every
`poll_interval`); a socket whose process is gone is removed by the first ring it refuses,
and the folder goes with its last socket;
nothing here blocks: sends are non-blocking and a full socket means its consumer is awake.
Where Unix datagram sockets do not exist (Windows), ringing and listening do nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import socket
import tempfile
import threading
import uuid
import weakref
from pathlib import Path

from conveyor.engines.loops import Signal, reset_after_fork

__all__ = ["Doorbell", "doorbell"]

_SUPPORTED = hasattr(socket, "AF_UNIX")
_DOORBELLS: dict[str, Doorbell] = {}
_LOCK = threading.Lock()


class Doorbell:
    """The doorbell of one database file, shared by every transport of it in this process."""

    def __init__(self, path: str) -> None:
        digest = hashlib.sha1(os.path.abspath(path).encode(), usedforsecurity=False).hexdigest()
        self.folder = Path(tempfile.gettempdir()) / f"conveyor-wake-{digest[:16]}"
        self._signals: weakref.WeakSet[Signal] = weakref.WeakSet()
        self._sock: socket.socket | None = None
        self._sender: socket.socket | None = None
        self._lock = threading.Lock()
        reset_after_fork(self._after_fork)

    def _after_fork(self) -> list[socket.socket | None]:
        """In a forked child: the parent's sockets (and listening thread) are not ours."""
        inherited, self._sock, self._sender = [self._sock, self._sender], None, None
        return inherited

    def listen(self, signal: Signal) -> None:
        """Notify `signal` whenever another process rings (binding this process's socket)."""
        self._signals.add(signal)
        with self._lock:
            if not _SUPPORTED or self._sock is not None:
                return
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if not _bind(sock, address):
                sock.close()
                return  # no doorbell here: consumers poll
            self._sock = sock
            atexit.register(_unlink, address)
            threading.Thread(
                target=self._serve, args=(sock, address), name="conveyor-doorbell", daemon=True
            ).start()

    def ring(self) -> None:
        """Wake the consumers of other processes (and of this one)."""
        for signal in list(self._signals):
            signal.notify()
        if not _SUPPORTED or not self.folder.exists():
            return
        own = None if self._sock is None else str(self._sock.getsockname())
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        try:
            others = [entry.path for entry in os.scandir(self.folder) if entry.path != own]
        except FileNotFoundError:  # its last consumer just left
            return
        for other in others:
            try:
                self._sender.sendto(b"\0", other)
            except (ConnectionRefusedError, FileNotFoundError):
                _unlink(Path(other))  # its process is gone
            except OSError:
                pass  # full (its consumer is awake anyway) or not a socket

    def _serve(self, sock: socket.socket, address: Path) -> None:
        try:
            while True:
                sock.recv(64)
                for signal in list(self._signals):
                    signal.notify()
        except OSError:
            pass
        finally:
            _unlink(address)


def _bind(sock: socket.socket, address: Path) -> bool:
    """Bind `sock` at `address`, making its folder (again: it goes with its last consumer)."""
    for _ in range(3):
        try:
            address.parent.mkdir(mode=0o700, exist_ok=True)
            sock.bind(str(address))
        except FileNotFoundError:  # the folder went between the two calls
            continue
        except OSError:
            return False
        return True
    return False


def _unlink(address: Path) -> None:
    """Remove a socket, and its folder once no socket is left in it."""
    with contextlib.suppress(OSError):
        address.unlink()
    with contextlib.suppress(OSError):  # not empty: another consumer is there
        address.parent.rmdir()


def doorbell(path: str) -> Doorbell:
    """The doorbell of the database file at `path`, one per file in this process."""
    key = os.path.abspath(path)
    with _LOCK:
        if key not in _DOORBELLS:
            _DOORBELLS[key] = Doorbell(path)
        return _DOORBELLS[key]
