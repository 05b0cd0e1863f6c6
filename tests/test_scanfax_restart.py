"""Scan and fax get the print guarantees across a Manager restart: a job cut mid-scan or
mid-fax is journaled, ends with a reason, and nothing is done twice (no destination dialled
again, no second set of scan output)."""

from __future__ import annotations

from pathlib import Path

from tests.support.devices import dests, modem, scan, scanner, submit
from tests.support.stack import running_stack


async def test_restart_mid_scan_ends_with_a_reason(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        services = [scanner(pages_per_second=1, adf_sheets=30)]
        await stack.add_manager("mfd-r", services=services)
        job = await scan(stack, {"input-source": "adf"})
        await stack.wait_job(job["id"], lambda j: j["state"] == "processing", timeout=20)
        await stack.stop_manager("mfd-r")
        await stack.add_manager("mfd-r", services=services)  # same state dir: the journal
        final = await stack.wait_job(job["id"], timeout=30)
        assert final["state"] == "aborted", final
        assert "restarted" in (final["state_message"] or "")
        # A later scan on the same device works, and the cut one is not scanned again.
        again = await scan(stack, {"input-source": "platen"})
        assert (await stack.wait_job(again["id"]))["state"] == "completed"
        assert (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "aborted"


async def test_restart_mid_fax_never_dials_a_sent_destination_again(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        services = [modem(tmp_path, seconds_per_page=1.5)]
        await stack.add_manager("mfd-f", services=services)
        first, second = "tel:+15551230001", "tel:+15551230002"
        job = await submit(stack, {"destination-uris": dests(first, second)})

        def first_sent(j: dict) -> bool:
            return any(s["destination-uri"] == first and s["transmission-status"] == "completed"
                       for s in j.get("destination_statuses") or [])

        await stack.wait_job(job["id"], first_sent, timeout=30)
        await stack.stop_manager("mfd-f")
        await stack.add_manager("mfd-f", services=services)
        final = await stack.wait_job(job["id"], timeout=30)
        assert final["state"] in ("aborted", "completed"), final
        statuses = {s["destination-uri"]: s for s in final["destination_statuses"]}
        assert statuses[first]["transmission-status"] == "completed"
        assert statuses[first]["attempts"] == 1, "a sent destination was dialled again"
        tiffs = sorted((tmp_path / "faxes").glob(f"job-{job['id']}-+15551230001*"))
        assert len(tiffs) == 1
