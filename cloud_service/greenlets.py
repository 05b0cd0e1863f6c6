"""PostgreSQL: a store hop's synchronous work runs in a greenlet kept from an earlier hop.

The store's work is plain synchronous code (Core statements, the model's judgement); on
PostgreSQL it reaches the async driver through SQLAlchemy's greenlet bridge: the work runs in
a greenlet, and each ``await_only`` inside it switches back to the event loop's greenlet to
await the driver. SQLAlchemy's ``greenlet_spawn`` makes a new greenlet for every call. A new
greenlet has no frame stack of its own, so its first Python call maps a fresh 16 KiB chunk
(CPython's frame data stack, one ``mmap``) and its end unmaps it: two system calls and the page
faults of new pages per hop, beside making the greenlet. A print job makes three to four such
hops on PostgreSQL; under load that came to about 3% of the service's CPU (``perf``).

``spawn`` is ``greenlet_spawn`` with the greenlet kept: a hop's greenlet, once its work has
returned or raised, waits in a per-thread free list, and the next hop's work runs in it (its
frame stack chunk still mapped). What ``greenlet_spawn`` promises holds: ``await_only`` inside
the work (it checks the attribute SQLAlchemy's own greenlets carry); an exception of an awaited
coroutine, a cancellation among them, is thrown into the work where it awaited; the work's
result or exception is the caller's; the work sees the calling task's context variables. A
greenlet left suspended (its caller abandoned) is never taken back: it dies with its caller.

No library offers it: greenlet itself has no pool, and SQLAlchemy's bridge is per call by
design (``greenlet_spawn`` is all it exposes).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

T = TypeVar("T")

#: Finished greenlets kept per thread: as many as hops were in flight at once, up to this.
KEEP = 64

#: What a kept greenlet's work sends back to its caller when it has returned or raised.
_FINISHED = object()


class _Hop(greenlet):
    """A greenlet that runs one work after another, its caller's each time."""

    #: What SQLAlchemy's ``await_only`` requires of the greenlet it is called in.
    __sqlalchemy_greenlet_provider__ = True

    def __init__(self, parent: greenlet) -> None:
        super().__init__(self._serve, parent)
        #: The next work and its arguments, handed over by ``spawn`` (not as the switch's
        #: arguments: the first switch's would stay referenced until the greenlet ends).
        self.work: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        #: (returned, value): the last work's result, or its exception; read once by ``spawn``.
        self.outcome: tuple[bool, Any] | None = None

    def _serve(self) -> None:
        while True:
            assert self.work is not None
            work, args = self.work
            self.work = None
            try:
                self.outcome = (True, work(*args))
            except GreenletExit:
                raise  # the greenlet is being discarded: end it
            except BaseException as exc:  # the caller's, as greenlet_spawn would raise it
                self.outcome = (False, exc)
            work = args = None  # type: ignore[assignment]  # hold nothing while kept
            self.parent.switch(_FINISHED)


class _Kept(threading.local):
    def __init__(self) -> None:
        self.free: list[_Hop] = []


_kept = _Kept()


async def spawn(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a kept greenlet (or a new one), as ``greenlet_spawn`` runs it."""
    current = getcurrent()
    free = _kept.free
    hop = free.pop() if free else _Hop(current)
    if hop.parent is not current:
        hop.parent = current
    hop.gr_context = current.gr_context
    hop.work = (work, args)
    result = hop.switch()
    while result is not _FINISHED and not hop.dead:
        try:
            value = await result
        except BaseException:
            result = hop.throw(*sys.exc_info())
        else:
            result = hop.switch(value)
    if hop.dead:  # ended by GreenletExit thrown into it: what greenlet_spawn returns then
        return result  # type: ignore[no-any-return]
    outcome, hop.outcome = hop.outcome, None
    hop.gr_context = None
    if len(free) < KEEP:
        free.append(hop)
    assert outcome is not None
    returned, value = outcome
    if returned:
        return value  # type: ignore[no-any-return]
    try:
        raise value
    finally:
        value = None  # no cycle through this frame's traceback
