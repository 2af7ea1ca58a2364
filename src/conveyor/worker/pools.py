"""Where sync tasks run: a thread pool (default) or a process pool, with interruption.

Threads cannot be killed; a timeout, soft timeout or cancel raises an exception inside the
thread at its next Python instruction (it cannot interrupt a blocking C call). So that such a
thread cannot hold up a stopping worker past its shutdown timeout, the threads are daemons,
abandoned at exit (their messages were handed back). The process pool really stops the work:
on a hard timeout, and when the worker stops, its processes are terminated.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import importlib
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, ParamSpec, TypeVar

from conveyor.worker.supervisor import become_child

__all__ = ["DaemonThreadPool", "ProcessPool", "ThreadSlot", "call_in_process", "new_thread_pool"]

P = ParamSpec("P")
T = TypeVar("T")
_Job = tuple["Future[Any]", Callable[[], Any]]
#: Guards every `ThreadSlot`'s thread id: one lock for all, so a slot (made per message) is free.
_SLOTS_LOCK = threading.Lock()


class ThreadSlot:
    """Tracks the thread running one sync task, so an exception can be raised inside it."""

    __slots__ = ("_ident",)

    def __init__(self) -> None:
        self._ident: int | None = None

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Return `fn` recording its thread while it runs."""

        def run() -> Any:
            with _SLOTS_LOCK:
                self._ident = threading.get_ident()
            try:
                return fn()
            finally:
                with _SLOTS_LOCK:
                    self._ident = None

        return run

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise `exc_type` in the thread if it still runs the task; True if raised."""
        with _SLOTS_LOCK:
            if self._ident is None:
                return False
            count = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._ident), ctypes.py_object(exc_type)
            )
            if count > 1:  # never expected: undo rather than hit several threads
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._ident), None)
            return bool(count == 1)


def call_in_process(
    module: str, qualname: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run a task's function in a pool process, finding it by module and name."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    fn = getattr(target, "fn", target)  # the Task object wraps the function
    return fn(*args, **kwargs)


class ProcessPool:
    """A lazily started process pool that can be torn down and rebuilt after a hard timeout."""

    def __init__(self, max_workers: int) -> None:
        self._max_workers = max_workers
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the pool."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._max_workers, initializer=_reset_signals
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def kill(self) -> None:
        """Terminate the pool's processes (a task overran its hard timeout)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """Stop the pool when the worker stops: what still runs in it was handed back, and
        waiting for it would keep the stopped worker's process alive, so it is terminated."""
        self.kill()


def _reset_signals() -> None:
    """In a new pool process: drop the signal handling inherited from the worker by fork.

    Else SIGTERM would run the worker's no-op handler (so `kill` could not stop the process),
    and the signal would be written to the worker's event loop through the inherited wakeup fd,
    where it reads as a SIGTERM sent to the worker itself.
    """
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which stops us
    become_child()  # and a SIGKILLed worker leaves no idle pool process behind


class DaemonThreadPool(Executor):
    """Up to `size` daemon threads running submitted calls in order.

    `ThreadPoolExecutor` joins its threads when the interpreter exits, so a sync task blocked
    in a C call would keep a stopped worker alive long after its message was handed back.
    """

    def __init__(self, size: int, name: str = "conveyor-task") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; start a thread if none is idle and the pool is not full."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a thread pool that was shut down")
            self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once the queued calls ran (or were cancelled, with `cancel_futures`)."""
        with self._lock:
            self._closed = True
            while cancel_futures:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
            for _ in self._threads:
                self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # what the call raised, or an interruption
                    future.set_exception(exc)
            self._idle.release()


def new_thread_pool(size: int) -> DaemonThreadPool:
    """The pool sync tasks run in."""
    return DaemonThreadPool(size)
