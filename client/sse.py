"""A sans-IO decoder for server-sent events (the WHATWG ``text/event-stream`` format).

It takes lines and returns events, and does no I/O itself, so the job-events stream can be
tested by feeding lines, and the same decoder serves the sync and the async client.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event. ``id`` is the last event id seen so far (it carries over)."""

    event: str
    data: str
    id: str | None = None
    retry: float | None = None


class SseDecoder:
    """Feed it lines without their terminators; it returns an event on each blank line.

    Comments (``: keepalive``) are skipped, ``data`` lines are joined with newlines, an
    unknown field is ignored, and ``retry`` (milliseconds) is reported in seconds so the
    caller can honour the server's reconnection delay.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self.last_id: str | None = None
        self.retry: float | None = None

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> SseEvent | None:
        event, data, has_data = self._event or "message", "\n".join(self._data), self._has_data
        self._event, self._data, self._has_data = "", [], False
        if not has_data:
            return None
        return SseEvent(event, data, self.last_id, self.retry)


def iter_sse(lines: Iterable[str], decoder: SseDecoder | None = None) -> Iterator[SseEvent]:
    """Events from an iterable of lines; an unterminated last event is dropped, as the spec says."""
    decoder = decoder or SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def aiter_sse(lines: AsyncIterable[str], decoder: SseDecoder | None = None) -> AsyncIterator[SseEvent]:
    """The async twin of :func:`iter_sse`."""
    decoder = decoder or SseDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
