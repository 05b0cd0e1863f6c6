"""The event loop the servers run on: uvloop where installed, else Python's own asyncio loop.

Both the broker (``cloudimaging broker``) and the service (``cloudimaging service``, ``up``)
choose it here, so one process never runs on a loop the other side was not tested on. uvloop
does sockets, TLS and the loop itself in C: the embedded broker carries a message with about
30% fewer instructions on it (counted with callgrind, docs/bench.md), and the service's
requests and messages cost less CPU likewise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: ``auto`` takes uvloop when it is installed; ``uvloop`` insists on it; ``asyncio`` is Python's
#: (the service's ``event_loop`` setting takes the same three).
EVENT_LOOPS: tuple[str, ...] = ("auto", "uvloop", "asyncio")


def chosen_loop(event_loop: str = "auto") -> str:
    """The loop ``event_loop`` comes to here: ``uvloop`` or ``asyncio``. SystemExit when
    uvloop is asked for by name and is not installed (a setting that cannot be honoured is
    an error, not a silent fallback)."""
    if event_loop not in EVENT_LOOPS:
        raise SystemExit(f"cloudimaging: unknown event loop {event_loop!r} (one of {', '.join(EVENT_LOOPS)})")
    if event_loop == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if event_loop == "uvloop":
            raise SystemExit("cloudimaging: the event loop uvloop was asked for, and it is not installed") from None
        return "asyncio"
    return "uvloop"


def run_loop(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """Run ``main`` to its end on the loop ``event_loop`` comes to (``chosen_loop``)."""
    if chosen_loop(event_loop) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop this is called on (what a banner says it runs on)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
