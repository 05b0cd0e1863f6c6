"""Retention (PWG Cloud Imaging Model requirement 15) with a controllable clock: per-service defaults, per-job choice,
the sweeper, the policy in the job's details, and no object outliving its policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from cloud_service.clock import ManualClock
from schemas.model.retention import MIN_HISTORY_SECONDS
from tests.support.secstack import SecureStack, secure_stack

PDF = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF\n"


async def printed(stack: SecureStack, retention: dict[str, Any] | None = None) -> dict:
    spec: dict[str, Any] = {"service": "ret-p", "document_format": "application/pdf"}
    if retention:
        spec["retention"] = retention
    response = await stack.http.post("/api/v1/jobs", files={"job": (None, orjson.dumps(spec), "application/json"),
                                                            "document": ("d.pdf", PDF, "application/pdf")})
    assert response.status_code == 201, response.text
    return await stack.wait_job(response.json()["id"])


async def stored(stack: SecureStack, job_id: int) -> bool:
    return await stack.service.objects.size(f"jobs/{job_id}/doc-1") is not None


async def test_sweeper_enforces_document_and_history_retention(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        await stack.add_manager("ret-p")
        policy = await stack.http.put("/api/v1/services/print/ret-p/policy", json={
            "document_retention": "after-duration", "document_retention_seconds": 600,
            "history_retention_seconds": 2 * MIN_HISTORY_SECONDS})
        assert policy.status_code == 200
        discard = await printed(stack, {"documents": "discard-after-processing"})
        default = await printed(stack)
        keep = await printed(stack, {"documents": "keep", "history_seconds": 10})
        assert default["retention"]["documents"] == "after-duration"
        assert default["retention"]["document_seconds"] == 600
        assert default["retention"]["documents_delete_after"] == default["completed_at"] + 600
        assert keep["retention"]["documents"] == "keep" and keep["retention"]["documents_delete_after"] is None
        # The job asked for 10 s of history; no job row goes before every URL minted for it expired.
        assert keep["retention"]["job_delete_after"] == keep["completed_at"] + MIN_HISTORY_SECONDS

        clock = ManualClock(max(j["completed_at"] for j in (discard, default, keep)))
        sweeper = stack.service.sweeper
        sweeper.clock = clock
        assert await sweeper.sweep() == {"documents_discarded": 1, "jobs_deleted": 0}
        assert not await stored(stack, discard["id"])
        assert await stored(stack, default["id"]) and await stored(stack, keep["id"])
        details = (await stack.http.get(f"/api/v1/jobs/{discard['id']}")).json()
        assert details["retention"]["documents_discarded_at"] == clock.now()
        assert (await stack.http.get(f"/api/v1/jobs/{discard['id']}/documents/1")).status_code == 404

        clock.advance(601)
        assert (await sweeper.sweep())["documents_discarded"] == 1
        assert not await stored(stack, default["id"]) and await stored(stack, keep["id"])

        clock.advance(MIN_HISTORY_SECONDS)
        assert (await sweeper.sweep())["jobs_deleted"] == 1  # 'keep' had 10 s of history
        assert (await stack.http.get(f"/api/v1/jobs/{keep['id']}")).status_code == 404
        assert not await stored(stack, keep["id"])

        clock.advance(MIN_HISTORY_SECONDS)
        assert (await sweeper.sweep())["jobs_deleted"] == 2  # the service's two hours
        remaining = (await stack.http.get("/api/v1/jobs", params={"all": True})).json()["jobs"]
        assert remaining == []
        assert await sweeper.sweep() == {"documents_discarded": 0, "jobs_deleted": 0}


async def test_service_defaults_apply_without_a_policy(tmp_path: Path) -> None:
    async with secure_stack(tmp_path, document_retention="discard-after-processing") as stack:
        await stack.add_manager("ret-p")
        job = await printed(stack)
        assert job["retention"]["documents"] == "discard-after-processing"
        assert job["retention"]["history_seconds"] is None and job["retention"]["job_delete_after"] is None
        stack.service.sweeper.clock = ManualClock(job["completed_at"] + 365 * 86400)
        assert await stack.service.sweeper.sweep() == {"documents_discarded": 1, "jobs_deleted": 0}
        assert (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "completed"
