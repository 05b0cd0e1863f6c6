"""Cloud FaxOut end to end over TLS: the simulated modem writes a bilevel TIFF at fax
resolution per destination; busy and no-answer numbers follow the retry policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from schemas.enums import JobState
from tests.support.devices import BUSY, SILENT, dests, modem, png_page, submit
from tests.support.stack import running_stack

pytestmark = pytest.mark.timeout(120)


async def test_fax_to_two_numbers_writes_bilevel_tiffs(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path)])
        job = await submit(stack, {"destination-uris": dests("tel:+15551234567", "tel:+442079460000"),
                                   "printer-resolution": [204, 196]})
        final = await stack.wait_job(job["id"])
        assert final["state"] == "completed", final
        statuses = final["destination_statuses"]
        assert [s["transmission-status"] for s in statuses] == ["completed", "completed"]
        assert all(s["images-completed"] == 1 and s["attempts"] == 1 for s in statuses)
        for number in ("+15551234567", "+442079460000"):
            tiff = Image.open(tmp_path / "faxes" / f"job-{final['id']}-{number}.tiff")
            assert tiff.mode == "1" and tiff.info["compression"] == "group4"
            assert tuple(round(v) for v in tiff.info["dpi"]) == (204, 196)
            assert tiff.size == (1728, round(11.69 * 196))


async def test_text_document_at_standard_resolution(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path)])
        text = "\n".join(f"line {n}" for n in range(90)).encode()
        final = await stack.wait_job((await submit(stack, {"destination-uris": dests("tel:+15551234567")},
                                                   text, "text/plain"))["id"])
        assert final["state"] == "completed"
        tiff = Image.open(tmp_path / "faxes" / f"job-{final['id']}-+15551234567.tiff")
        assert getattr(tiff, "n_frames", 1) == 2 and tuple(round(v) for v in tiff.info["dpi"]) == (204, 98)


async def test_busy_and_no_answer_are_retried_then_reported(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path)])
        job = await submit(stack, {"destination-uris": dests("tel:+15551234567", BUSY, SILENT),
                                   "number-of-retries": 2})
        final = await stack.wait_job(job["id"])
        assert final["state"] == "completed" and "job-completed-with-errors" in final["state_reasons"], final
        by_uri = {s["destination-uri"]: s for s in final["destination_statuses"]}
        assert by_uri["tel:+15551234567"]["transmission-status"] == "completed"
        assert by_uri[BUSY]["transmission-status"] == "aborted"
        assert by_uri[BUSY]["transmission-status-reasons"] == ["busy"] and by_uri[BUSY]["attempts"] == 3
        assert by_uri[SILENT]["transmission-status-reasons"] == ["no-answer"] and by_uri[SILENT]["attempts"] == 3
        assert not (tmp_path / "faxes" / f"job-{final['id']}-+15555550100.tiff").exists()


async def test_busy_once_then_sent_on_retry(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path, fail_attempts=1)])
        final = await stack.wait_job((await submit(stack, {"destination-uris": dests(BUSY)}))["id"])
        assert final["state"] == "completed", final
        status = final["destination_statuses"][0]
        assert status["transmission-status"] == "completed" and status["attempts"] == 2


async def test_every_destination_failing_aborts_the_job(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path)])
        final = await stack.wait_job((await submit(stack, {"destination-uris": dests(BUSY),
                                                           "number-of-retries": 0}))["id"])
        assert final["state"] == "aborted" and "busy" in final["state_message"]


@pytest.mark.parametrize(("ticket", "attribute"), [
    ({"destination-uris": [{"destination-uri": "mailto:a@example.com"}]}, "destination-uris"),
    ({"destination-uris": [{"destination-uri": "tel:call-me"}]}, "destination-uris"),
    ({}, "destination-uris"),
    ({"destination-uris": dests("tel:+1555000001", "tel:+1555000002", "tel:+1555000003", "tel:+1555000004")},
     "destination-uris"),
    ({"destination-uris": dests("tel:+1555000001", "tel:+1555000001")}, "destination-uris"),
    ({"destination-uris": dests("tel:+1555000001"), "printer-resolution": [300, 300]}, "printer-resolution"),
    ({"destination-uris": dests("tel:+1555000001"), "number-of-retries": 9}, "number-of-retries"),
    ({"destination-uris": dests("tel:+1555000001"), "sides": "one-sided"}, "sides"),
])
async def test_bad_destinations_and_tickets_are_refused(tmp_path: Path, ticket: dict, attribute: str) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path)])
        import orjson

        response = await stack.http.post("/api/v1/jobs", files={
            "job": (None, orjson.dumps({"kind": "faxout", "ticket": ticket, "document_format": "image/png"}),
                    "application/json"),
            "document": ("p.png", png_page(), "image/png")})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["attribute"] == attribute


async def test_cancel_mid_fax(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[modem(tmp_path, seconds_per_page=1.0)])
        text = "\n".join(f"line {n}" for n in range(600)).encode()  # 10 pages, 1 s each
        job = await submit(stack, {"destination-uris": dests("tel:+15551234567", "tel:+15551234568")},
                           text, "text/plain")
        await stack.wait_job(job["id"], lambda j: j["state"] == "processing")
        await asyncio.sleep(1.0)
        assert (await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")).status_code == 200
        # The per-destination statuses are written in the transaction of the report that ends
        # the job: they are there the instant the state is.
        final = await stack.wait_job(job["id"], lambda j: JobState(j["state"]).terminal)
        assert final["state"] == "canceled"
        assert [s["transmission-status"] for s in final["destination_statuses"]] == ["canceled", "canceled"]
        assert not list((tmp_path / "faxes").glob(f"job-{job['id']}-*.tiff"))
