"""The Manager's ``ipp`` driver against a real IPP Everywhere printer: CUPS's ippeveprinter.

ippeveprinter (cups-ipp-utils) needs a running avahi-daemon and D-Bus even with ``-r off``;
tests.support.ipptools starts private ones when avahi is not running. The printer runs a small
shell script per document that plays the device: it can jam (``STATE: +media-jam``), run low on
toner, fail or take its time, as a file in a control directory says. ippeveprinter has no IPP
notifications (the driver polls it); a private cupsd queue printing on it is the printer that
has them (ippget: Get-Notifications), for the notification path. Everything on 127.0.0.1,
ephemeral ports, bounded waits; missing tools skip (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.credentials import generate_password
from cloud_service.ipp.conformance import minimal_pdf
from manager.drivers.ipp import printer_status
from schemas.ipp.codec import Group, Op, Status, Tag, decode, request, simple
from tests.support.cupsd import add_driverless_queue, cupsd_server
from tests.support.ipptools import (
    free_port,
    ipp,
    ippeveprinter,
    new,
    reply,
    wait_for,
)
from tests.support.rasterdocs import dark_fraction, numbered_pdf, render_gray
from tests.support.rasterdocs import decode as decode_raster
from tests.support.stack import Stack, running_stack

#: The "print engine": copies the document, then behaves as $CTRL/mode says.
PRINT_SCRIPT = """#!/bin/sh
CTRL="{ctrl}"
mode=$(cat "$CTRL/mode" 2>/dev/null || echo normal)
cat "$1" > "$CTRL/last.bin"
i=0
case "$mode" in
  jam)
    echo "STATE: +media-jam" >&2
    while [ ! -f "$CTRL/clear" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    echo "STATE: -media-jam" >&2
    echo "STATE: +toner-low" >&2 ;;
  slow)
    # ippeveprinter applies a Cancel-Job when the command ends: not too slow, then.
    while [ $i -lt 80 ]; do sleep 0.1; i=$((i+1)); done ;;
  fail)
    echo "ERROR: the fuser overheated" >&2
    exit 1 ;;
  supplies)
    # The marker levels (and any STATE: lines) the printer reports after this job.
    cat "$CTRL/supplies" >&2 ;;
esac
echo "ATTR: job-impressions-completed=2" >&2
exit 0
"""


@dataclass
class LanPrinter:
    uri: str
    ctrl: Path
    log: Path

    def mode(self, mode: str) -> None:
        (self.ctrl / "clear").unlink(missing_ok=True)
        (self.ctrl / "mode").write_text(mode)


@contextlib.contextmanager
def eve_printer(tmp: Path, formats: str = "application/pdf,image/jpeg") -> Iterator[LanPrinter]:
    ctrl = tmp / "eve-ctrl"
    ctrl.mkdir()
    with ippeveprinter(tmp, PRINT_SCRIPT.format(ctrl=ctrl), formats, "Acme", "LAN 1", "lan", verbose=True) as eve:
        yield LanPrinter(eve.uri, ctrl, eve.log)


async def add_ipp_manager(stack: Stack, name: str, uri: str, **options: Any) -> Any:
    """A Manager whose one service uses the ipp driver (no capabilities in its config)."""
    from manager.app import Manager
    from manager.config import ManagerConfig

    password = generate_password()
    await stack.add_user(name, password)
    raw = stack.manager_config(name, "ipp", None, None, password)
    service = raw["services"][0]
    service["driver_options"] = {"uri": uri, "poll_interval": 0.3, "timeout": 5, **options}
    del service["capabilities"], service["make_and_model"]
    manager = Manager(ManagerConfig.model_validate(raw))
    await asyncio.to_thread(manager.start)
    stack.managers[name] = manager
    return manager


async def printer_jobs(uri: str) -> list[dict[str, Any]]:
    """The LAN printer's own jobs (Get-Jobs which-jobs=all), straight from it."""
    import httpx

    msg = request(Op.GET_JOBS)
    op = msg.operation()
    op.add("printer-uri", Tag.URI, uri)
    op.add("which-jobs", Tag.KEYWORD, "all")
    op.add("requested-attributes", Tag.KEYWORD, ["job-id", "job-state", "job-name"])
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(uri.replace("ipp://", "http://"), content=msg.encode(),
                                     headers={"Content-Type": "application/ipp"})
    answer = decode(response.content)[0]
    return [{k: simple(v) for k, v in g.attributes.items()} for g in answer.groups_of(Tag.JOB)]


