"""The scan-output part of the device protocol, driven by a hand-made device: upload URLs
only for the scan job's own device while it runs, checksums checked, no replays."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx

from broker.credentials import generate_password
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    DocumentStatus,
    FetchJob,
    JobStatus,
    PrintServiceAttributes,
    RequestUpload,
    ScanServiceAttributes,
)
from schemas.tickets import ScanJobTicket
from tests.support.rawdevice import RawDevice
from tests.support.stack import Stack, running_stack


async def device(stack: Stack, device_id: str, scanner: str) -> RawDevice:
    password = generate_password()
    await stack.add_user(device_id, password)
    raw = await asyncio.to_thread(RawDevice, device_id, password, stack.broker.url, stack.ca)
    reply = await asyncio.to_thread(raw.request, Attributes(services=[
        PrintServiceAttributes(name=f"{device_id}-p"), ScanServiceAttributes(name=scanner)]))
    assert reply.ok, reply
    return raw


async def test_upload_scan_output_by_the_rules(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await device(stack, "mfd-a", "scan-a")
        other = await device(stack, "mfd-b", "scan-b")
        created = (await stack.http.post("/api/v1/jobs", json={"kind": "scan", "service": "scan-a",
                                                               "ticket": {"input-resolution": 150}})).json()
        job_id = created["id"]
        assert created["state"] == "pending" and "job-fetchable" in created["state_reasons"]

        fetched = await asyncio.to_thread(dev.request, FetchJob(job_id=job_id))
        assert fetched.kind == "scan" and isinstance(fetched.ticket, ScanJobTicket)
        assert fetched.ticket.input_resolution == 150 and fetched.document_count == 0
        # No upload URL before the claim, and never for another device.
        early = await asyncio.to_thread(dev.request, RequestUpload(job_id=job_id, document_number=1,
                                                                   document_format="application/pdf"))
        assert early.code == "not-fetchable" and not early.uploads
        claimed = await asyncio.to_thread(dev.request, AcknowledgeJob(job_id=job_id, version=fetched.version,
                                                                      accept=True))
        assert claimed.ok and claimed.documents == []
        stolen = await asyncio.to_thread(other.request, RequestUpload(job_id=job_id, document_number=1,
                                                                      document_format="application/pdf"))
        assert stolen.code == "not-yours"
        running = await asyncio.to_thread(dev.request, JobStatus(job_id=job_id, version=claimed.version,
                                                                 state="processing"))
        granted = await asyncio.to_thread(dev.request, RequestUpload(job_id=job_id, document_number=1,
                                                                     document_format="application/pdf"))
        assert granted.ok and granted.uploads[0].url.startswith("https://")
        url = granted.uploads[0].url
        data = b"%PDF-1.4 scanned\n" * 100
        async with httpx.AsyncClient(verify=str(stack.ca)) as http:
            assert (await http.put(url.replace("m=PUT", "m=GET"), content=data)).status_code == 403
            receipt = (await http.put(url, content=data)).json()
            assert receipt == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            # A report naming other bytes is refused; the right one completes the document.
            wrong = await asyncio.to_thread(dev.request, DocumentStatus(
                job_id=job_id, document_number=1, version=running.version, state="completed",
                size=len(data), sha256="0" * 64))
            assert wrong.code == "bad-request"
            done = await asyncio.to_thread(dev.request, DocumentStatus(
                job_id=job_id, document_number=1, version=running.version, state="completed",
                size=len(data), sha256=receipt["sha256"], impressions_completed=1))
            assert done.ok
            # A replayed PUT cannot swap a completed output.
            assert (await http.put(url, content=b"evil")).status_code == 409
        final = await asyncio.to_thread(dev.request, JobStatus(job_id=job_id, version=done.version,
                                                               state="completed", impressions_completed=1))
        assert final.ok
        job = (await stack.http.get(f"/api/v1/jobs/{job_id}")).json()
        assert job["state"] == "completed" and job["documents"][0]["sha256"] == receipt["sha256"]
        assert (await stack.http.get(f"/api/v1/jobs/{job_id}/documents/1")).content == data
        # After the job ended no more uploads.
        late = await asyncio.to_thread(dev.request, RequestUpload(job_id=job_id, document_number=2,
                                                                  document_format="application/pdf"))
        assert late.code == "not-fetchable"
        # Another user cannot download it (nor see the job).
        bob = await stack.service.create_token("bob", "user")
        async with httpx.AsyncClient(base_url=stack.service.url, verify=str(stack.ca),
                                     headers={"Authorization": f"Bearer {bob}"}) as http:
            assert (await http.get(f"/api/v1/jobs/{job_id}/documents/1")).status_code in (403, 404)
        await asyncio.to_thread(dev.close)
        await asyncio.to_thread(other.close)


async def test_request_upload_is_for_scan_jobs_only(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await device(stack, "mfd-c", "scan-c")
        response = await stack.submit(b"%PDF-1.4\n", service="mfd-c-p")
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        reply = await asyncio.to_thread(dev.request, RequestUpload(job_id=job_id, document_number=1,
                                                                   document_format="application/pdf"))
        assert reply.code == "bad-request"
        await asyncio.to_thread(dev.close)
