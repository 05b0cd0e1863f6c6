"""A job's changes as server-sent events: one ``job`` event per new version, until it ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from cloud_service.auth import User
from cloud_service.http.deps import Deps, current_user, get_deps
from cloud_service.http.params import JobId
from cloud_service.http.responses import OrjsonResponse
from cloud_service.store import JobStore
from schemas.api import API_PREFIX
from schemas.enums import JobState

#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0

router = APIRouter(default_response_class=OrjsonResponse)


@router.get(f"{API_PREFIX}/jobs/{{job_id}}/events", tags=["jobs"],
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: JobId, request: Request, user: User = Depends(current_user),
                     deps: Deps = Depends(get_deps)) -> StreamingResponse:
    await deps.jobs.get(user, job_id)
    return StreamingResponse(_event_stream(deps.store, job_id, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _event_stream(store: JobStore, job_id: int, request: Request) -> AsyncIterator[bytes]:
    last_version = -1
    last_sent = time.monotonic()
    async with store.feed.watch(job_id) as woken:
        while True:
            row = await store.get_job(job_id)
            if row.version != last_version:
                last_version = row.version
                body = (await store.job_info(row)).model_dump(mode="json")
                yield b"event: job\ndata: " + orjson.dumps(body) + b"\n\n"
                last_sent = time.monotonic()
                if JobState(row.state).terminal:
                    return
            if await request.is_disconnected():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=2.0)
            woken.clear()
            if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                last_sent = time.monotonic()
