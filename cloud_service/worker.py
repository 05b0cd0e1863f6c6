"""A thread of our own for short blocking work, at the least a hop to a thread can cost.

Measured on a 2-core machine, a round trip through it costs about 50 us of CPU, through
``anyio.to_thread.run_sync`` about 80 us and ``asyncio.to_thread`` 75 us: those add a queue
with a condition, a concurrent future and a wake-up of the event loop per call. Under load (the
simulated fleet, 100 jobs/s) the difference was larger: the two ``anyio`` hops of a job's
document took as much of the service's CPU as its nine hops to the database thread.

The thread runs under ``SCHED_BATCH`` where the system has it (Linux): a batch thread that is
woken does not preempt the thread that woke it. Without it, each hand-over of work woke the
worker on the event loop's own core, the worker took that core, found the GIL still held by
the loop and went back to sleep: two context switches for nothing, every hop. Over a fleet run
of 800 jobs on the embedded stack the service switched 46 times a job before and 18 after, and
a job cost it about 10% less CPU against the same broker work (docs/bench.md). The worker
still gets its fair share of the CPU; it only waits for the loop to block, or for another core,
instead of interrupting it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return  # the caller gave up waiting; the work was done (or not) all the same
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def yield_on_wakeup() -> bool:
    """Put the calling thread under ``SCHED_BATCH`` (see the module's docstring); False where
    the system has no such policy or refuses it, and the thread runs as before."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


class WorkerThread:
    """One thread that runs short blocking work for the event loops that hand it work: the
    store's whole SQLite transactions (``JobStore.run``), the local object store's one-trip reads
    and writes of small objects.

    The least a hop can cost: the work goes on a plain queue, and answers go back in batches:
    one wake-up of the loop (``call_soon_threadsafe``, a write to its self-pipe) carries every
    answer finished before the loop got round to it (an executor adds a concurrent future, a
    condition and a chained asyncio future per call on top).
    """

    def __init__(self, name: str = "db") -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop,
                                             asyncio.Future[Any]] | None] = queue.SimpleQueue()
        #: loop -> answers not handed over yet; a wake-up is scheduled while a list exists.
        self._done: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        self._lock = threading.Lock()
        # A daemon: a store nobody closed must not keep the process alive at exit.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        yield_on_wakeup()
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, loop, future = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = work()
            except BaseException as exc:  # handed to the caller, as an executor would
                error = exc
            with self._lock:
                waiting = self._done.get(loop)
                if waiting is not None:
                    waiting.append((future, result, error))  # the scheduled wake-up takes it too
                    continue
                self._done[loop] = [(future, result, error)]
            try:
                loop.call_soon_threadsafe(self._deliver, loop)
            except RuntimeError:  # that loop is closed: nobody waits any more
                with self._lock:
                    self._done.pop(loop, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            answers = self._done.pop(loop, [])
        for future, result, error in answers:
            _settle(future, result, error)

    async def call(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, loop, future))
        return await future

    def stop(self) -> None:
        """Finish the work queued so far, then end the thread (waits for it)."""
        self._queue.put(None)
        self._thread.join()


