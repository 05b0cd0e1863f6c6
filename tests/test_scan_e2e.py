"""Cloud Scan end to end over TLS: a real broker, the service and a Manager with the
simulated scanner; the output is downloaded through the API and opened to check it."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from tests.support.devices import download, scan, scanner
from tests.support.stack import running_stack

pytestmark = pytest.mark.timeout(120)


async def test_scan_pdf_from_the_adf_duplex(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[scanner()])
        created = await scan(stack, {"input-source": "adf", "input-sides": "two-sided-long-edge",
                                     "input-resolution": 75, "input-color-mode": "monochrome",
                                     "input-media": "na_letter_8.5x11in"})
        assert created["kind"] == "scan" and created["documents"] == []
        job = await stack.wait_job(created["id"])
        assert job["state"] == "completed", job
        assert [d["format"] for d in job["documents"]] == ["application/pdf"]
        assert job["documents"][0]["state"] == "completed" and job["impressions_completed"] == 4
        pdf = pypdf.PdfReader(io.BytesIO(await download(stack, job["id"], 1)))
        assert len(pdf.pages) == 4  # 2 sheets, both sides
        page = pdf.pages[0]
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert abs(width - 612) < 2 and abs(height - 792) < 2  # letter, in points
        image = next(iter(page.images)).image
        assert image.mode == "L" and image.size == (638, 825)  # 8.5 x 11 in at 75 dpi


@pytest.mark.parametrize(("mode", "pil_mode", "fmt", "suffix"), [
    ("color", "RGB", "image/png", "PNG"),
    ("bi-level", "1", "image/png", "PNG"),
    ("color", "RGB", "image/jpeg", "JPEG"),
])
async def test_scan_images_one_per_page(tmp_path: Path, database_url: str, mode: str, pil_mode: str, fmt: str,
                                        suffix: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[scanner()])
        job = await stack.wait_job((await scan(stack, {"input-source": "adf", "input-resolution": 150,
                                                      "input-color-mode": mode, "document-format": fmt}))["id"])
        assert job["state"] == "completed", job
        assert len(job["documents"]) == 2  # 2 sheets, one side, one image each
        for number in (1, 2):
            image = Image.open(io.BytesIO(await download(stack, job["id"], number)))
            assert image.format == suffix and image.mode == pil_mode
            assert image.size == (1240, 1754)  # A4 at 150 dpi
            assert round(image.info["dpi"][0]) == 150


async def test_scan_region_from_the_platen(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[scanner()])
        region = {"x-origin": 1000, "y-origin": 1000, "x-dimension": 10160, "y-dimension": 5080}  # 4 x 2 in
        job = await stack.wait_job((await scan(stack, {"input-resolution": 100, "input-scan-regions": [region],
                                                      "document-format": "image/png"}))["id"])
        assert job["state"] == "completed" and len(job["documents"]) == 1
        image = Image.open(io.BytesIO(await download(stack, job["id"], 1)))
        assert image.size == (400, 200) and image.mode == "RGB"


@pytest.mark.parametrize(("ticket", "attribute"), [
    ({"input-resolution": 1200}, "input-resolution"),
    ({"input-color-mode": "sepia"}, "input-color-mode"),
    ({"input-source": "film-reader"}, "input-source"),
    ({"document-format": "image/tiff"}, "document-format"),
    ({"input-sides": "two-sided-long-edge"}, "input-sides"),  # duplex needs the ADF
    ({"input-color-mode": "bi-level", "document-format": "image/jpeg"}, "input-color-mode"),
    ({"input-scan-regions": [{"x-dimension": 30000, "y-dimension": 100}]}, "input-scan-regions"),
    ({"copies": 2}, "copies"),
])
async def test_bad_scan_tickets_are_refused_at_submit(tmp_path: Path, ticket: dict, attribute: str) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("mfd1", services=[scanner()])
        response = await stack.http.post("/api/v1/jobs", json={"kind": "scan", "ticket": ticket})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["attribute"] == attribute


async def test_cancel_mid_scan(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[scanner(pages_per_second=2, adf_sheets=20)])
        job = await scan(stack, {"input-source": "adf"})
        await stack.wait_job(job["id"], lambda j: j["state"] == "processing")
        await asyncio.sleep(0.6)
        response = await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        final = await stack.wait_job(job["id"])
        assert final["state"] == "canceled" and final["documents"] == []
        assert "job-canceled-by-user" in final["state_reasons"]


async def test_scanner_fault_aborts_with_a_reason(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd1", services=[scanner(fail_at_page=2)])
        final = await stack.wait_job((await scan(stack, {"input-source": "adf"}))["id"])
        assert final["state"] == "aborted" and "media-jam" in final["state_reasons"]
        assert "scan failed" in final["state_message"]


async def test_only_print_services_have_an_ipp_uri(tmp_path: Path, database_url: str) -> None:
    async with running_stack(tmp_path, database_url=database_url) as stack:
        await stack.add_manager("mfd-ipp", services=[scanner()])
        await stack.add_manager("printer-ipp")
        scanners = (await stack.http.get("/api/v1/services", params={"kind": "scan"})).json()["services"]
        printers = (await stack.http.get("/api/v1/services", params={"kind": "print"})).json()["services"]
        assert [s["ipp_uri"] for s in scanners] == [None]
        assert printers[0]["ipp_uri"].endswith("/ipp/print/printer-ipp")
