"""End to end over TLS on loopback: HTTP submit -> doorbell -> the real Manager fetches,
downloads by presigned URL and prints -> completed. With the embedded broker and Mosquitto, on SQLite
and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.documents import pdf_bytes
from tests.support.stack import running_stack

BROKERS = ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


def states(job: dict) -> list[str]:
    """The distinct successive states of a job's history."""
    out: list[str] = []
    for event in job["history"]:
        if not out or out[-1] != event["state"]:
            out.append(event["state"])
    return out


@pytest.mark.parametrize("broker", BROKERS)
async def test_print_end_to_end(tmp_path: Path, database_url: str, broker: str) -> None:
    async with running_stack(tmp_path, broker, database_url=database_url) as stack:
        await stack.add_manager("printer-a")
        data = pdf_bytes()
        response = await stack.submit(data, {"copies": 2, "sides": "two-sided-long-edge"}, service="printer-a",
                                      name="report.pdf")
        assert response.status_code == 201, response.text
        job = await stack.wait_job(response.json()["id"])
        assert job["state"] == "completed", job
        assert states(job) == ["pending-held", "pending", "processing", "completed"]
        assert job["impressions_completed"] == 6
        assert job["documents"][0]["state"] == "completed"

        out = stack.output_dir("printer-a")
        printed = sorted(out.glob(f"job-{job['id']}-doc-1*"))
        assert len(printed) == 1 and printed[0].read_bytes() == data
        assert (out / f"job-{job['id']}.ticket.json").exists()

        log = (stack.service.config.logs_dir / "access.log").read_text()
        for needle in ('"POST /api/v1/jobs HTTP/1.1" 201',
                       f"MQTT-SEND ci/v1/dev/printer-a/down job-fetchable#{job['id']}",
                       f"MQTT-RECV ci/v1/dev/printer-a/up fetch-job#{job['id']}",
                       f"MQTT-RECV ci/v1/dev/printer-a/up acknowledge-job#{job['id']}",
                       f"MQTT-RECV ci/v1/dev/printer-a/up document-status#{job['id']}",
                       f"MQTT-RECV ci/v1/dev/printer-a/up job-status#{job['id']}",
                       "MQTT-RECV ci/v1/dev/printer-a/up hello", "MQTT-RECV ci/v1/dev/printer-a/up attributes",
                       f'"GET /objects/jobs/{job["id"]}/doc-1 HTTP/1.1" 200 {len(data)}'):
            assert needle in log, needle

        # The upload flow (create, PUT to a presigned URL, close) reaches the printer too.
        created = await stack.http.post("/api/v1/jobs", json={"service": "printer-a", "upload": True,
                                                              "document_format": "text/plain"})
        assert created.status_code == 201 and created.json()["state"] == "pending-held"
        put = await stack.http.put(created.json()["upload_url"], content=b"hello\n" * 100,
                                   headers={"Authorization": ""})
        assert put.status_code == 200, put.text
        await stack.http.post(f"/api/v1/jobs/{created.json()['id']}/close")
        second = await stack.wait_job(created.json()["id"])
        assert second["state"] == "completed"


async def test_refusals(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("printer-b")
        response = await stack.submit(b"%PDF-1.4", {"media": "iso_a0_841x1189mm"}, service="printer-b")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["attribute"] == "media" and "iso_a4_210x297mm" in error["supported"]
        response = await stack.submit(b"%PDF-1.4", {"sidez": "one-sided"}, service="printer-b")
        assert response.status_code == 400 and response.json()["error"]["attribute"] == "sidez"
        response = await stack.submit(b"GIF89a", {}, service="printer-b", fmt="image/gif", name="x.gif")
        assert response.status_code == 400 and response.json()["error"]["attribute"] == "document-format"
        response = await stack.submit(b"%PDF", {}, service="no-such-printer")
        assert response.status_code == 404
        assert (await stack.http.get("/api/v1/jobs")).json()["jobs"] == []  # nothing was created

        # A device that refuses at fetch: the job ends aborted with the device's reason.
        await stack.add_manager("picky", driver="simulated",
                                options={"reject": True, "reject_reason": "unsupported-document-format"})
        job = (await stack.submit(b"%PDF-1.4", {}, service="picky")).json()
        final = await stack.wait_job(job["id"])
        assert final["state"] == "aborted"
        assert "unsupported-document-format" in final["state_reasons"], final
        assert final["state_message"]


async def test_cancel_pending_and_processing(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        # Pending: the printer is offline, so the job waits; cancel ends it at once.
        await stack.add_manager("sleepy")
        await stack.stop_manager("sleepy")
        offline = await stack.wait_service("sleepy", online=False)
        assert offline["state"] == "stopped" and "offline-report" in offline["state_reasons"]
        job = (await stack.submit(b"%PDF-1.4", {}, service="sleepy")).json()
        assert job["state"] == "pending"
        canceled = await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
        again = await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409

        # Processing: a slow printer is stopped through the device.
        await stack.add_manager("slow", driver="simulated", options={"pages_per_second": 2})
        job = (await stack.submit(pdf_bytes(pages=200, size=1000), {}, service="slow")).json()
        # Progress is reported while printing (every 2 s at most).
        await stack.wait_job(job["id"], lambda j: j["impressions_completed"] > 0, timeout=20)
        response = await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        assert "processing-to-stop-point" in response.json()["state_reasons"]
        final = await stack.wait_job(job["id"], timeout=20)
        assert final["state"] == "canceled", final
        assert 0 < final["impressions_completed"] < 200
        printed_log = stack.output_dir("slow") / "printed.log"
        assert not printed_log.exists() or str(job["id"]) not in printed_log.read_text().split()


async def test_sse_events_follow_the_job(tmp_path: Path, database_url: str) -> None:
    import orjson

    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("printer-e")
        job = (await stack.submit(pdf_bytes(1, 100), {}, service="printer-e")).json()
        seen: list[str] = []
        async with stack.http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(orjson.loads(line[6:])["state"])
        assert seen[-1] == "completed" and len(seen) >= 2


async def test_service_listing_shows_capabilities(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("printer-l")
        services = (await stack.http.get("/api/v1/services", params={"kind": "print"})).json()["services"]
        assert [s["name"] for s in services] == ["printer-l"]
        svc = services[0]
        assert svc["state"] == "idle" and svc["online"] and svc["last_seen"]
        assert "two-sided-long-edge" in svc["capabilities"]["sides-supported"]
        ok = await stack.http.post("/api/v1/services/print/printer-l/validate", json={"ticket": {"copies": 3}})
        assert ok.status_code == 200
        bad = await stack.http.post("/api/v1/services/print/printer-l/validate", json={"ticket": {"copies": 500}})
        assert bad.status_code == 400 and bad.json()["error"]["attribute"] == "copies"
        openapi = (await stack.http.get("/openapi.json")).json()
        assert "/api/v1/jobs" in openapi["paths"]

