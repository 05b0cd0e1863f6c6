"""The service's app answers the two calls every job makes, a submit and a device's presigned
download, before FastAPI's routing (``cloud_service.http.shortcuts``): with the jobs and
objects routers taken out of the app both still work, with the same answers and refusals as
the routes give (tests/test_http_routers.py has the routers alone), logged and audited the
same; every other call of those routers then finds no route."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from cloud_service.audit import AuditLog
from cloud_service.auth import create_token
from cloud_service.config import ServiceConfig
from cloud_service.http import Deps, jobs, objects
from cloud_service.http.app import create_app
from cloud_service.http.responses import add_error_handlers
from tests.support.documents import make_pdf
from tests.support.inprocess import service_parts


@pytest.fixture
async def deps(tmp_path: Path, database_url: str) -> AsyncIterator[Deps]:
    async with service_parts(tmp_path, max_bytes=1 << 20, url_ttl=ServiceConfig().url_ttl,
                             database_url=database_url) as service:
        audit = AuditLog(tmp_path / "security.log")
        yield Deps(store=service.store, jobs=service.jobs(lambda *_: None), objects=service.objects,
                   clf=service.clf, audit=audit, config=service.config)
        audit.close()


async def office(deps: Deps) -> str:
    """A printer "office" of olga's device; olga's token."""
    await deps.store.set_device("dev-1", online=True, last_seen=None, owner="olga")
    assert await deps.store.upsert_service("dev-1", "print", "office", {
        "state": "idle", "state_reasons": ["none"], "state_message": None, "capabilities": {}})
    return await create_token(deps.store, "olga", "owner")


def without_routers(deps: Deps) -> FastAPI:
    """The service's app with the jobs and objects routers taken out."""
    app = create_app(deps)
    app.router.routes[:] = [r for r in app.router.routes
                            if getattr(r, "original_router", None) not in (jobs.router, objects.router)]
    return app


def form(job: dict, document: bytes | None) -> dict:
    files = {"job": (None, json.dumps(job), "application/json")}
    if document is not None:
        files["document"] = ("a.pdf", document, "application/pdf")
    return files


async def test_a_submit_and_its_download_are_answered_without_the_routers(deps: Deps, tmp_path: Path) -> None:
    olga = await office(deps)
    bob = await create_token(deps.store, "bob", "user")
    document = make_pdf(2)
    app = without_routers(deps)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        auth = {"Authorization": f"Bearer {olga}"}
        made = await http.post("/api/v1/jobs", files=form({"service": "office"}, document), headers=auth)
        assert made.status_code == 201, made.text
        job = made.json()
        assert job["state"] == "pending" and job["owner"] == "olga" and job["documents"][0]["size"] == len(document)

        # Refused as the route refuses, in the same envelope.
        anonymous = await http.post("/api/v1/jobs", files=form({"service": "office"}, document))
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        unseen = await http.post("/api/v1/jobs", files=form({"service": "office"}, document),
                                 headers={"Authorization": f"Bearer {bob}"})
        assert unseen.status_code == 404 and unseen.json()["error"]["code"] == "not-found"
        bad = await http.post("/api/v1/jobs", files=form({"service": "office", "ticket": {"copies": 0}}, document),
                              headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["attribute"] == "copies", bad.text
        missing = await http.post("/api/v1/jobs", files=form({"service": "office"}, None), headers=auth)
        assert missing.status_code == 422 and "document" in missing.json()["error"]["message"]

        # The device's download of it.
        url = urlsplit(deps.objects.presign(f"jobs/{job['id']}/doc-1", "GET", 60)[0])
        got = await http.get(f"{url.path}?{url.query}")
        assert got.status_code == 200 and got.content == document
        tampered = urlsplit(deps.objects.presign(f"jobs/{job['id']}/doc-1", "PUT", 60)[0])
        refused = await http.get(f"{tampered.path}?{tampered.query}")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "bad-signature"
        other = urlsplit(deps.objects.presign(f"jobs/{job['id']}/doc-2", "GET", 60)[0])
        assert (await http.get(f"{other.path}?{other.query}")).status_code == 404
        gone = urlsplit(deps.objects.presign("jobs/424242/doc-1", "GET", 60)[0])
        assert (await http.get(f"{gone.path}?{gone.query}")).json()["error"]["code"] == "gone"

        # The routers' other calls are not shortcuts: without the routers they find nothing.
        assert (await http.get(f"/api/v1/jobs/{job['id']}", headers=auth)).status_code == 404
        assert (await http.get("/api/v1/jobs", headers=auth)).status_code == 404
        assert (await http.put(f"{tampered.path}?{tampered.query}", content=b"x")).status_code == 404

    # Logged as any call: the submit as its user, the download as "presigned".
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert any('"POST /api/v1/jobs HTTP/1.1" 201' in line and " olga " in line for line in lines), lines
    assert any(f'"GET /objects/jobs/{job["id"]}/doc-1 HTTP/1.1" 200' in line and " presigned " in line
               for line in lines), lines
    audit = [json.loads(line) for line in (tmp_path / "security.log").read_text().splitlines()]
    assert [e["reason"] for e in audit if e["event"] == "auth-failed"] == ["no bearer token"]
    assert [e["method"] for e in audit if e["event"] == "presigned-refused"] == ["GET", "GET"]


async def test_the_apps_answers_match_the_routes(deps: Deps) -> None:
    """The same submit and download through the whole app: status, headers and body are those of
    the router mounted alone (no shortcut there)."""
    olga = await office(deps)
    routers = FastAPI()
    routers.state.deps = deps
    add_error_handlers(routers)
    routers.include_router(jobs.router)
    routers.include_router(objects.router)
    answers = []
    for app in (create_app(deps), routers):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            made = await http.post("/api/v1/jobs", files=form({"service": "office", "ticket": {"copies": 2}},
                                                              make_pdf(1)), headers={"Authorization": f"Bearer {olga}"})
            job = made.json()
            url = urlsplit(deps.objects.presign(f"jobs/{job['id']}/doc-1", "GET", 60)[0])
            got = await http.get(f"{url.path}?{url.query}")
            refused = await http.post("/api/v1/jobs", files=form({"service": "nowhere"}, b"x"),
                                      headers={"Authorization": f"Bearer {olga}"})
        for varying in ("id", "uuid", "created_at", "updated_at", "history", "documents", "retention"):
            job.pop(varying, None)
        answers.append((made.status_code, made.headers["content-type"], job, got.status_code,
                        got.headers["content-type"], got.headers["content-length"], refused.status_code,
                        refused.json()))
    assert answers[0] == answers[1]
