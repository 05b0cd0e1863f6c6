"""A job whose document never arrives (its upload died with the client, or with the replica
receiving it) is aborted after ``incoming_timeout`` (IPP's multiple-operation-time-out) by the
supervisor, driven with a controllable clock; a job whose document arrived is left alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker.credentials import generate_password
from schemas.messages import Attributes, PrintServiceAttributes
from tests.support.hops import count_hops
from tests.support.rawdevice import RawDevice
from tests.support.stack import running_stack


async def test_a_job_without_its_document_is_aborted_after_the_timeout(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_stack(tmp_path) as stack:
        password = generate_password()
        await stack.add_user("uploader-dev", password)
        device = await asyncio.to_thread(RawDevice, "uploader-dev", password, stack.broker.url, stack.ca)
        attributes = Attributes(services=[PrintServiceAttributes(name="uploader-dev")])
        reply = await asyncio.to_thread(device.request, attributes)
        assert reply.ok
        waiting = await stack.http.post("/api/v1/jobs", json={"ticket": {}, "document_format": "application/pdf",
                                                              "upload": True, "service": "uploader-dev"})
        assert waiting.status_code == 201, waiting.text
        job = waiting.json()
        assert job["state"] == "pending-held" and "job-incoming" in job["state_reasons"]
        complete = (await stack.submit(b"%PDF-1.4 whole", service="uploader-dev")).json()
        supervisor = stack.service.supervisor
        limit = supervisor.policy.incoming_timeout
        await supervisor.stop()  # its own timer must not sweep while this test counts
        hops = count_hops(monkeypatch, stack.service.store, names=False)
        assert (await supervisor.sweep(time.time() + limit / 2)).aborted == 0
        assert len(hops) == 1  # a sweep that changes nothing reads what it decides on in one hop
        monkeypatch.undo()
        assert (await supervisor.sweep(time.time() + limit + 1)).aborted == 1
        ended = (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()
        assert ended["state"] == "aborted" and "multiple-operation-time-out" in ended["state_message"]
        other = (await stack.http.get(f"/api/v1/jobs/{complete['id']}")).json()
        assert other["state"] != "aborted"
        await asyncio.to_thread(device.close)