@contextlib.asynccontextmanager
async def lan_stack(tmp: Path, formats: str = "application/pdf,image/jpeg") -> AsyncIterator[tuple[Stack, LanPrinter]]:
    with eve_printer(tmp, formats) as printer:
        async with running_stack(tmp) as stack:
            await add_ipp_manager(stack, "lan", printer.uri)
            await stack.wait_service("lan")
            yield stack, printer


async def service(stack: Stack, name: str = "lan") -> dict[str, Any]:
    return (await stack.http.get(f"/api/v1/services/print/{name}")).json()


async def discovered_service(stack: Stack) -> dict[str, Any]:
    """The LAN printer's service once the driver has published what the printer told it."""
    async def discovered() -> dict | None:
        svc = await service(stack)
        return svc if svc["make_and_model"] == "Acme LAN 1" else None

    svc = await wait_for(discovered, 20, "the printer's attributes were not published")
    assert isinstance(svc, dict)
    return svc


# ---------------------------------------------------------------------------- tests


@pytest.mark.slow
async def test_ipp_driver_prints_on_a_real_ipp_printer(tmp_path: Path) -> None:
    async with lan_stack(tmp_path) as (stack, printer):
        # Discovery: the cloud knows what the printer can do, and refuses what it cannot.
        svc = await discovered_service(stack)
        caps = svc["capabilities"]
        assert {"iso_a4_210x297mm", "na_letter_8.5x11in"} <= set(caps["media-supported"])
        assert "application/pdf" in caps["document-format-supported"]
        assert caps["sides-supported"] == ["one-sided"] and svc["state"] == "idle"
        duplex = await stack.submit(minimal_pdf(), {"sides": "two-sided-long-edge"}, service="lan")
        assert duplex.status_code == 400 and duplex.json()["error"]["attribute"] == "sides"

        # A job goes to the printer (Create-Job + Send-Document) and completes with its count.
        printer.mode("normal")
        document = minimal_pdf(pages=2)
        job = (await stack.submit(document, {"copies": 1, "media": "iso_a4_210x297mm"}, service="lan",
                                  name="two pages.pdf")).json()
        done = await stack.wait_job(job["id"], timeout=60)
        assert done["state"] == "completed" and done["impressions_completed"] == 2, done
        assert (printer.ctrl / "last.bin").read_bytes() == document
        remote = await printer_jobs(printer.uri)
        assert [j["job-state"] for j in remote] == [9] and remote[0]["job-name"] == "two pages.pdf"

        # A jam stops the printer: the service is stopped (media-jam) and the job processing-stopped;
        # cleared, the job completes; the toner-low warning stays on an idle printer.
        printer.mode("jam")
        job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()

        async def jammed() -> bool:
            svc, current = await service(stack), (await stack.http.get(f"/api/v1/jobs/{job['id']}")).json()
            return (svc["state"] == "stopped" and "media-jam" in svc["state_reasons"]
                    and current["state"] == "processing-stopped" and "printer-stopped" in current["state_reasons"])

        await wait_for(jammed, 30, "the jam did not reach the cloud")
        (printer.ctrl / "clear").touch()
        assert (await stack.wait_job(job["id"], timeout=60))["state"] == "completed"

        async def toner_low() -> bool:
            svc = await service(stack)
            return svc["state"] == "idle" and svc["state_reasons"] == ["toner-low"]

        await wait_for(toner_low, 20, "toner-low was not reported on the idle printer")

        # A cancel at the cloud reaches the printer's job.
        printer.mode("slow")
        job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()
        await stack.wait_job(job["id"], lambda j: j["state"] == "processing", timeout=30)

        async def printing_remotely() -> bool:
            return any(j["job-state"] == 5 for j in await printer_jobs(printer.uri))

        await wait_for(printing_remotely, 30, "the printer never started the slow job")
        assert (await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")).status_code == 200
        canceled = await stack.wait_job(job["id"], timeout=30)
        assert canceled["state"] == "canceled", canceled

        seen: list[dict[str, Any]] = []

        async def canceled_remotely() -> bool:
            seen[:] = await printer_jobs(printer.uri)
            return [j["job-state"] for j in seen].count(7) == 1

        try:
            await wait_for(canceled_remotely, 30, "the printer's job was not canceled")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen}") from None

        # The printer aborts a job: the cloud job is aborted.
        printer.mode("fail")
        job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()
        aborted = await stack.wait_job(job["id"], timeout=60)
        assert aborted["state"] == "aborted" and "aborted-by-system" in aborted["state_reasons"], aborted

        # Identify-Printer through the cloud's IPP front reaches the LAN printer.
        msg = new(stack, Op.IDENTIFY_PRINTER, "lan", identify_actions=(Tag.KEYWORD, ["display"]),
                  message=(Tag.TEXT, "cloud says hi"))
        assert reply(await ipp(stack, "lan", msg)).code == Status.OK

        async def identified() -> bool:
            return "Identify-Printer" in printer.log.read_text(errors="replace")

        await wait_for(identified, 20, "Identify-Printer did not reach the printer")


