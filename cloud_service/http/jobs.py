"""Jobs: create (JSON with an upload URL, multipart, or by document-uri), close, list, view,
cancel, and read back a job's document."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError

from cloud_service import retention
from cloud_service.auth import User
from cloud_service.errors import Refusal
from cloud_service.http.deps import Deps, current_user, get_deps
from cloud_service.http.multipart import read_job_form
from cloud_service.http.params import DocumentNumber, JobId
from cloud_service.http.responses import OrjsonResponse, object_response
from cloud_service.sharing import Access
from schemas.api import API_PREFIX, JobCreate, JobInfo
from schemas.enums import ServiceKind
from schemas.text import check_name

router = APIRouter(default_response_class=OrjsonResponse)


async def describe(deps: Deps, row: Any, full: bool = True, with_history: bool = True) -> JobInfo:
    """The job as the caller may see it: in full, or redacted (another user's job on a
    shared service: id, service, state and times only)."""
    job = await deps.store.job_info(row, with_history=with_history and full)
    if not full:
        return job.model_copy(update={"owner": "", "ticket": {}, "documents": [], "history": [],
                                      "state_message": None, "uuid": "", "redacted": True,
                                      "destination_statuses": None})
    return job.model_copy(update={"retention": retention.describe(row, deps.config),
                                  "price_per_impression": row.price})


async def info(deps: Deps, row: Any, upload_url: str | None = None) -> dict:
    job = await describe(deps, row)
    if upload_url:
        job = job.model_copy(update={"upload_url": upload_url})
    return job.model_dump(mode="json")


@router.post(f"{API_PREFIX}/jobs", tags=["jobs"], status_code=201,
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "job": {"type": "string", "description": "JobCreate as JSON"},
                     "document": {"type": "string", "format": "binary"}}}}}}})
async def create_job(request: Request, user: User = Depends(current_user),
                     deps: Deps = Depends(get_deps)) -> OrjsonResponse:
    jobs, config = deps.jobs, deps.config
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _create_multipart(deps, request, user)
    try:
        spec = JobCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Refusal(422, "bad-request", f"{where}: {first['msg']}", attribute=where or None) from None
    if spec.document_size is not None and spec.document_size > jobs.documents.max_bytes:
        raise Refusal(413, "too-large", f"the document is larger than this service takes "
                                        f"({jobs.documents.max_bytes} bytes)", attribute="document_size")
    if spec.kind is ServiceKind.SCAN:  # no input document: fetchable at once
        row = await jobs.create_scan(user, spec.service, spec.ticket, _retention(spec))
        return OrjsonResponse(await info(deps, row), status_code=201)
    fmt = spec.document_format or spec.ticket.get("document-format") or "application/octet-stream"
    if spec.document_uri is not None:
        chunks = _fetch_uri(str(spec.document_uri), config.allow_insecure_document_uri, deps.ca_file)
        row = await jobs.create(user, spec.kind, spec.service, spec.ticket, fmt,
                                spec.document_name or _name_from_uri(str(spec.document_uri)), None,
                                retention=_retention(spec))
        try:
            await jobs.store_document(row.id, chunks)
        except Refusal:
            await _abandon(deps, row.id)
            raise
        except (httpx.HTTPError, OSError, ValueError) as exc:
            await _abandon(deps, row.id)
            raise Refusal(400, "document-uri-failed", f"could not fetch document-uri: {exc}") from None
        row = await jobs.close(user, row.id)
        return OrjsonResponse(await info(deps, row), status_code=201)
    if not spec.upload:
        raise Refusal(422, "bad-request", "give a document: multipart, document_uri, or upload=true")
    row = await jobs.create(user, spec.kind, spec.service, spec.ticket, fmt, spec.document_name, None,
                            retention=_retention(spec))
    (upload,) = await jobs.documents.urls(row.id, "PUT")
    return OrjsonResponse(await info(deps, row, upload.url), status_code=201)


async def _create_multipart(deps: Deps, request: Request, user: User) -> OrjsonResponse:
    form = await read_job_form(request, deps.jobs.documents.max_bytes)
    try:
        spec = JobCreate.model_validate_json(form.job if form.job is not None else "{}")
        if form.document is None:
            raise Refusal(422, "bad-request", "multipart needs a 'document' file part")
        fmt = (spec.document_format or spec.ticket.get("document-format") or form.content_type
               or "application/octet-stream")
        row = await deps.jobs.create(user, spec.kind, spec.service, spec.ticket, fmt,
                                     spec.document_name or _filename(form.filename), form.chunks(),
                                     retention=_retention(spec))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Refusal(422, "bad-request", f"job.{where}: {first['msg']}") from None
    finally:
        form.close()
    return OrjsonResponse(await info(deps, row), status_code=201)


@router.post(f"{API_PREFIX}/jobs/{{job_id}}/close", tags=["jobs"])
async def close_job(job_id: JobId, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    return await info(deps, await deps.jobs.close(user, job_id))


@router.get(f"{API_PREFIX}/jobs", tags=["jobs"])
async def list_jobs(all: bool = False, kind: ServiceKind | None = None, service: str | None = None,
                    limit: int = 500, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    """The caller's jobs (an admin's: everyone's). With ``service``, the queue of that
    service as the caller may see it: their own jobs in full, everyone else's redacted."""
    store = deps.store
    owner: str | None = None if user.is_admin else user.name
    if service is not None and not user.is_admin:
        found = await store.service((kind or ServiceKind.PRINT).value, service)
        if found is not None:
            device = await store.device(found.device_id)
            if device is not None and (await Access.load(store, user)).sees(device, found.name):
                owner = None
    rows = await store.list_jobs(owner=owner, include_ended=all, kind=kind.value if kind else None,
                                 service=service, limit=max(1, min(limit, 5000)))
    out = []
    for row in rows:
        job = await describe(deps, row, full=user.is_admin or row.owner == user.name, with_history=False)
        out.append(job.model_dump(mode="json"))
    return {"jobs": out}


