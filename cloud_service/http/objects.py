"""Presigned object transfers: the URL's signature is the credential (no bearer token).

PUT stores a job's document (from a client) or a scan's output (from the device); GET serves a
document to the device only while its job is under way.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from cloud_service.http.deps import Deps, get_deps
from cloud_service.http.responses import OrjsonResponse, error_response
from cloud_service.objects import BadSignature
from cloud_service.store import JobNotFound, JobStore
from schemas.enums import JobState

log = logging.getLogger("cloudimaging.http")

router = APIRouter(default_response_class=OrjsonResponse)


@router.get("/objects/{key:path}", tags=["objects"], include_in_schema=False)
async def get_object(key: str, request: Request, deps: Deps = Depends(get_deps)) -> Response:
    objects, audit = deps.objects, deps.audit
    try:
        objects.signer.check(key, "GET", dict(request.query_params))
    except BadSignature as exc:
        log.warning("refused presigned GET of %s: %s", key, exc)
        audit.event("presigned-refused", outcome="denied", client=request.client.host if request.client else None,
                    method="GET", key=key, reason=str(exc))
        return error_response(403, "bad-signature", str(exc))
    ended = await _job_ended(deps.store, key)
    if ended:
        # A GET URL only serves while its job is under way: replaying it later gets nothing.
        audit.event("presigned-refused", outcome="denied", client=request.client.host if request.client else None,
                    method="GET", key=key, reason="the job has ended")
        return error_response(410, "gone", "the job has ended; its documents are no longer served")
    size = await objects.size(key)
    if size is None:
        return error_response(404, "not-found", "no such object")
    request.scope.setdefault("state", {})["user"] = "presigned"
    return StreamingResponse(objects.read_stream(key), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


@router.put("/objects/{key:path}", tags=["objects"], include_in_schema=False)
async def put_object(key: str, request: Request, deps: Deps = Depends(get_deps)) -> Response:
    store, jobs, objects, audit = deps.store, deps.jobs, deps.objects, deps.audit
    try:
        objects.signer.check(key, "PUT", dict(request.query_params))
    except BadSignature as exc:
        log.warning("refused presigned PUT of %s: %s", key, exc)
        audit.event("presigned-refused", outcome="denied", client=request.client.host if request.client else None,
                    method="PUT", key=key, reason=str(exc))
        return error_response(403, "bad-signature", str(exc))
    request.scope.setdefault("state", {})["user"] = "presigned"
    from cloud_service import scanfax

    if scanfax.parse_output_key(key) is not None:  # scan output uploaded by the device
        try:
            stored = await scanfax.store_output(store, objects, key, request.stream(), jobs.max_document_bytes)
        except scanfax.OutputRefused as exc:
            return error_response(exc.status, exc.code, exc.message)
        return OrjsonResponse({"size": stored.size, "sha256": stored.sha256})
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "jobs" or not parts[1].isdigit():
        return error_response(404, "not-found", "no such upload")
    stored = await jobs.store_document(int(parts[1]), request.stream())
    return OrjsonResponse({"size": stored.size, "sha256": stored.sha256})


async def _job_ended(store: JobStore, key: str) -> bool:
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "jobs" or not parts[1].isdigit():
        return False
    try:
        row = await store.get_job(int(parts[1]))
    except JobNotFound:
        return True
    return JobState(row.state).terminal