@pytest.mark.slow
async def test_a_pdf_prints_on_a_printer_that_takes_only_pwg_raster(tmp_path: Path) -> None:
    """The cloud transforms the PDF into the raster the printer asks for; the printer's copy is
    decoded by cups-filters and poppler, page by page."""
    pdf = numbered_pdf(tmp_path / "three.pdf", 3)
    async with lan_stack(tmp_path, "image/pwg-raster") as (stack, printer):
        svc = await discovered_service(stack)
        caps = svc["capabilities"]
        # The device's own formats are what the printer says; the service adds what it transforms.
        # (ippeveprinter always adds application/octet-stream: it sniffs what it is sent.)
        assert set(caps["document-format-device-supported"]) == {"image/pwg-raster", "application/octet-stream"}
        assert "application/pdf" in caps["document-format-supported"]
        dpis = caps.get("pwg-raster-document-resolution-supported")
        assert dpis, caps

        printer.mode("normal")
        job = (await stack.submit(pdf.read_bytes(), {"media": "iso_a4_210x297mm"}, service="lan",
                                  name="three.pdf")).json()
        done = await stack.wait_job(job["id"], timeout=120)
        assert done["state"] == "completed", done

        received = tmp_path / "received.pwg"
        received.write_bytes((printer.ctrl / "last.bin").read_bytes())
        assert received.read_bytes()[:4] == b"RaS2"
        header = received.read_bytes()[4:4 + 1796]
        dpi = int.from_bytes(header[276:280], "big")
        assert dpi in dpis
        decoded = decode_raster(received, "image/pwg-raster")
        assert decoded.pages == 3
        assert abs(decoded.size[0] - 595) < 3 and abs(decoded.size[1] - 842) < 3, decoded.size
        # Page n has a bar at 40 + 720 n/3 points from the bottom: each page in its band, in order.
        bands = [(0.2, 0.64, 0.8, 0.66), (0.2, 0.355, 0.8, 0.375), (0.2, 0.07, 0.8, 0.09)]
        for n in (1, 2, 3):
            page = render_gray(decoded.pdf, n)
            ink = [dark_fraction(page, band) for band in bands]
            assert ink[n - 1] > 0.5 and sum(ink) - ink[n - 1] < 0.1, (n, ink)


@contextlib.asynccontextmanager
async def cups_queue(printer: LanPrinter) -> AsyncIterator[tuple[str, Path]]:
    """A private cupsd with a driverless queue printing on ``printer``: a printer with IPP
    notifications (cupsd answers Get-Notifications at once; it does not hold them). Its URI and
    access log (one line per request, with the operation's name)."""
    with cupsd_server() as cupsd:
        await add_driverless_queue(cupsd.server, "lan", printer.uri, cupsd.env)
        yield f"ipp://{cupsd.server}/printers/lan", cupsd.logs / "access_log"


async def job_states(stack: Stack, job_id: int, timeout: float) -> tuple[list[str], dict[str, Any]]:
    """The cloud job's states as seen every 0.1 s until it ends, and the ended job."""
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        job = (await stack.http.get(f"/api/v1/jobs/{job_id}")).json()
        if not seen or seen[-1] != job["state"]:
            seen.append(job["state"])
        if job["state"] in ("completed", "canceled", "aborted"):
            return seen, job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {seen}")


def operations_logged(access_log: Path, operation: str) -> int:
    return access_log.read_text(errors="replace").count(f" {operation} ") if access_log.exists() else 0


