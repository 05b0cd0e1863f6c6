"""The SSE decoder, fed line by line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from client.sse import SseDecoder, SseEvent, aiter_sse, iter_sse


def test_job_events_with_keepalives() -> None:
    lines = [
        ": keepalive",
        "",
        "event: job",
        'data: {"id": 1}',
        "",
        ": keepalive",
        "",
        "event: job",
        'data: {"id": 2}',
        "",
    ]
    assert list(iter_sse(lines)) == [SseEvent("job", '{"id": 1}'), SseEvent("job", '{"id": 2}')]


def test_multiline_data_default_type_and_space_handling() -> None:
    lines = ["data:first", "data:  second", "", "data", ""]
    assert list(iter_sse(lines)) == [SseEvent("message", "first\n second"), SseEvent("message", "")]


def test_event_without_data_is_not_dispatched_and_type_resets() -> None:
    lines = ["event: job", "", "data: x", ""]
    assert list(iter_sse(lines)) == [SseEvent("message", "x")]


def test_id_carries_over_and_retry_is_in_seconds() -> None:
    decoder = SseDecoder()
    events = list(iter_sse(["id: 7", "retry: 1500", "data: a", "", "data: b", "", "retry: soon", ""], decoder))
    assert [e.id for e in events] == ["7", "7"]
    assert events[0].retry == 1.5
    assert decoder.last_id == "7" and decoder.retry == 1.5


def test_id_with_nul_is_ignored() -> None:
    decoder = SseDecoder()
    list(iter_sse(["id: a\x00b", "data: x", ""], decoder))
    assert decoder.last_id is None


def test_unknown_fields_and_crlf_are_tolerated() -> None:
    assert list(iter_sse(["foo: bar\r\n", "data: x\r\n", "\r\n"])) == [SseEvent("message", "x")]


def test_unterminated_last_event_is_dropped() -> None:
    assert list(iter_sse(["data: half"])) == []


def test_async_iteration() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in ["event: job", "data: 1", ""]:
            yield line

    async def collect() -> list[SseEvent]:
        return [event async for event in aiter_sse(lines())]

    assert asyncio.run(collect()) == [SseEvent("job", "1")]
