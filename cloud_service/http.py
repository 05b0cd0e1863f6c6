"""The HTTP bridge (FastAPI over TLS): what clients use, plus presigned object transfers.

Thin by design: each route authenticates, calls JobOperations, and turns Refusal into a JSON
error ``{"error": {"code", "message", "attribute"?, "supported"?}}`` with the right status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_service import retention
from cloud_service.audit import AuditLog
from cloud_service.auth import User, authenticate
from cloud_service.clf import ClfLog
from cloud_service.config import ServiceConfig
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import DocumentKey
from cloud_service.errors import Refusal
from cloud_service.http_manage import add_routes
from cloud_service.jobs import JobOperations
from cloud_service.objects import BadSignature, LocalObjectStore
from cloud_service.registration import Registry
from cloud_service.sharing import Access
from cloud_service.store import JobNotFound, JobStore
from schemas.api import API_PREFIX, JobCreate, JobInfo, ServiceInfo, TicketCheck
from schemas.enums import JobState, ServiceKind

log = logging.getLogger("cloudimaging.http")
KEEPALIVE_SECONDS = 15.0


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (fast, strict UTF-8)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ClfMiddleware:
    """One CLF line per HTTP request, with the authenticated user and the body size sent."""

    def __init__(self, app: ASGIApp, clf: ClfLog) -> None:
        self.app = app
        self.clf = clf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"status": 500, "bytes": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client") or ("-", 0)
            user = scope.get("state", {}).get("user")
            self.clf.http(client[0], user, scope["method"], scope["path"], scope.get("http_version", "1.1"),
                          state["status"], state["bytes"])


def error_response(status: int, code: str, message: str, attribute: str | None = None,
                   supported: Any = None) -> OrjsonResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if attribute is not None:
        body["attribute"] = attribute
    if supported is not None:
        body["supported"] = supported
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return OrjsonResponse({"error": body}, status_code=status, headers=headers)


def create_app(*, store: JobStore, jobs: JobOperations, devices: DeviceProtocol, objects: LocalObjectStore,
               clf: ClfLog, url_ttl: float, allow_insecure_document_uri: bool = False,
               ca_file: str | None = None, ipp_base: Callable[[], str] | None = None,
               request_status: Callable[[str], Awaitable[bool]] | None = None,
               audit: AuditLog | None = None, registry: Registry | None = None,
               config: ServiceConfig | None = None) -> FastAPI:
    app = FastAPI(title="cloudimaging", version="0.1.0", default_response_class=OrjsonResponse,
                  description="Cloud Print Service after the PWG Cloud Imaging Model. "
                              "Authenticate with `Authorization: Bearer <token>`.")
    app.add_middleware(ClfMiddleware, clf=clf)
    audit = audit or AuditLog(clf.path.parent / "security.log")
    config = config or ServiceConfig()

    @app.exception_handler(Refusal)
    async def _job_error(request: Request, exc: Refusal) -> OrjsonResponse:
        if exc.status == 403:
            audit.event("access-denied", outcome="denied", actor=request.scope.get("state", {}).get("user"),
                        client=request.client.host if request.client else None, method=request.method,
                        path=request.url.path, code=exc.code)
        return error_response(exc.status, exc.code, exc.message, exc.attribute, exc.supported)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> OrjsonResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("body",))
        return error_response(422, "bad-request", f"{where}: {first['msg']}", attribute=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def current_user(request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        client = request.client.host if request.client else None
        if scheme.lower() != "bearer" or not token:
            audit.event("auth-failed", outcome="denied", client=client, method=request.method,
                        path=request.url.path, reason="no bearer token")
            raise Refusal(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
        user = await authenticate(store, token.strip())
        if user is None:
            # The token is not logged, not even in part: only that one failed, from where.
            audit.event("auth-failed", outcome="denied", client=client, method=request.method,
                        path=request.url.path, reason="invalid, expired or revoked token")
            raise Refusal(401, "unauthorized", "invalid or revoked token")
        request.scope.setdefault("state", {})["user"] = user.name
        return user

    # ------------------------------------------------------------------ health and metrics

    @app.get("/healthz", tags=["operators"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operators"], response_class=Response)
    async def metrics() -> Response:
        lines = ["# TYPE cloudimaging_jobs gauge"]
        counts: dict[str, int] = {}
        for row in await store.list_jobs(owner=None, include_ended=True, limit=1_000_000):
            counts[row.state] = counts.get(row.state, 0) + 1
        for state in JobState:
            lines.append(f'cloudimaging_jobs{{state="{state.value}"}} {counts.get(state.value, 0)}')
        services = await store.services()
        lines.append("# TYPE cloudimaging_devices_online gauge")
        lines.append(f"cloudimaging_devices_online {len({d.id for _, d, _ in services if d.online})}")
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ services

    async def service_info(kind: str | None, name: str | None = None, user: User | None = None) -> list[ServiceInfo]:
        out = []
        access = await Access.load(store, user) if user is not None else None
        for svc, dev, queued in await store.services(kind):
            if name is not None and svc.name != name:
                continue
            if access is not None and not access.sees(dev, svc.name):
                continue
            status = devices.effective(svc.state, svc.state_reasons, svc.state_message, dev.online)
            out.append(ServiceInfo(kind=ServiceKind(svc.kind), name=svc.name, device_id=dev.id,
                                   state=status.state, state_reasons=list(status.reasons),
                                   state_message=status.message, info=svc.info, location=svc.location,
                                   make_and_model=svc.make_and_model, online=dev.online,
                                   last_seen=dev.last_seen, queued_jobs=queued, capabilities=svc.capabilities,
                                   ipp_uri=f"{ipp_base()}/ipp/print/{svc.name}"  # the IPP front serves print only
                                   if ipp_base and svc.kind == ServiceKind.PRINT.value else None))
        return out

    @app.get(f"{API_PREFIX}/services", tags=["services"])
    async def list_services(kind: ServiceKind | None = None, user: User = Depends(current_user)) -> dict:
        """The services shared with the caller (all of them for an admin)."""
        found = await service_info(kind.value if kind else None, user=user)
        return {"services": [s.model_dump(mode="json") for s in found]}

    @app.get(f"{API_PREFIX}/services/{{kind}}/{{name}}", tags=["services"])
    async def get_service(kind: ServiceKind, name: str, user: User = Depends(current_user)) -> ServiceInfo:
        found = await service_info(kind.value, name, user=user)
        if not found:
            raise Refusal(404, "not-found", f"no {kind.value} service named {name!r}")
        return found[0]

    @app.post(f"{API_PREFIX}/services/{{kind}}/{{name}}/validate", tags=["services"])
    async def validate(kind: ServiceKind, name: str, body: TicketCheck,
                       user: User = Depends(current_user)) -> dict:
        service = await jobs.resolve_service(kind, name, user)
        jobs.check_ticket(service, body.ticket, body.document_format)
        return {"ok": True}

    @app.post(f"{API_PREFIX}/services/{{kind}}/{{name}}/status-request", tags=["services"])
    async def status_request(kind: ServiceKind, name: str, user: User = Depends(current_user)) -> ServiceInfo:
        """Ask the device for its status now (model requirement 11). 504 if it does not answer:
        the device is then marked unreachable (its services show stopped, offline-report)."""
        service = await jobs.resolve_service(kind, name, user)
        if request_status is None or not await request_status(service.device_id):
            raise Refusal(504, "device-unreachable", f"the device of {name!r} did not answer a status request")
        return (await service_info(kind.value, name))[0]

    # ------------------------------------------------------------------ jobs

    async def describe(row: Any, full: bool = True, with_history: bool = True) -> JobInfo:
        """The job as the caller may see it: in full, or redacted (another user's job on a
        shared service: id, service, state and times only)."""
        job = await store.job_info(row, with_history=with_history and full)
        if not full:
            return job.model_copy(update={"owner": "", "ticket": {}, "documents": [], "history": [],
                                          "state_message": None, "uuid": "", "redacted": True,
                                          "destination_statuses": None})
        return job.model_copy(update={"retention": retention.describe(row, config),
                                      "price_per_impression": row.price})

    async def info(row: Any, upload_url: str | None = None) -> dict:
        job = await describe(row)
        if upload_url:
            job = job.model_copy(update={"upload_url": upload_url})
        return job.model_dump(mode="json")

    @app.post(f"{API_PREFIX}/jobs", tags=["jobs"], status_code=201,
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "job": {"type": "string", "description": "JobCreate as JSON"},
                      "document": {"type": "string", "format": "binary"}}}}}}})
    async def create_job(request: Request, user: User = Depends(current_user)) -> OrjsonResponse:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return await _create_multipart(request, user)
        try:
            spec = JobCreate.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise Refusal(422, "bad-request", f"{where}: {first['msg']}", attribute=where or None) from None
        if spec.kind is ServiceKind.SCAN:  # no input document: fetchable at once
            row = await jobs.create_scan(user, spec.service, spec.ticket, _retention(spec))
            return OrjsonResponse(await info(row), status_code=201)
        fmt = spec.document_format or spec.ticket.get("document-format") or "application/octet-stream"
        if spec.document_uri is not None:
            chunks = _fetch_uri(str(spec.document_uri), allow_insecure_document_uri, ca_file)
            row = await jobs.create(user, spec.kind, spec.service, spec.ticket, fmt,
                                    spec.document_name or _name_from_uri(str(spec.document_uri)), None,
                                    retention=_retention(spec))
            try:
                await jobs.store_document(row.id, chunks)
            except Refusal:
                await jobs.cancel(User("system", "admin"), row.id)
                raise
            except (httpx.HTTPError, OSError, ValueError) as exc:
                await jobs.cancel(User("system", "admin"), row.id)
                raise Refusal(400, "document-uri-failed", f"could not fetch document-uri: {exc}") from None
            row = await jobs.close(user, row.id)
            return OrjsonResponse(await info(row), status_code=201)
        if not spec.upload:
            raise Refusal(422, "bad-request", "give a document: multipart, document_uri, or upload=true")
        row = await jobs.create(user, spec.kind, spec.service, spec.ticket, fmt, spec.document_name, None,
                                retention=_retention(spec))
        (upload,) = await jobs.documents.urls(row.id, "PUT")
        return OrjsonResponse(await info(row, upload.url), status_code=201)

    async def _create_multipart(request: Request, user: User) -> OrjsonResponse:
        form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
        try:
            raw_job = form.get("job")
            spec = JobCreate.model_validate_json(raw_job if isinstance(raw_job, str) else "{}")
            upload = form.get("document")
            if upload is None or isinstance(upload, str):
                raise Refusal(422, "bad-request", "multipart needs a 'document' file part")
            fmt = (spec.document_format or spec.ticket.get("document-format") or upload.content_type
                   or "application/octet-stream")

            async def chunks() -> AsyncIterator[bytes]:
                while data := await upload.read(256 * 1024):
                    yield data

            row = await jobs.create(user, spec.kind, spec.service, spec.ticket, fmt,
                                    spec.document_name or upload.filename, chunks(), retention=_retention(spec))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise Refusal(422, "bad-request", f"job.{where}: {first['msg']}") from None
        finally:
            await form.close()
        return OrjsonResponse(await info(row), status_code=201)

    @app.post(f"{API_PREFIX}/jobs/{{job_id}}/close", tags=["jobs"])
    async def close_job(job_id: int, user: User = Depends(current_user)) -> dict:
        return await info(await jobs.close(user, job_id))

    @app.get(f"{API_PREFIX}/jobs", tags=["jobs"])
    async def list_jobs(all: bool = False, kind: ServiceKind | None = None, service: str | None = None,
                        limit: int = 500, user: User = Depends(current_user)) -> dict:
        """The caller's jobs (an admin's: everyone's). With ``service``, the queue of that
        service as the caller may see it: their own jobs in full, everyone else's redacted."""
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
            job = await describe(row, full=user.is_admin or row.owner == user.name, with_history=False)
            out.append(job.model_dump(mode="json"))
        return {"jobs": out}

    @app.get(f"{API_PREFIX}/jobs/{{job_id}}", tags=["jobs"])
    async def get_job(job_id: int, user: User = Depends(current_user)) -> JobInfo:
        row, full = await jobs.view(user, job_id)
        return await describe(row, full)

    @app.get(f"{API_PREFIX}/jobs/{{job_id}}/documents/{{number}}", tags=["jobs"],
             responses={200: {"content": {"application/octet-stream": {}}}})
    async def get_document(job_id: int, number: int, user: User = Depends(current_user)) -> Response:
        """A job's document, for the job's owner or an admin only (others: 403 or 404)."""
        row, full = await jobs.view(user, job_id)
        if not full or (row.owner != user.name and not user.is_admin):
            raise Refusal(403, "forbidden", f"job {job_id} is not yours")
        doc = next((d for d in await store.documents(job_id) if d.number == number), None)
        size = await objects.size(doc.object_key) if doc is not None else None
        if doc is None or size is None:
            raise Refusal(404, "not-found", f"job {job_id} has no document {number} (any more)")
        return StreamingResponse(objects.read_stream(doc.object_key), media_type=doc.format,
                                 headers={"Content-Length": str(size), "Cache-Control": "no-store"})

    @app.post(f"{API_PREFIX}/jobs/{{job_id}}/cancel", tags=["jobs"])
    async def cancel_job(job_id: int, user: User = Depends(current_user)) -> dict:
        return await info(await jobs.cancel(user, job_id))

    @app.get(f"{API_PREFIX}/jobs/{{job_id}}/events", tags=["jobs"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(job_id: int, request: Request, user: User = Depends(current_user)) -> StreamingResponse:
        await jobs.get(user, job_id)
        return StreamingResponse(_event_stream(job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _event_stream(job_id: int, request: Request) -> AsyncIterator[bytes]:
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

    # ------------------------------------------------------------------ presigned objects

    @app.get("/objects/{key:path}", tags=["objects"], include_in_schema=False)
    async def get_object(key: str, request: Request) -> Response:
        try:
            objects.signer.check(key, "GET", dict(request.query_params))
        except BadSignature as exc:
            log.warning("refused presigned GET of %s: %s", key, exc)
            audit.event("presigned-refused", outcome="denied", client=request.client.host if request.client else None,
                        method="GET", key=key, reason=str(exc))
            return error_response(403, "bad-signature", str(exc))
        ended = await _job_ended(key)
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

    @app.put("/objects/{key:path}", tags=["objects"], include_in_schema=False)
    async def put_object(key: str, request: Request) -> Response:
        try:
            objects.signer.check(key, "PUT", dict(request.query_params))
        except BadSignature as exc:
            log.warning("refused presigned PUT of %s: %s", key, exc)
            audit.event("presigned-refused", outcome="denied", client=request.client.host if request.client else None,
                        method="PUT", key=key, reason=str(exc))
            return error_response(403, "bad-signature", str(exc))
        request.scope.setdefault("state", {})["user"] = "presigned"
        try:
            document = DocumentKey.parse(key)
        except ValueError:
            return error_response(404, "not-found", "no such upload")
        stored = await jobs.documents.accept(document, request.stream())  # input document or scan output
        return OrjsonResponse({"size": stored.size, "sha256": stored.sha256})

    async def _job_ended(key: str) -> bool:
        try:
            document = DocumentKey.parse(key)
        except ValueError:
            return False
        try:
            row = await store.get_job(document.job_id)
        except JobNotFound:
            return True
        return JobState(row.state).terminal

    add_routes(app, store=store, jobs=jobs, current_user=current_user, audit=audit, registry=registry)
    return app


def _retention(spec: JobCreate) -> dict[str, Any] | None:
    return spec.retention.model_dump(exclude_none=True) if spec.retention is not None else None


def _name_from_uri(uri: str) -> str | None:
    name = urlsplit(uri).path.rsplit("/", 1)[-1]
    return name[:255] or None


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


