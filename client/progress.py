"""An upload progress bar for a terminal's stderr.

Drawn only on a TTY: in a pipe or a log the carriage-return redraws are noise, so there it
stays silent. Redraws are throttled, so a fast upload does not spend its time printing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from client.render import clean, human_size


class ProgressBar:
    """``progress(sent, total)`` callback drawing ``label  42% [#####    ] 1.2M/2.9M``."""

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        width: int = 30,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = clean(label)
        self._width = width
        self._min_interval = min_interval
        self._clock = clock
        self._last_draw: float | None = None
        self._drawn = False
        self._finished = False

    @classmethod
    def for_stream(cls, stream: TextIO, label: str) -> ProgressBar | None:
        """A bar when ``stream`` is a terminal, else None (no progress output at all)."""
        isatty = getattr(stream, "isatty", None)
        return cls(stream, label) if isatty is not None and isatty() else None

    def render(self, sent: int, total: int) -> str:
        fraction = min(sent / total, 1.0) if total > 0 else 1.0
        filled = int(fraction * self._width)
        bar = "#" * filled + " " * (self._width - filled)
        return f"{self._label}  {fraction * 100:3.0f}% [{bar}] {human_size(sent)}/{human_size(total)}"

    def __call__(self, sent: int, total: int) -> None:
        if self._finished:
            return
        now = self._clock()
        done = sent >= total
        if not done and self._last_draw is not None and now - self._last_draw < self._min_interval:
            return
        self._last_draw = now
        self._stream.write("\r" + self.render(sent, total))
        self._drawn = True
        if done:
            self.finish()
        else:
            self._stream.flush()

    def finish(self) -> None:
        """End the bar's line (after success, failure or Ctrl-C) so later output starts clean."""
        if self._drawn and not self._finished:
            self._stream.write("\n")
            self._stream.flush()
        self._finished = True
