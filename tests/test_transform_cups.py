"""CUPS prints a PDF through a driverless (``lpadmin -m everywhere``) queue to a cloud printer
whose device takes only PWG raster: the service advertises PDF (it transforms it), CUPS sends
the PDF, the device receives PWG raster, and cups-filters decodes that raster to the pages the
PDF had."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager.drivers.simulated import RASTER_PRINTER_CAPABILITIES
from tests.support.cupsd import add_driverless_queue, private_cupsd
from tests.support.ipptools import ipp_url, run, wait_for
from tests.support.rasterdocs import dark_fraction, decode, numbered_pdf, render_gray
from tests.support.stack import running_stack

PWG_ONLY = {**RASTER_PRINTER_CAPABILITIES, "document-format-supported": ["image/pwg-raster"],
            "document-format-default": "image/pwg-raster", "pwg-raster-document-resolution-supported": [100]}


@pytest.mark.slow
async def test_lp_of_a_pdf_to_a_pwg_raster_only_printer(tmp_path: Path) -> None:
    pdf = numbered_pdf(tmp_path / "report.pdf", 3)
    with private_cupsd() as (port, logs, env):
        async with running_stack(tmp_path) as stack:
            await stack.add_manager("rasteronly", driver="file", capabilities=PWG_ONLY)
            server = f"127.0.0.1:{port}"
            device = ipp_url(stack, "rasteronly", "admin", stack.token)
            await add_driverless_queue(server, "rasteronly", device, env)
            code, out = await run(["lp", "-h", server, "-d", "rasteronly", str(pdf)], env, timeout=30)
            assert code == 0 and "request id is rasteronly-" in out, out

            async def cloud_job() -> dict | None:
                jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]
                return jobs[0] if jobs and jobs[0]["state"] in ("completed", "aborted") else None

            try:
                job = await wait_for(cloud_job, 120, "the CUPS job did not end at the cloud")
            except AssertionError:
                raise AssertionError((logs / "error_log").read_text()[-6000:]) from None
            assert isinstance(job, dict) and job["state"] == "completed", job
            # CUPS sent the PDF (the front offers it); the service made the raster.
            assert job["documents"][0]["format"] == "application/pdf"
            history = (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()["history"]
            assert any("to image/pwg-raster" in (event["message"] or "") for event in history), history
            printed = sorted(stack.output_dir("rasteronly").glob(f"job-{job['id']}-doc-1*"))
            assert len(printed) == 1 and printed[0].read_bytes().startswith(b"RaS2")
            decoded = decode(printed[0], "image/pwg-raster")
            assert decoded.pages == 3
            # Page 3's bar is at the top of its page, page 1's at the bottom: the right pages, in order.
            first, last = render_gray(decoded.pdf, 1), render_gray(decoded.pdf, 3)
            assert dark_fraction(first, (0.2, 0.55, 0.8, 0.75)) > 0.1
            assert dark_fraction(last, (0.2, 0.0, 0.8, 0.15)) > 0.1
