"""The CLI users type, against the real service, broker and Manager (in-process main())."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from client.cli import main
from tests.support.stack import Stack, running_stack


def cli(stack: Stack, *argv: str) -> list[str]:
    return ["--url", stack.service.url, "--token", stack.token, "--ca", str(stack.ca), *argv]


async def run(capsys: pytest.CaptureFixture[str], stack: Stack, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, cli(stack, *argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_print_wait_jobs_status_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("cli-printer")
        document = tmp_path / "letter.txt"
        document.write_text("Dear reader,\n" * 100)

        code, out, _ = await run(capsys, stack, "printers")
        assert code == 0 and "cli-printer" in out and "idle" in out

        code, out, err = await run(capsys, stack, "print", str(document), "-n", "2", "-o",
                                   "sides=two-sided-long-edge", "--wait")
        assert code == 0, err
        assert "request id is cli-printer-" in out and "completed" in out
        printed = list(stack.output_dir("cli-printer").glob("job-*-doc-1*"))
        assert len(printed) == 1 and printed[0].read_bytes() == document.read_bytes()

        code, out, _ = await run(capsys, stack, "jobs", "--all", "--json")
        jobs = json.loads(out)["jobs"]
        assert code == 0 and len(jobs) == 1 and jobs[0]["state"] == "completed"
        assert jobs[0]["ticket"] == {"copies": 2, "sides": "two-sided-long-edge"}
        job_id = str(jobs[0]["id"])

        code, out, _ = await run(capsys, stack, "status", job_id)
        assert code == 0 and "completed" in out

        code, _, err = await run(capsys, stack, "print", str(document), "-o", "media=iso_a0_841x1189mm")
        assert code == 1 and "media" in err and "iso_a4_210x297mm" in err

        code, _, err = await run(capsys, stack, "cancel", job_id)
        assert code == 1 and "ended" in err

        # A job on an offline printer waits, and cancel ends it.
        await stack.stop_manager("cli-printer")
        await stack.wait_service("cli-printer", online=False)
        code, out, _ = await run(capsys, stack, "print", str(document), "--json")
        pending = json.loads(out)
        assert code == 0 and pending["state"] == "pending"
        code, out, _ = await run(capsys, stack, "cancel", str(pending["id"]), "--json")
        assert code == 0 and json.loads(out)["state"] == "canceled"
        code, out, _ = await run(capsys, stack, "status", str(pending["id"]), "--wait")
        assert code == 2


async def test_cli_wait_exit_code_for_aborted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("failing", driver="simulated",
                                options={"script": [{"at_page": 1, "event": "fail"}]})
        document = tmp_path / "doc.pdf"
        document.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF\n")
        code, out, _ = await run(capsys, stack, "print", str(document), "--wait")
        assert code == 1 and "aborted" in out
