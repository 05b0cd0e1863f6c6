"""Time, injectable: retention, enrollment codes and token expiry read ``Clock.now()`` so tests
move time forward instead of sleeping."""

from __future__ import annotations

import time


class Clock:
    """Wall-clock seconds since the epoch (what the database stores)."""

    def now(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, value: float) -> None:
        self._now = value
