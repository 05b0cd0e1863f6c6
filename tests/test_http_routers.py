"""Each HTTP router works alone: mounted on a bare FastAPI app with a real store (SQLite in
tmp_path), driven in-process through httpx.ASGITransport."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from cloud_service.audit import AuditLog
from cloud_service.auth import User, create_token
from cloud_service.config import ServiceConfig
from cloud_service.http import Deps, manage, objects, operators, services
from cloud_service.http.responses import add_error_handlers
from cloud_service.objects import CHUNK
from cloud_service.store import JobStore
from schemas.enums import ServiceKind
from tests.support.documents import make_pdf
from tests.support.inprocess import service_parts


@dataclass
class Parts:
    deps: Deps
    audit_path: Path


@pytest.fixture
async def parts(tmp_path: Path, database_url: str) -> AsyncIterator[Parts]:
    async def notify(*_: object) -> None:
        raise AssertionError("these routes publish nothing")

    async with service_parts(tmp_path, max_bytes=4 << 20, url_ttl=ServiceConfig().url_ttl,
                             database_url=database_url) as service:
        audit = AuditLog(tmp_path / "security.log")
        deps = Deps(store=service.store, jobs=service.jobs(notify), objects=service.objects, clf=service.clf,
                    audit=audit, config=service.config, ipp_base=lambda: "ipps://cloud.example:8443")
        yield Parts(deps, tmp_path / "security.log")
        audit.close()


def _client(deps: Deps, router: APIRouter) -> httpx.AsyncClient:
    app = FastAPI()
    app.state.deps = deps
    add_error_handlers(app)
    app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _audit(parts: Parts) -> list[dict]:
    return [json.loads(line) for line in parts.audit_path.read_text().splitlines()]


async def _printer(store: JobStore, owner: str) -> None:
    await store.set_device("dev-1", online=False, last_seen=None, owner=owner)
    assert await store.upsert_service("dev-1", "print", "office", {
        "state": "idle", "state_reasons": ["none"], "state_message": None, "capabilities": {}})


async def test_services_router_alone(parts: Parts) -> None:
    store = parts.deps.store
    await _printer(store, owner="olga")
    olga = await create_token(store, "olga", "owner")
    bob = await create_token(store, "bob", "user")
    async with _client(parts.deps, services.router) as http:
        missing = await http.get("/api/v1/services")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        # Basic credentials are for the IPP front: the HTTP API takes Bearer only.
        basic = "Basic " + base64.b64encode(f"olga:{olga}".encode()).decode()
        assert (await http.get("/api/v1/services", headers={"Authorization": basic})).status_code == 401
        wrong = await http.get("/api/v1/services", headers={"Authorization": "Bearer ci_wrong"})
        assert wrong.json()["error"]["message"] == "invalid or revoked token"

        # A user the printer is not shared with does not see it at all.
        as_bob = {"Authorization": f"Bearer {bob}"}
        assert (await http.get("/api/v1/services", headers=as_bob)).json() == {"services": []}
        hidden = await http.get("/api/v1/services/print/office", headers=as_bob)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not-found"

        # Its owner sees it, with the offline overlay and the IPP URI.
        as_olga = {"Authorization": f"Bearer {olga}"}
        found = (await http.get("/api/v1/services", params={"kind": "print"}, headers=as_olga)).json()["services"]
        assert [(s["name"], s["state"], s["state_reasons"]) for s in found] == [
            ("office", "stopped", ["offline-report"])]
        assert found[0]["ipp_uri"] == "ipps://cloud.example:8443/ipp/print/office"
        await store.set_device("dev-1", online=True)
        office = (await http.get("/api/v1/services/print/office", headers=as_olga)).json()
        assert (office["state"], office["state_reasons"]) == ("idle", ["none"])

        # No way to reach the device in this app: 504, in the error envelope.
        asked = await http.post("/api/v1/services/print/office/status-request", headers=as_olga)
        assert asked.status_code == 504 and asked.json()["error"]["code"] == "device-unreachable"

    failed = [e["reason"] for e in _audit(parts) if e["event"] == "auth-failed"]
    assert failed == ["no bearer token", "no bearer token", "invalid, expired or revoked token"]
    assert olga not in parts.audit_path.read_text()


async def test_manage_router_alone(parts: Parts) -> None:
    store = parts.deps.store
    admin = await create_token(store, "root", "admin")
    bob = await create_token(store, "bob", "user")
    async with _client(parts.deps, manage.router) as http:
        denied = await http.get("/api/v1/users", headers={"Authorization": f"Bearer {bob}"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"

        made = await http.post("/api/v1/users", json={"name": "carol", "token": True},
                               headers={"Authorization": f"Bearer {admin}"})
        assert made.status_code == 201 and made.json()["user"]["name"] == "carol"
        me = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {made.json()['token']}"})
        assert (me.json()["name"], me.json()["role"]) == ("carol", "user")

        bad = await http.post("/api/v1/users", json={"name": "dave", "role": "emperor"},
                              headers={"Authorization": f"Bearer {admin}"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad-request"

        # Without a registry, the device routes say so rather than fail.
        devices = await http.get("/api/v1/devices", headers={"Authorization": f"Bearer {admin}"})
        assert devices.status_code == 503 and devices.json()["error"]["code"] == "unavailable"

    events = [(e["event"], e.get("actor")) for e in _audit(parts)]
    assert ("access-denied", "bob") in events
    assert ("user-created", "root") in events and ("token-created", "root") in events


async def test_operators_router_alone(parts: Parts) -> None:
    await _printer(parts.deps.store, owner="olga")
    await parts.deps.store.set_device("dev-1", online=True)
    async with _client(parts.deps, operators.router) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        metrics = await http.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "cloudimaging_devices_online 1\n" in metrics.text
        assert 'cloudimaging_jobs{state="pending"} 0' in metrics.text
        # A route of another router is not there.
        assert (await http.get("/api/v1/services")).status_code == 404


async def test_objects_router_alone(parts: Parts) -> None:
    def signed(key: str, method: str) -> str:
        url = urlsplit(parts.deps.objects.presign(key, method, 60)[0])
        return f"{url.path}?{url.query}"

    async with _client(parts.deps, objects.router) as http:
        # The signature is the credential: a URL signed for GET does not PUT.
        tampered = await http.put(signed("jobs/7/doc-1", "GET"), content=b"%PDF-")
        assert tampered.status_code == 403 and tampered.json()["error"]["code"] == "bad-signature"
        # A document of a job that is gone (or never was) is not served.
        gone = await http.get(signed("jobs/7/doc-1", "GET"))
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
        assert (await http.put(signed("misc/x", "PUT"), content=b"x")).status_code == 404

    refused = [(e["method"], e["reason"]) for e in _audit(parts) if e["event"] == "presigned-refused"]
    assert [method for method, _ in refused] == ["PUT", "GET"]
    assert refused[1][1] == "the job has ended"


async def test_objects_router_serves_a_small_document_whole_and_a_large_one_streamed(parts: Parts) -> None:
    """A document of at most one chunk is read in one trip and answered whole; a larger one is
    streamed: either way the bytes and the length are the stored document's."""
    await _printer(parts.deps.store, "root")
    jobs = parts.deps.jobs
    fetchable: list[object] = []
    jobs.notify = lambda device, message: fetchable.append(message)  # the doorbell, unheard here
    small = make_pdf(1)
    large = small + b"%" + bytes(range(256)) * (CHUNK // 256 + 1000)  # a comment after %%EOF
    assert len(small) <= CHUNK < len(large)

    async def once(data: bytes) -> AsyncIterator[bytes]:
        yield data

    async with _client(parts.deps, objects.router) as http:
        for data in (small, large):
            row = await jobs.create(User("root", "admin"), ServiceKind.PRINT, "office", {}, "application/pdf",
                                    None, once(data))
            url = urlsplit(parts.deps.objects.presign(f"jobs/{row.id}/doc-1", "GET", 60)[0])
            got = await http.get(f"{url.path}?{url.query}")
            assert got.status_code == 200 and got.content == data
            assert got.headers["content-length"] == str(len(data))
        missing = urlsplit(parts.deps.objects.presign(f"jobs/{row.id}/doc-2", "GET", 60)[0])
        assert (await http.get(f"{missing.path}?{missing.query}")).status_code == 404
    assert len(fetchable) == 2


async def test_a_named_service_is_read_alone_with_its_queued_jobs(parts: Parts) -> None:
    """One service by name is one row, with the count of its jobs not ended; the list has every
    service, each with its own count, in name order."""
    store, jobs = parts.deps.store, parts.deps.jobs
    jobs.notify = lambda device, message: None  # the doorbell, unheard here
    await _printer(store, owner="root")
    assert await store.upsert_service("dev-1", "print", "annex", {
        "state": "idle", "state_reasons": ["none"], "state_message": None, "capabilities": {}})
    admin = User("root", "admin")

    async def once(data: bytes) -> AsyncIterator[bytes]:
        yield data

    made = [await jobs.create(admin, ServiceKind.PRINT, name, {}, "application/pdf", None, once(make_pdf(1)))
            for name in ("office", "office", "office", "annex")]
    await jobs.cancel(admin, made[0].id)  # ended: not queued any more

    named = await store.services("print", "office")
    assert [(svc.name, dev.id, queued) for svc, dev, queued in named] == [("office", "dev-1", 2)]
    assert await store.services("print", "nowhere") == []
    assert [(svc.name, queued) for svc, _, queued in await store.services()] == [("annex", 1), ("office", 2)]
    token = await create_token(store, "root", "admin")
    async with _client(parts.deps, services.router) as http:
        office = (await http.get("/api/v1/services/print/office", headers={"Authorization": f"Bearer {token}"}))
        assert office.status_code == 200 and office.json()["queued_jobs"] == 2
