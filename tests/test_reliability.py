"""Offline detection, the supervisor's timeouts (driven with a controllable clock, not sleeps),
status on request, and service restarts, against the real service and broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from broker.credentials import generate_password
from schemas import topics
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    FetchJob,
    HeldJob,
    Hello,
    JobFetchable,
    JobStatus,
    Presence,
    PrintServiceAttributes,
    Sync,
    encode,
)
from tests.support.documents import pdf_bytes
from tests.support.rawdevice import RawDevice
from tests.support.stack import Stack, running_stack


async def raw_device(stack: Stack, device_id: str) -> RawDevice:
    password = generate_password()
    await stack.add_user(device_id, password)
    device = await asyncio.to_thread(RawDevice, device_id, password, stack.broker.url, stack.ca)
    reply = await asyncio.to_thread(device.request, Attributes(services=[PrintServiceAttributes(name=device_id)]))
    assert reply.ok
    return device


async def claim(stack: Stack, dev: RawDevice, job_id: int) -> int:
    """Fetch and accept a job as the raw device; returns the job version after the claim."""
    fetched = await asyncio.to_thread(dev.request, FetchJob(job_id=job_id))
    accepted = await asyncio.to_thread(dev.request, AcknowledgeJob(job_id=job_id, version=fetched.version,
                                                                   accept=True))
    assert accepted.ok, accepted
    return accepted.version


async def go_offline(stack: Stack, dev: RawDevice) -> None:
    await asyncio.to_thread(dev.send_raw, encode(Presence(state="offline")), topics.presence(dev.device_id))
    await stack.wait_service(dev.device_id, online=False)


async def test_offline_device_jobs_stop_then_abort(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "wanderer")
        printing = (await stack.submit(b"%PDF-1.4 a", service="wanderer")).json()
        waiting = (await stack.submit(b"%PDF-1.4 b", service="wanderer")).json()
        version = await claim(stack, dev, printing["id"])
        r = await asyncio.to_thread(dev.request, JobStatus(job_id=printing["id"], version=version, state="processing"))
        assert r.ok

        await go_offline(stack, dev)
        service = await stack.wait_service("wanderer", online=False)
        assert service["state"] == "stopped" and service["state_reasons"][0] == "offline-report"
        assert service["last_seen"] is not None
        pending = (await stack.http.get(f"/api/v1/jobs/{waiting['id']}")).json()
        assert pending["state"] == "pending" and "printer-stopped" in pending["state_reasons"]
        assert "offline" in pending["state_message"]

        policy = stack.service.supervisor.policy
        now = time.time()
        assert (await stack.service.supervisor.sweep(now)).suspended == 0  # within the grace period
        report = await stack.service.supervisor.sweep(now + policy.offline_grace + 1)
        assert report.suspended == 1
        job = (await stack.http.get(f"/api/v1/jobs/{printing['id']}")).json()
        assert job["state"] == "processing-stopped" and "printer-stopped" in job["state_reasons"]
        assert "offline" in job["state_message"]

        report = await stack.service.supervisor.sweep(now + policy.offline_abort_after + 1)
        assert report.aborted == 1
        job = (await stack.http.get(f"/api/v1/jobs/{printing['id']}")).json()
        assert job["state"] == "aborted" and "offline" in job["state_message"]
        # The unclaimed job is not aborted: it waits for the printer, with the reason shown.
        assert (await stack.http.get(f"/api/v1/jobs/{waiting['id']}")).json()["state"] == "pending"
        await asyncio.to_thread(dev.close)


async def test_device_returns_and_resync_decides(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "returner")
        job = (await stack.submit(b"%PDF-1.4 r", service="returner")).json()
        version = await claim(stack, dev, job["id"])
        r1 = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=version, state="processing"))
        await go_offline(stack, dev)
        policy = stack.service.supervisor.policy
        await stack.service.supervisor.sweep(time.time() + policy.offline_grace + 1)
        assert (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "processing-stopped"

        # Back: the hello lists the job; the service keeps it (no stop, not unknown).
        hello = Hello(software="raw", jobs=[HeldJob(job_id=job["id"], version=r1.version, state="processing")])
        await asyncio.to_thread(dev.send, hello)
        sync = await asyncio.to_thread(dev.next, 10, hello.id)
        assert isinstance(sync, Sync) and sync.stop == [] and sync.unknown == []
        # Its next report is stale (the job changed meanwhile); it adopts the version and goes on.
        stale = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=r1.version,
                                                               state="completed"))
        assert stale.code == "stale" and stale.state == "processing-stopped"
        done = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=stale.version,
                                                              state="completed", impressions_completed=1))
        assert done.ok and done.state == "completed"
        assert (await stack.wait_service("returner"))["state"] == "idle"
        await asyncio.to_thread(dev.close)


async def test_step_timeout_releases_unstarted_and_aborts_started(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "staller")
        job = (await stack.submit(b"%PDF-1.4 s", service="staller")).json()
        await asyncio.to_thread(dev.next)  # the doorbell
        await claim(stack, dev, job["id"])
        supervisor = stack.service.supervisor
        step = supervisor.policy.step_timeout
        assert (await supervisor.sweep(time.time() + step / 2)).released == 0
        # A device that keeps talking (busy with the jobs queued before this one) keeps its claim.
        talking = time.time() + step
        await stack.service.store.set_device("staller", last_seen=talking)
        assert (await supervisor.sweep(talking + 1)).released == 0
        # Silent for the whole step timeout: the claim is offered again.
        assert (await supervisor.sweep(talking + step + 1)).released == 1
        bell = await asyncio.to_thread(dev.next)
        assert isinstance(bell, JobFetchable) and bell.job_id == job["id"]
        released = (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()
        assert released["state"] == "pending" and "job-fetchable" in released["state_reasons"]

        version = await claim(stack, dev, job["id"])
        r = await asyncio.to_thread(dev.request, JobStatus(job_id=job["id"], version=version, state="processing"))
        assert r.ok
        assert (await supervisor.sweep(talking + step + 1)).aborted == 1
        ended = (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()
        assert ended["state"] == "aborted" and "step timeout" in ended["state_message"]
        await asyncio.to_thread(dev.close)


async def test_status_request_answered_or_unreachable(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("answering")
        response = await stack.http.post("/api/v1/services/print/answering/status-request")
        assert response.status_code == 200 and response.json()["online"]

        dev = await raw_device(stack, "mute")  # a device that never answers status requests
        stack.service.config.status_timeout = 1.0
        response = await stack.http.post("/api/v1/services/print/mute/status-request")
        assert response.status_code == 504 and response.json()["error"]["code"] == "device-unreachable"
        service = (await stack.http.get("/api/v1/services/print/mute")).json()
        assert not service["online"] and service["state"] == "stopped"
        await asyncio.to_thread(dev.close)


async def test_service_restart_loses_nothing(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("steady")
        before = [(await stack.submit(pdf_bytes(1, 10), {}, service="steady")).json()["id"] for _ in range(3)]
        for job_id in before:
            await stack.wait_job(job_id)
        await stack.service.stop()
        from cloud_service.app import CloudService

        stack.service = CloudService(stack.service.config)
        await stack.service.start()
        stack.http.base_url = stack.service.url
        jobs = (await stack.http.get("/api/v1/jobs", params={"all": True})).json()["jobs"]
        assert sorted(j["id"] for j in jobs) == sorted(before)
        assert all(j["state"] == "completed" for j in jobs)
        after = (await stack.submit(pdf_bytes(1, 10), {}, service="steady")).json()
        assert (await stack.wait_job(after["id"]))["state"] == "completed"


async def test_lost_doorbell_rings_again(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "deaf")
        job = (await stack.submit(b"%PDF-1.4 d", service="deaf")).json()
        await asyncio.to_thread(dev.next)  # the first doorbell, "lost" by this device
        supervisor = stack.service.supervisor
        wait = supervisor.policy.redeliver_after
        assert (await supervisor.sweep(time.time() + wait / 2)).rung == 0
        assert (await supervisor.sweep(time.time() + wait + 1)).rung == 1
        bell = await asyncio.to_thread(dev.next)
        assert isinstance(bell, JobFetchable) and bell.job_id == job["id"]
        assert (await supervisor.sweep(time.time() + wait + 2)).rung == 0  # not every sweep
        await asyncio.to_thread(dev.close)


async def test_late_hello_does_not_take_back_a_newer_claim(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        dev = await raw_device(stack, "laggard")
        job = (await stack.submit(b"%PDF-1.4 l", service="laggard")).json()
        old_hello = Hello(software="raw", jobs=[], ts=time.time() - 5)  # written before the claim
        await claim(stack, dev, job["id"])
        await asyncio.to_thread(dev.send, old_hello)
        sync = await asyncio.to_thread(dev.next, 10, old_hello.id)
        assert isinstance(sync, Sync)
        kept = (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()
        assert kept["state"] == "pending" and "job-queued" in kept["state_reasons"], kept
        # A Hello written after the claim that omits the job means the device lost it.
        new_hello = Hello(software="raw", jobs=[])
        await asyncio.to_thread(dev.send, new_hello)
        await asyncio.to_thread(dev.next, 10, new_hello.id)
        lost = (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()
        assert "job-fetchable" in lost["state_reasons"], lost
        await asyncio.to_thread(dev.close)
