"""The device protocol against the real service and broker, driven by a hand-made device:
claims, versions, duplicates, presigned URLs, and every kind of bad input."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import msgpack
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.credentials import generate_password
from schemas.messages import (
    MAX_MESSAGE_BYTES,
    AcknowledgeJob,
    Attributes,
    FetchDocument,
    FetchJob,
    Hello,
    JobFetchable,
    JobStatus,
    PrintServiceAttributes,
    Sync,
)
from schemas.tickets import PrintCapabilities
from tests.support.rawdevice import RawDevice
from tests.support.stack import Stack, running_stack

CAPS = PrintCapabilities(document_format_supported=["application/pdf"], copies_supported=(1, 10))


async def raw_device(stack: Stack, device_id: str) -> RawDevice:
    password = generate_password()
    await stack.add_user(device_id, password)
    device = await asyncio.to_thread(RawDevice, device_id, password, stack.broker.url, stack.ca)
    reply = await asyncio.to_thread(device.request, Attributes(services=[
        PrintServiceAttributes(name=device_id, capabilities=CAPS)]))
    assert reply.ok, reply
    return device


def clf_lines(stack: Stack) -> list[str]:
    return (stack.service.config.logs_dir / "access.log").read_text().splitlines()


async def test_claim_versions_duplicates_and_urls(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "raw-1")
        data = b"%PDF-1.4\n" + os.urandom(100_000)
        job = (await stack.submit(data, {"copies": 2}, service="raw-1")).json()
        bell = await asyncio.to_thread(dev.next)
        assert isinstance(bell, JobFetchable) and bell.job_id == job["id"]

        fetched = await asyncio.to_thread(dev.request, FetchJob(job_id=job["id"]))
        assert fetched.ok and fetched.ticket.copies == 2 and fetched.ticket.document_format == "application/pdf"
        ack = AcknowledgeJob(job_id=job["id"], version=fetched.version, accept=True)
        accepted = await asyncio.to_thread(dev.request, ack)
        assert accepted.ok and accepted.code == "ok" and len(accepted.documents) == 1
        # The same acknowledgement again (a retry after a lost reply): duplicate, fresh URLs.
        again = await asyncio.to_thread(dev.request, ack)
        assert again.ok and again.code == "duplicate" and again.documents
        # A second claim with a new message id is stale: the version moved on.
        late = await asyncio.to_thread(dev.request, AcknowledgeJob(job_id=job["id"], version=fetched.version,
                                                                   accept=True))
        assert not late.ok and late.code == "stale" and late.version == accepted.version

        doc = accepted.documents[0]
        async with httpx.AsyncClient(verify=str(stack.ca)) as http:
            got = await http.get(doc.url)
            assert got.status_code == 200 and got.content == data
            assert hashlib.sha256(got.content).hexdigest() == doc.sha256
            tampered = doc.url.replace("sig=", "sig=0")
            assert (await http.get(tampered)).status_code == 403
            other = doc.url.replace(f"jobs/{job['id']}/", "jobs/999999/")
            assert (await http.get(other)).status_code == 403
            assert (await http.put(doc.url, content=b"x")).status_code == 403  # GET URL used for PUT
            key = f"jobs/{job['id']}/doc-1"
            expired, _ = stack.service.objects.presign(key, "GET", -5)
            response = await http.get(expired)
            assert response.status_code == 403 and "expired" in response.json()["error"]["message"]
        fresh = await asyncio.to_thread(dev.request, FetchDocument(job_id=job["id"], document_number=1))
        assert fresh.ok and fresh.documents[0].sha256 == doc.sha256

        processing = JobStatus(job_id=job["id"], version=accepted.version, state="processing")
        r1 = await asyncio.to_thread(dev.request, processing)
        assert r1.ok and r1.version == accepted.version + 1
        dup = await asyncio.to_thread(dev.request, processing)
        assert dup.ok and dup.code == "duplicate"
        stale = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=accepted.version,
                                                               state="completed"))
        assert not stale.ok and stale.code == "stale" and stale.state == "processing"
        done = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=r1.version,
                                                              state="completed", impressions_completed=2))
        assert done.ok and done.state == "completed"
        final = await stack.wait_job(job["id"])
        assert final["state"] == "completed" and final["impressions_completed"] == 2
        assert [h["state"] for h in final["history"]] == ["pending-held", "pending", "pending", "processing",
                                                          "completed"]
        # Nothing after the end: a late report is refused, a repeated final one acknowledged.
        again = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=r1.version,
                                                               state="completed", impressions_completed=2))
        assert again.ok and again.code == "duplicate"
        await asyncio.to_thread(dev.close)


async def test_bad_input_is_refused_logged_and_harmless(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "raw-bad")
        other = await raw_device(stack, "raw-other")
        job = (await stack.submit(b"%PDF-1.4 other", service="raw-other")).json()

        def refused(payload: bytes) -> object:
            dev.send_raw(payload)
            return dev.next(timeout=10)

        r = await asyncio.to_thread(refused, b"\xc1\xc1 not msgpack")
        assert r.code == "malformed" and not r.ok
        r = await asyncio.to_thread(refused, msgpack.packb({"v": 1, "type": "erase-disk", "id": "u1"}))
        assert r.code == "unknown-type" and r.re == "u1"
        r = await asyncio.to_thread(refused, msgpack.packb({"v": 1, "type": "hello", "id": "big",
                                                            "software": "x" * (MAX_MESSAGE_BYTES + 10)}))
        assert r.code == "too-large"
        bad_utf8 = msgpack.packb({"v": 1, "type": "bye", "id": "u3", "reason": "zz"})
        bad_utf8 = bad_utf8.replace(b"\xa2zz", b"\xa2\xff\xfe")
        r = await asyncio.to_thread(refused, bad_utf8)
        assert r.code == "malformed" and "UTF-8" in r.message
        r = await asyncio.to_thread(refused, msgpack.packb({
            "v": 1, "type": "job-status", "id": "u4", "job_id": job["id"], "version": 0, "state": "processing",
            "message": "\x1b]0;pwned\x07"}))
        assert r.code == "bad-request" and r.re == "u4" and "control character" in r.message
        # Naming another device's job: refused, and the job is untouched.
        for msg in (FetchJob(job_id=job["id"]),
                    AcknowledgeJob(job_id=job["id"], version=1, accept=True),
                    JobStatus(job_id=job["id"], version=1, state="completed"),
                    FetchDocument(job_id=job["id"])):
            reply = await asyncio.to_thread(dev.request, msg)
            assert not reply.ok and reply.code == "not-yours", reply
        unknown = await asyncio.to_thread(dev.request, FetchJob(job_id=987654))
        assert unknown.code == "not-found"

        # Everything above was logged; the service still serves and the job is intact.
        lines = clf_lines(stack)
        for code, status in (("malformed", 400), ("unknown-type", 400), ("too-large", 413)):
            assert any("raw-bad" in line and code in line and f'" {status} ' in line for line in lines), code
        assert sum(1 for line in lines if "raw-bad" in line and '" 403 ' in line) >= 4
        assert (await stack.http.get("/healthz")).json() == {"status": "ok"}
        assert (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "pending"
        fetched = await asyncio.to_thread(other.request, FetchJob(job_id=job["id"]))
        assert fetched.ok
        # A hello with a job it does not hold gets it listed as unknown; fetchable jobs are offered.
        hello = Hello(software="raw", jobs=[{"job_id": 424242, "version": 1, "state": "processing"}])
        await asyncio.to_thread(other.send, hello)
        sync = await asyncio.to_thread(other.next, 10, hello.id)
        assert isinstance(sync, Sync) and sync.unknown == [424242] and job["id"] in sync.fetchable
        await asyncio.to_thread(dev.close)
        await asyncio.to_thread(other.close)


async def test_http_refuses_unauthenticated_and_bad_tokens(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        async with httpx.AsyncClient(base_url=stack.service.url, verify=str(stack.ca)) as anon:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
                response = await anon.get("/api/v1/services", headers=headers)
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "unauthorized"
            assert (await anon.get("/healthz")).status_code == 200
        # Plain HTTP to the HTTPS port gets no API.
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient() as plain:
                await plain.get(stack.service.url.replace("https://", "http://") + "/api/v1/services", timeout=5)
        assert any('"GET /api/v1/services HTTP/1.1" 401' in line for line in clf_lines(stack))


async def test_plain_tcp_mqtt_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        password = generate_password()
        await stack.add_user("plain-dev", password)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-dev")
        client.username_pw_set("plain-dev", password)
        host, port = stack.broker.url.removeprefix("mqtts://").rsplit(":", 1)

        def attempt() -> bool:
            try:
                client.connect(host, int(port), keepalive=5)
                for _ in range(30):
                    client.loop(timeout=0.1)
                    if client.is_connected():
                        return True
            except (OSError, mqtt.WebsocketConnectionError):
                return False
            return client.is_connected()

        assert not await asyncio.to_thread(attempt)
