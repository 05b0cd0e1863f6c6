"""The service's HTTP edge in one process, for probes of what a client can send.

The real ``create_app`` (every router, the error envelope, the OpenAPI and docs routes) and the
real IPP front on a real JobStore (SQLite in the test's directory) and LocalObjectStore, with
the real ``DeviceProtocol`` beside them, driven through httpx.ASGITransport: no socket, no
broker. ``max_document_bytes`` is small so size limits are probed with kilobytes. One print
service ``office`` on device ``dev-1``, owned by the user carol; ``user`` holds her Bearer header, ``admin`` an
admin's. ``acknowledge`` sends the device's acknowledge-job as the wire would.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI

from broker.pki import ensure_pki
from cloud_service.accounting import Admission
from cloud_service.audit import AuditLog
from cloud_service.auth import create_token
from cloud_service.clf import ClfLog
from cloud_service.clock import Clock
from cloud_service.config import ServiceConfig
from cloud_service.db import create_schema, make_engine
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import Documents
from cloud_service.http import Deps, create_app
from cloud_service.ipp.front import IppFront
from cloud_service.jobs import JobOperations
from cloud_service.objects import LocalObjectStore, UrlSigner
from cloud_service.registration import Registry
from cloud_service.store import JobStore
from schemas.ipp.codec import Message, Tag, request
from schemas.messages import AcknowledgeJob, Reply, decode_down, encode
from schemas.messages import Message as WireMessage
from schemas.tickets import PrintCapabilities

BASE = "http://testserver"
DEVICE = "dev-1"
SERVICE = "office"
CAPS = PrintCapabilities(sides_supported=["one-sided"], media_supported=["iso_a4_210x297mm"],
                         document_format_supported=["application/pdf", "text/plain"])


@dataclass
class EdgeApp:
    app: FastAPI
    deps: Deps
    protocol: DeviceProtocol
    http: httpx.AsyncClient
    user: dict[str, str]
    admin: dict[str, str]
    user_token: str
    tmp: Path
    #: What the service sent to devices (doorbells, job-canceled).
    sent: list[tuple[str, WireMessage]] = field(default_factory=list)

    async def acknowledge(self, job_id: int) -> Reply:
        """The device accepts the job: the service's reply, decoded as the device would."""
        version = (await self.deps.store.get_job(job_id)).version
        msg = AcknowledgeJob(job_id=job_id, version=version, accept=True, ts=time.time())
        replies = await self.protocol.handle(DEVICE, "up", encode(msg))
        (reply,) = [decode_down(encode(r)) for _, r in replies if isinstance(r, Reply)]
        assert isinstance(reply, Reply)
        return reply

    def ipp_request(self, op: int) -> Message:
        msg = request(op)
        msg.operation().add("printer-uri", Tag.URI, f"ipps://testserver/ipp/print/{SERVICE}")
        return msg

    async def ipp(self, msg: Message, data: bytes = b"") -> httpx.Response:
        basic = base64.b64encode(f"carol:{self.user_token}".encode()).decode()
        return await self.http.post(f"/ipp/print/{SERVICE}", content=msg.encode() + data,
                                    headers={"Content-Type": "application/ipp", "Authorization": f"Basic {basic}"})


@contextlib.asynccontextmanager
async def edge_app(tmp: Path, max_document_bytes: int = 4096) -> AsyncIterator[EdgeApp]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp / 'db.sqlite'}")
    await create_schema(engine)
    store = JobStore(engine)
    objects = LocalObjectStore(tmp / "objects", UrlSigner(b"k" * 32, BASE))
    config = ServiceConfig(max_document_bytes=max_document_bytes, data_dir=tmp)
    ensure_pki(config.ca_dir)  # device registration and enrollment work, as in the service
    documents = Documents(store, objects, max_document_bytes, config.url_ttl)
    clf = ClfLog(tmp / "access.log")
    audit = AuditLog(tmp / "security.log")
    protocol = DeviceProtocol(store, documents, clf)
    sent: list[tuple[str, WireMessage]] = []
    jobs = JobOperations(store, documents, lambda device, message: sent.append((device, message)),
                         Admission(store, config))
    registry = Registry(store, config, audit, Clock(), BASE, lambda *_: None)
    deps = Deps(store=store, jobs=jobs, objects=objects, clf=clf, audit=audit, config=config, registry=registry,
                ipp_base=lambda: "ipps://testserver")
    app = create_app(deps)
    app.mount("/ipp", IppFront(store=store, jobs=jobs, https_base=lambda: BASE, ipp_base=lambda: "ipps://testserver"))
    await store.set_device(DEVICE, online=True, last_seen=time.time(), owner="carol")
    await store.upsert_service(DEVICE, "print", SERVICE, {
        "state": "idle", "state_reasons": ["none"], "state_message": None, "capabilities": CAPS.wire()})
    user_token = await create_token(store, "carol", "user")
    admin_token = await create_token(store, "root", "admin")
    # A route that fails answers 500 here, as behind uvicorn, rather than raising into the test.
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE)
    try:
        yield EdgeApp(app, deps, protocol, http, {"Authorization": f"Bearer {user_token}"},
                      {"Authorization": f"Bearer {admin_token}"}, user_token, tmp, sent)
    finally:
        await http.aclose()
        audit.close()
        clf.close()
        await store.close()
        await engine.dispose()
