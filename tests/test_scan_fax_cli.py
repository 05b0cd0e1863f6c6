"""The multifunction device of ``cloudimaging up`` (print + scan + fax behind one Manager)
driven by the CLI verbs users type: scanners, scan, faxes, fax."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pypdf
import pytest
from PIL import Image

from client.cli import main
from cloud_service.up import FAX_NAME, PRINTER_ID, SCANNER_NAME, SIM_FAX_BUSY, EmbeddedStack
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(150)


def cli(stack: Stack, *argv: str) -> list[str]:
    return ["--url", stack.service.url, "--token", stack.token, "--ca", str(stack.ca), *argv]


async def run(capsys: pytest.CaptureFixture[str], stack: Stack, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, cli(stack, *argv))
    out, err = capsys.readouterr()
    return code, out, err


def up_services(tmp: Path) -> list[dict]:
    """The services ``up`` gives its simulated device, with the retry interval shortened."""
    up = EmbeddedStack(tmp / "up")
    up.broker = SimpleNamespace(url="mqtts://127.0.0.1:1")  # only the services are used
    up.pki = SimpleNamespace(ca_cert=tmp / "ca.pem")
    services = up.printer_config("unused")["services"]
    services[1]["driver_options"]["pages_per_second"] = 50
    services[2]["capabilities"] = {**services[2]["capabilities"], "retry-interval-default": 0}
    services[2]["driver_options"]["seconds_per_page"] = 0.05
    return services


async def test_multifunction_device_scan_and_fax_from_the_cli(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    async with running_stack(tmp_path) as stack:
        services = up_services(tmp_path)
        assert [s["kind"] for s in services] == ["print", "scan", "faxout"]
        await stack.add_manager(PRINTER_ID, services=services)
        for kind, name in (("scan", SCANNER_NAME), ("faxout", FAX_NAME)):
            await stack.wait_service(name, kind=kind)

        # Each service of the one device, listed by kind, with its own state and capabilities.
        listed = (await stack.http.get("/api/v1/services")).json()["services"]
        assert {(s["kind"], s["name"], s["device_id"]) for s in listed} == {
            ("print", PRINTER_ID, PRINTER_ID), ("scan", SCANNER_NAME, PRINTER_ID), ("faxout", FAX_NAME, PRINTER_ID)}
        code, out, _ = await run(capsys, stack, "scanners")
        assert code == 0 and SCANNER_NAME in out and "idle" in out and PRINTER_ID not in out
        # The printer reports the supplies ``up`` gives it (the tour shows them).
        code, out, _ = await run(capsys, stack, "printers", "-l")
        assert code == 0 and "Supplies:" in out and "Black Toner" in out and "72%" in out, out
        code, out, _ = await run(capsys, stack, "faxes", "-l")
        assert code == 0 and FAX_NAME in out and "destination-uri-schemes" in out

        # scan -o out.pdf with no other flag: the only scanner, PDF from the suffix.
        out_pdf = tmp_path / "out.pdf"
        code, out, err = await run(capsys, stack, "scan", "-o", str(out_pdf))
        assert code == 0, err
        assert "completed" in err and str(out_pdf) in out
        assert len(pypdf.PdfReader(out_pdf).pages) == 1

        code, out, err = await run(capsys, stack, "scan", "-o", str(tmp_path / "page.png"), "--input-source",
                                   "adf-duplex", "--resolution", "75", "--color-mode", "bi-level")
        assert code == 0, err
        pages = sorted(tmp_path.glob("page-*.png"))
        assert len(pages) == 6  # 3 sheets, both sides
        image = Image.open(pages[0])
        assert image.mode == "1" and image.size == (620, 877)

        code, _, err = await run(capsys, stack, "scan", "-o", str(tmp_path / "x.pdf"), "--resolution", "1200")
        assert code == 1 and "input-resolution" in err and "75" in err

        # fax FILE --to ... --wait: one number gets it, the busy one is retried, then reported.
        document = tmp_path / "memo.txt"
        document.write_text("To whom it may concern,\n" * 30)
        code, out, err = await run(capsys, stack, "fax", str(document), "--to", "tel:+15551234567", "--wait")
        assert code == 0, err
        assert "tel:+15551234567: completed" in out
        code, out, err = await run(capsys, stack, "fax", str(document), "--to", "+15551234567",
                                   "--to", SIM_FAX_BUSY, "--wait", "--retries", "1")
        assert code == 1 and f"{SIM_FAX_BUSY}: aborted (busy)" in out, out + err
        code, _, err = await run(capsys, stack, "fax", str(document), "--to", "call-me-maybe")
        assert code == 2 and "not a fax number" in err

        # Print still works on the same device.
        code, out, err = await run(capsys, stack, "print", str(document), "--wait")
        assert code == 0 and "completed" in out, err
        code, out, _ = await run(capsys, stack, "jobs", "--all", "--json")
        assert sorted({j["kind"] for j in json.loads(out)["jobs"]}) == ["faxout", "print", "scan"]


async def test_scan_failure_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_stack(tmp_path) as stack:
        services = up_services(tmp_path)
        services[1]["driver_options"]["adf_sheets"] = 0
        await stack.add_manager(PRINTER_ID, services=services[1:2])
        code, _, err = await run(capsys, stack, "scan", "-o", str(tmp_path / "s.pdf"), "--input-source", "adf")
        assert code == 1 and "aborted" in err and "feeder is empty" in err
        assert not (tmp_path / "s.pdf").exists()
