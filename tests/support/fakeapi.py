"""An in-memory stand-in for the HTTP API, plugged into httpx as a MockTransport.

It follows the API contract the client is written against (routes, bodies, error envelope,
SSE framing) so client and CLI tests run without sockets. End-to-end tests against the real
service live elsewhere. No tests here; helpers only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

from client.api import CloudImagingClient
from schemas.model.ticket import TicketError, parse_print_ticket, validate_print_ticket
from schemas.tickets import PrintCapabilities

BASE = "https://svc.test"
TOKEN = "good-token"
STORE = "https://store.test"

CAPS = PrintCapabilities(
    sides_supported=["one-sided", "two-sided-long-edge"],
    media_supported=["iso_a4_210x297mm", "na_letter_8.5x11in"],
    print_color_mode_supported=["monochrome", "color"],
    print_quality_supported=[3, 4, 5],
    page_ranges_supported=True,
    number_up_supported=[1, 2],
    finishings_supported=[3, 4, 5],
    document_format_supported=["application/pdf", "text/plain", "image/png"],
)


def service_dict(name: str = "office", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "print",
        "name": name,
        "device_id": f"dev-{name}",
        "state": "idle",
        "state_reasons": [],
        "state_message": None,
        "info": f"{name} printer",
        "location": "2nd floor",
        "make_and_model": "Acme LaserWriter 9000",
        "online": True,
        "last_seen": 1_700_000_000.0,
        "queued_jobs": 0,
        "capabilities": CAPS.wire(),
        "ipp_uri": None,
    }
    data.update(overrides)
    return data


def job_dict(job_id: int, service: str = "office", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job_id,
        "uuid": f"urn:uuid:00000000-0000-0000-0000-{job_id:012d}",
        "kind": "print",
        "service": service,
        "device_id": f"dev-{service}",
        "owner": "alice",
        "state": "pending",
        "state_reasons": ["job-queued"],
        "state_message": None,
        "version": 1,
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
        "completed_at": None,
        "impressions_completed": 0,
        "ticket": {},
        "documents": [
            {
                "number": 1,
                "name": "doc.pdf",
                "format": "application/pdf",
                "size": 2048,
                "sha256": None,
                "state": "pending",
                "impressions_completed": 0,
            }
        ],
        "history": [],
        "upload_url": None,
    }
    data.update(overrides)
    return data


def error(status: int, code: str, message: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, **extra}})


class DroppingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Yields chunks, then fails like a connection cut mid-stream (if ``drop``)."""

    def __init__(self, chunks: list[bytes], drop: bool) -> None:
        self.chunks, self.drop = chunks, drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def sse(job: dict[str, Any]) -> bytes:
    return b": keepalive\n\nevent: job\ndata: " + json.dumps(job).encode() + b"\n\n"