@router.get(f"{API_PREFIX}/jobs/{{job_id}}", tags=["jobs"])
async def get_job(job_id: JobId, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> JobInfo:
    row, full = await deps.jobs.view(user, job_id)
    return await describe(deps, row, full)


@router.get(f"{API_PREFIX}/jobs/{{job_id}}/documents/{{number}}", tags=["jobs"],
            responses={200: {"content": {"application/octet-stream": {}}}})
async def get_document(job_id: JobId, number: DocumentNumber, user: User = Depends(current_user),
                       deps: Deps = Depends(get_deps)) -> Response:
    """A job's document, for the job's owner or an admin only (others: 403 or 404)."""
    objects = deps.objects
    row, full = await deps.jobs.view(user, job_id)
    if not full or (row.owner != user.name and not user.is_admin):
        raise Refusal(403, "forbidden", f"job {job_id} is not yours")
    doc = next((d for d in await deps.store.documents(job_id) if d.number == number), None)
    peeked = await objects.peek(doc.object_key) if doc is not None else None
    if doc is None or peeked is None:
        raise Refusal(404, "not-found", f"job {job_id} has no document {number} (any more)")
    return object_response(objects, doc.object_key, peeked, doc.format, {"Cache-Control": "no-store"})


#: The largest PDF drawn for a thumbnail: a thumbnail is a glance at a scan, not a document viewer.
THUMBNAIL_MAX_BYTES = 64 * 1024 * 1024
PageNumber = Annotated[int, Path(ge=1, le=100_000, description="a page's number in a PDF document")]


@router.get(f"{API_PREFIX}/jobs/{{job_id}}/documents/{{number}}/pages/{{page}}/thumbnail", tags=["jobs"],
            responses={200: {"content": {"image/png": {}}}})
async def get_thumbnail(job_id: JobId, number: DocumentNumber, page: PageNumber,
                        user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> Response:
    """A small PNG of one page of a job's PDF document (a scan's pages, shown by the console),
    for whoever may read the document itself: the job's owner or an admin (others: 403 or 404)."""
    row, full = await deps.jobs.view(user, job_id)
    if not full or (row.owner != user.name and not user.is_admin):
        raise Refusal(403, "forbidden", f"job {job_id} is not yours")
    doc = next((d for d in await deps.store.documents(job_id) if d.number == number), None)
    size = await deps.objects.size(doc.object_key) if doc is not None else None
    if doc is None or size is None:
        raise Refusal(404, "not-found", f"job {job_id} has no document {number} (any more)")
    if doc.format != "application/pdf":
        raise Refusal(415, "document-format-not-supported", f"document {number} is not a PDF ({doc.format})")
    if size > THUMBNAIL_MAX_BYTES:
        raise Refusal(413, "too-large", f"document {number} is too large for a thumbnail")
    data = b"".join([chunk async for chunk in deps.objects.read_stream(doc.object_key)])
    made = await deps.thumbnails.thumbnail(data, page)  # in a worker process: PDFium is not thread-safe
    if made.error is not None:
        raise Refusal(422, "document-format-error", f"document {number} cannot be rendered ({made.error})")
    if made.png is None:
        raise Refusal(404, "not-found", f"document {number} of job {job_id} has no page {page}")
    # A job's document never changes once stored: the browser may keep the picture (privately).
    # X-Page-Count tells the console how many thumbnails to ask for.
    return Response(made.png, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600", "X-Page-Count": str(made.pages)})


@router.post(f"{API_PREFIX}/jobs/{{job_id}}/cancel", tags=["jobs"])
async def cancel_job(job_id: JobId, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    return await info(deps, await deps.jobs.cancel(user, job_id))


@router.post(f"{API_PREFIX}/jobs/{{job_id}}/hold", tags=["jobs"])
async def hold_job(job_id: JobId, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    """Hold-Job: the job waits (pending-held) until released; 409 once a device has claimed it."""
    return await info(deps, await deps.jobs.hold(user, job_id))


@router.post(f"{API_PREFIX}/jobs/{{job_id}}/release", tags=["jobs"])
async def release_job(job_id: JobId, user: User = Depends(current_user), deps: Deps = Depends(get_deps)) -> dict:
    """Release-Job: a held job becomes fetchable again."""
    return await info(deps, await deps.jobs.release(user, job_id))


async def _abandon(deps: Deps, job_id: int) -> None:
    """Cancel a job whose document did not arrive, unless it has ended already (a document
    refused as too large aborts its job with that reason; the refusal is what the client sees)."""
    with contextlib.suppress(Refusal):
        await deps.jobs.cancel(User("system", "admin"), job_id)


def _retention(spec: JobCreate) -> dict[str, Any] | None:
    return spec.retention.model_dump(exclude_none=True) if spec.retention is not None else None


def _filename(filename: str | None) -> str | None:
    """The multipart file's name as the document's name, checked as the wire checks a Name: a
    name the device protocol cannot carry would make a job no device can ever take."""
    if not filename:
        return None
    try:
        return check_name(filename)
    except ValueError as exc:
        raise Refusal(422, "bad-request", f"document filename: {exc}", attribute="document_name") from None


def _name_from_uri(uri: str) -> str | None:
    """The last path segment of a document-uri (the client gave no name): kept only if it is a
    valid Name, since the client did not choose it."""
    name = urlsplit(uri).path.rsplit("/", 1)[-1][:255]
    try:
        return check_name(name) if name else None
    except ValueError:
        return None


async def _check_public_host(host: str) -> None:
    """Refuse document URIs that point inside our network (SSRF)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise ValueError(f"{host} resolves to a non-public address")


async def _fetch_uri(uri: str, allow_insecure: bool, ca_file: str | None) -> AsyncIterator[bytes]:
    parts = urlsplit(uri)
    if parts.scheme != "https" and not (allow_insecure and parts.scheme == "http"):
        raise ValueError("document-uri must be https")
    if not allow_insecure:
        await _check_public_host(parts.hostname or "")
    verify: Any = True
    if ca_file:
        import ssl

        verify = ssl.create_default_context(cafile=ca_file)
        verify.load_default_certs()
    async with httpx.AsyncClient(timeout=60.0, verify=verify, follow_redirects=False) as client, \
            client.stream("GET", uri) as response:
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        async for chunk in response.aiter_bytes(256 * 1024):
            yield chunk
