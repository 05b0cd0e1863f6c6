"""The Manager's ``ipp`` driver against a real IPP Everywhere printer: CUPS's ippeveprinter.

ippeveprinter (cups-ipp-utils) needs a running avahi-daemon and D-Bus even with ``-r off``;
when avahi is not running we start a private D-Bus (its own socket, not the system bus) and
an avahi-daemon on it, and stop both at the end. The printer runs a small shell script per
document that plays the device: it can jam (``STATE: +media-jam``), run low on toner, fail or
take its time, as a file in a control directory says. Everything on 127.0.0.1, ephemeral
ports, bounded waits; missing tools skip (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.credentials import generate_password
from cloud_service.ipp.conformance import minimal_pdf
from manager.drivers.ipp import printer_status
from schemas.ipp.codec import Group, Op, Status, Tag, decode, request, simple
from tests.support.ipptools import (
    free_port,
    ipp,
    missing,
    need_tool,
    new,
    process,
    reply,
    wait_for,
    wait_port,
)
from tests.support.rasterdocs import dark_fraction, numbered_pdf, render_gray
from tests.support.rasterdocs import decode as decode_raster
from tests.support.stack import Stack, running_stack

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""

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


@contextlib.contextmanager
def mdns_daemons() -> Iterator[dict[str, str]]:
    """Environment for ippeveprinter: the running avahi, or a private D-Bus + avahi we start."""
    avahi = need_tool("avahi-daemon", "avahi-daemon")
    if subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode == 0:
        yield {}
        return
    dbus = need_tool("dbus-daemon", "dbus")
    if os.geteuid() != 0:
        missing("avahi-daemon is not running and only root can start one")
    # A short directory: a unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ci-mdns-"))
    try:
        socket_path = root / "bus"
        (root / "bus.conf").write_text(BUS_CONF.format(socket=socket_path))
        (root / "avahi.conf").write_text(AVAHI_CONF)
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
        with process([dbus, f"--config-file={root / 'bus.conf'}", "--nofork"], root / "dbus.log"):
            deadline = time.monotonic() + 10
            while not socket_path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert socket_path.exists(), (root / "dbus.log").read_text()
            args = [avahi, "--no-drop-root", "--no-chroot", "--no-rlimits", "-f", str(root / "avahi.conf")]
            with process(args, root / "avahi.log", env) as proc:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and proc.poll() is None:
                    if subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode == 0:
                        break
                    time.sleep(0.1)
                assert proc.poll() is None, (root / "avahi.log").read_text()
                yield {"DBUS_SYSTEM_BUS_ADDRESS": env["DBUS_SYSTEM_BUS_ADDRESS"]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    ippeve = need_tool("ippeveprinter", "cups-ipp-utils")
    with mdns_daemons() as extra_env:
        ctrl, spool, home = tmp / "eve-ctrl", tmp / "eve-spool", tmp / "eve-home"
        for path in (ctrl, spool, home):
            path.mkdir()
        script = tmp / "eve-print.sh"
        script.write_text(PRINT_SCRIPT.format(ctrl=ctrl))
        script.chmod(0o755)
        port = free_port()
        env = {**os.environ, **extra_env, "HOME": str(home)}
        args = [ippeve, "-p", str(port), "-n", "localhost", "-r", "off", "-d", str(spool), "-K", str(home),
                "-f", formats, "-c", str(script), "-M", "Acme", "-m", "LAN 1", "-vvv", "lan"]
        log = tmp / "eve.log"
        with process(args, log, env) as proc:
            if not wait_port(port, 15) or proc.poll() is not None:
                raise AssertionError(f"ippeveprinter did not start: {log.read_text()[-3000:]}")
            yield LanPrinter(f"ipp://127.0.0.1:{port}/ipp/print", ctrl, log)


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


# ---------------------------------------------------------------------------- tests


@pytest.mark.slow
async def test_ipp_driver_prints_on_a_real_ipp_printer(tmp_path: Path) -> None:
    async with lan_stack(tmp_path) as (stack, printer):
        # Discovery: the cloud knows what the printer can do, and refuses what it cannot.
        async def discovered() -> dict | None:
            svc = await service(stack)
            return svc if svc["make_and_model"] == "Acme LAN 1" else None

        svc = await wait_for(discovered, 20, "the printer's attributes were not published")
        assert isinstance(svc, dict)
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
        async def discovered() -> dict | None:
            svc = await service(stack)
            return svc if svc["make_and_model"] == "Acme LAN 1" else None

        svc = await wait_for(discovered, 20, "the printer's attributes were not published")
        assert isinstance(svc, dict)
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