@pytest.mark.slow
async def test_notifications_follow_a_job_and_a_cancel_reaches_the_printer(tmp_path: Path) -> None:
    """A printer with ippget notifications (a cupsd queue): the job is created with a job
    subscription, followed through Get-Notifications, completes with its states reported; a
    cancel during processing reaches the printer; ``follow: poll`` still completes, without
    notifications."""
    with eve_printer(tmp_path) as printer:
        async with cups_queue(printer) as (queue, access_log), running_stack(tmp_path / "stack") as stack:
            await add_ipp_manager(stack, "lan", queue)
            await stack.wait_service("lan")
            printer.mode("normal")
            document = minimal_pdf(pages=2)
            job = (await stack.submit(document, {}, service="lan", name="notified.pdf")).json()
            seen, done = await job_states(stack, job["id"], 60)
            assert done["state"] == "completed" and done["impressions_completed"] == 2, done
            # The job's history, not the 0.1 s samples: a two-page job can pass through
            # processing between two samples.
            assert "processing" in [h["state"] for h in done["history"]], (seen, done["history"])
            assert operations_logged(access_log, "Get-Notifications") >= 1, access_log.read_text()[-3000:]
            assert (printer.ctrl / "last.bin").exists()
            remote = await printer_jobs(queue)
            assert [j["job-state"] for j in remote] == [9], remote

            # Cancel while the printer processes the job: cupsd's job is canceled.
            printer.mode("slow")
            job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()

            async def printing_remotely() -> bool:
                return any(j["job-state"] == 5 for j in await printer_jobs(printer.uri))

            await wait_for(printing_remotely, 30, "the printer never started the slow job")
            assert (await stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")).status_code == 200
            canceled = await stack.wait_job(job["id"], timeout=30)
            assert canceled["state"] == "canceled", canceled

            async def canceled_at_queue() -> bool:
                jobs = sorted(await printer_jobs(queue), key=lambda j: j["job-id"])
                return [j["job-state"] for j in jobs] == [9, 7]

            await wait_for(canceled_at_queue, 30, "the cancel did not reach the printer")

            # Forced polling: the same printer, no Get-Notifications.
            (printer.ctrl / "clear").touch()
            printer.mode("normal")
            await add_ipp_manager(stack, "polled", queue, follow="poll")
            await stack.wait_service("polled")

            async def idle_queue() -> bool:  # the slow job's backend gone: cupsd takes the next
                return all(j["job-state"] >= 7 for j in await printer_jobs(printer.uri))

            await wait_for(idle_queue, 30, "the printer did not finish the canceled job")
            before = operations_logged(access_log, "Get-Notifications")
            job = (await stack.submit(minimal_pdf(), {}, service="polled")).json()
            seen, done = await job_states(stack, job["id"], 60)
            assert done["state"] == "completed", (seen, done)
            assert operations_logged(access_log, "Get-Notifications") == before


@pytest.mark.slow
async def test_a_printer_without_notifications_is_polled(tmp_path: Path) -> None:
    """ippeveprinter has no Get-Notifications: the driver polls it, and the job completes."""
    async with lan_stack(tmp_path) as (stack, printer):
        printer.mode("normal")
        job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()
        seen, done = await job_states(stack, job["id"], 60)
        assert done["state"] == "completed" and done["impressions_completed"] == 2, (seen, done)
        log = printer.log.read_text(errors="replace")
        assert "Get-Job-Attributes" in log and "Get-Notifications" not in log, log[-3000:]


async def test_unreachable_printer_is_reported_stopped(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        port = free_port()  # nothing listens there
        await add_ipp_manager(stack, "gone", f"ipp://127.0.0.1:{port}/ipp/print")

        async def stopped() -> dict | None:
            svc = await service(stack, "gone")
            ok = svc.get("online") and svc["state"] == "stopped" and "connecting-to-device" in svc["state_reasons"]
            return svc if ok else None

        await wait_for(stopped, 20, "an unreachable printer was not shown stopped")


def test_printer_state_reasons_mapping() -> None:
    def status(state: int, *reasons: str) -> tuple[bool, tuple[str, ...]]:
        group = Group(Tag.PRINTER)
        group.add("printer-state", Tag.ENUM, state)
        group.add("printer-state-reasons", Tag.KEYWORD, list(reasons) or ["none"])
        result = printer_status(group)
        return result.stopped, result.reasons

    assert status(3) == (False, ())
    assert status(4, "toner-low-warning") == (False, ("toner-low",))
    assert status(3, "toner-low") == (False, ("toner-low",))  # supplies running low: a warning
    assert status(4, "media-jam") == (True, ("media-jam",))  # no suffix: an error (RFC 8011 5.4.12)
    assert status(4, "media-jam-warning") == (True, ("media-jam",))  # a jam stops it whatever the suffix
    assert status(5, "media-empty-error", "toner-low-report") == (True, ("media-empty", "toner-low"))
    assert status(3, "offline-report") == (False, ("offline-report",))
    assert status(5) == (True, ("other",))
    assert status(3, "identify-printer-requested") == (False, ("identify-printer-requested",))