@dataclass
class FakeService:
    """The API's routes over dicts. Knobs: ``timelines``, ``drops``, ``events_status``,
    ``upload_host``, ``corrupt_receipt``, ``fail_upload``."""

    services: list[dict[str, Any]] = field(default_factory=lambda: [service_dict()])
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[int, bytes] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: job id -> successive (state, reasons, impressions) the events stream walks through
    timelines: dict[int, list[tuple[str, list[str], int]]] = field(default_factory=dict)
    #: job id -> how many upcoming events connections drop after their first event
    drops: dict[int, int] = field(default_factory=dict)
    #: when set, the events URL answers this status (e.g. 503: no stream -> polling)
    events_status: int | None = None
    upload_host: str = BASE
    corrupt_receipt: bool = False
    fail_upload: bool = False
    next_id: int = 1

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, **kwargs: Any) -> CloudImagingClient:
        kwargs.setdefault("sleep", lambda _s: None)
        return CloudImagingClient(BASE, TOKEN, transport=self.transport(), **kwargs)

    def calls(self, method: str, path_part: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and path_part in r.url.path]

    # ------------------------------------------------------------------ routing

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.path.startswith("/objects/"):
            return self._put_object(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "unauthorized", "invalid or revoked token")
        path = url.path
        parts = path.strip("/").split("/")
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if parts[:3] == ["api", "v1", "services"]:
            return self._services(request, parts[3:])
        if parts[:3] == ["api", "v1", "jobs"]:
            return self._jobs(request, parts[3:])
        return error(404, "not-found", "Not Found")

    def _services(self, request: httpx.Request, rest: list[str]) -> httpx.Response:
        if not rest:
            kind = request.url.params.get("kind")
            return httpx.Response(200, json={"services": [s for s in self.services if s["kind"] == kind]})
        kind, name = rest[0], rest[1]
        found = [s for s in self.services if s["kind"] == kind and s["name"] == name]
        if not found:
            return error(404, "not-found", f"no {kind} service named {name!r}")
        if len(rest) == 3 and rest[2] == "validate":
            body = json.loads(request.content)
            refused = self._check(body.get("ticket", {}), body.get("document_format"))
            return refused or httpx.Response(200, json={"ok": True})
        return httpx.Response(200, json=found[0])

    def _check(self, ticket: dict[str, Any], fmt: str | None) -> httpx.Response | None:
        try:
            validate_print_ticket(parse_print_ticket(ticket), CAPS, fmt)
        except TicketError as exc:
            p = exc.first
            return error(400, "unsupported-attribute", p.message, attribute=p.attribute, supported=p.supported)
        return None

    def _create(self, spec: dict[str, Any]) -> dict[str, Any] | httpx.Response:
        if not self.services:
            return error(404, "not-found", "no print service is registered yet")
        refused = self._check(spec.get("ticket", {}), spec.get("document_format"))
        if refused is not None:
            return refused
        job_id, self.next_id = self.next_id, self.next_id + 1
        service = spec.get("service") or self.services[0]["name"]
        job = job_dict(job_id, service, ticket=spec.get("ticket", {}))
        fmt = spec.get("document_format") or "application/octet-stream"
        job["documents"][0].update(name=spec.get("document_name"), format=fmt, size=None)
        self.jobs[job_id] = job
        return job

    def _jobs(self, request: httpx.Request, rest: list[str]) -> httpx.Response:
        if not rest:
            if request.method == "GET":
                show_all = request.url.params.get("all") == "true"
                jobs = [
                    j for j in self.jobs.values() if show_all or j["state"] not in ("completed", "canceled", "aborted")
                ]
                return httpx.Response(200, json={"jobs": jobs})
            return self._post_job(request)
        job = self.jobs.get(int(rest[0]))
        if job is None:
            return error(404, "not-found", f"no job {rest[0]}")
        action = rest[1] if len(rest) > 1 else ""
        if action == "" and request.method == "GET":
            return httpx.Response(200, json=job)
        if action == "close":
            job["state"], job["state_reasons"] = "pending", ["job-queued"]
            job["version"] += 1
            return httpx.Response(200, json=job)
        if action == "cancel":
            if job["state"] in ("completed", "canceled", "aborted"):
                return error(409, "job-ended", f"job {job['id']} is already {job['state']}")
            if job["state"] == "processing":
                job["state_reasons"] = ["processing-to-stop-point"]
            else:
                job["state"], job["state_reasons"] = "canceled", ["job-canceled-by-user"]
            job["version"] += 1
            return httpx.Response(200, json=job)
        if action == "events":
            return self._events(job)
        return error(404, "not-found", "Not Found")

    def _post_job(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            spec, document = _parse_multipart(request)
            created = self._create(spec)
            if isinstance(created, httpx.Response):
                return created
            self.uploads[created["id"]] = document
            created["documents"][0]["size"] = len(document)
            return httpx.Response(201, json=created)
        spec = json.loads(request.content)
        created = self._create(spec)
        if isinstance(created, httpx.Response):
            return created
        if spec.get("upload"):
            created = dict(created, upload_url=f"{self.upload_host}/objects/jobs/{created['id']}/1?sig=abc")
            created["state"], created["state_reasons"] = "pending-held", ["job-incoming"]
            self.jobs[created["id"]].update(state="pending-held", state_reasons=["job-incoming"])
        return httpx.Response(201, json=created)

    def _put_object(self, request: httpx.Request) -> httpx.Response:
        if request.method != "PUT" or parse_qs(request.url.query.decode()).get("sig") != ["abc"]:
            return error(403, "bad-signature", "signature does not match")
        if self.fail_upload:
            return error(413, "too-large", "document exceeds 1 MiB")
        job_id = int(request.url.path.split("/")[3])
        body = request.content
        self.uploads[job_id] = body
        self.jobs[job_id]["documents"][0]["size"] = len(body)
        digest = hashlib.sha256(body).hexdigest()
        if self.corrupt_receipt:
            digest = "0" * 64
        return httpx.Response(200, json={"size": len(body), "sha256": digest})

    def _events(self, job: dict[str, Any]) -> httpx.Response:
        if self.events_status is not None:
            return error(self.events_status, "unavailable", "no streams here")
        job_id = job["id"]
        chunks = [sse(job)]
        drop = self.drops.get(job_id, 0) > 0
        if drop:
            self.drops[job_id] -= 1
        else:
            for state, reasons, impressions in self.timelines.pop(job_id, []):
                self.advance(job_id, state, reasons, impressions)
                chunks.append(sse(job))
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=DroppingStream(chunks, drop))

    def advance(self, job_id: int, state: str, reasons: list[str], impressions: int = 0) -> None:
        job = self.jobs[job_id]
        job.update(state=state, state_reasons=reasons, impressions_completed=impressions)
        job["version"] += 1
        job["updated_at"] = time.time()
        job["history"].append(
            {
                "at": job["updated_at"],
                "version": job["version"],
                "state": state,
                "state_reasons": reasons,
                "message": None,
            }
        )


def _parse_multipart(request: httpx.Request) -> tuple[dict[str, Any], bytes]:
    """Just enough multipart parsing for the two parts the API defines."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    spec: dict[str, Any] = {}
    document = b""
    for part in request.content.split(b"--" + boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        body = body.removesuffix(b"\r\n")
        if b'name="job"' in head:
            spec = json.loads(body)
        elif b'name="document"' in head:
            document = body
    return spec, document
