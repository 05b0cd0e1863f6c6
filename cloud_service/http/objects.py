"""Presigned object transfers: the URL's signature is the credential (no bearer token).

PUT stores a job's document (from a client) or a scan's output (from the device); GET serves a
document to the device only while its job is under way. In the service's app a GET is answered
before FastAPI's routing by this router's own ``get_object`` (``cloud_service.http.shortcuts``).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cloud_service.documents import DocumentKey
from cloud_service.http.deps import Deps, get_deps
from cloud_service.http.multipart import declared_length
from cloud_service.http.responses import OrjsonResponse, error_response, object_response
from cloud_service.objects import BadSignature
from cloud_service.store import JobStore
from schemas.enums import JobState

log = logging.getLogger("cloudimaging.http")

router = APIRouter(default_response_class=OrjsonResponse)

#: Where presigned object URLs live.
PREFIX = "/objects/"


def _refused(deps: Deps, request: Request, method: str, key: str, reason: str) -> None:
    deps.audit.event("presigned-refused", outcome="denied", client=request.client.host if request.client else None,
                     method=method, key=key, reason=reason)


def _signature_refusal(deps: Deps, request: Request, method: str, key: str) -> Response | None:
    """None if the URL's signature allows ``method`` on ``key`` now; else the 403 to answer."""
    try:
        deps.objects.signer.check(key, method, dict(request.query_params))
    except BadSignature as exc:
        log.warning("refused presigned %s of %s: %s", method, key, exc)
        _refused(deps, request, method, key, str(exc))
        return error_response(403, "bad-signature", str(exc))
    return None


@router.get(PREFIX + "{key:path}", tags=["objects"], include_in_schema=False)
async def get_object(key: str, request: Request, deps: Deps = Depends(get_deps)) -> Response:
    objects = deps.objects
    if (refusal := _signature_refusal(deps, request, "GET", key)) is not None:
        return refusal
    if await _job_ended(deps.store, key):
        # A GET URL only serves while its job is under way: replaying it later gets nothing.
        _refused(deps, request, "GET", key, "the job has ended")
        return error_response(410, "gone", "the job has ended; its documents are no longer served")
    peeked = await objects.peek(key)
    if peeked is None:
        return error_response(404, "not-found", "no such object")
    request.scope.setdefault("state", {})["user"] = "presigned"
    return object_response(objects, key, peeked, "application/octet-stream")


@router.put(PREFIX + "{key:path}", tags=["objects"], include_in_schema=False)
async def put_object(key: str, request: Request, deps: Deps = Depends(get_deps)) -> Response:
    if (refusal := _signature_refusal(deps, request, "PUT", key)) is not None:
        return refusal
    request.scope.setdefault("state", {})["user"] = "presigned"
    try:
        document = DocumentKey.parse(key)
    except ValueError:
        return error_response(404, "not-found", "no such upload")
    # Input document or scan output; a declared size over the cap is refused before reading.
    stored = await deps.jobs.documents.accept(document, request.stream(), declared_length(request))
    return OrjsonResponse({"size": stored.size, "sha256": stored.sha256})


async def _job_ended(store: JobStore, key: str) -> bool:
    """Whether the document's job has ended (or never was): its state alone is read. (Reading it
    at once with the object, rather than before, measured no faster: two tasks cost what the
    overlap saved.)"""
    try:
        document = DocumentKey.parse(key)
    except ValueError:
        return False
    state = await store.job_state(document.job_id)
    return state is None or JobState(state).terminal
