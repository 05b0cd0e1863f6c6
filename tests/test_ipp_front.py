"""The IPP front on a real stack: our own requests, CUPS's ipptool conformance suites, and CUPS
itself printing through a driverless (``-m everywhere``) queue.

Tools come from Debian's cups-ipp-utils (ipptool) and cups (cupsd, lpadmin, lp, lpstat, with
cups-filters' pdftopdf). Missing: skipped with the reason printed, a failure under CI=true.
Every daemon runs on 127.0.0.1 on an ephemeral port with its own directories and is stopped
by its process group at the end; the machine's own CUPS is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.render import services_table
from cloud_service.ipp import conformance
from schemas.api import ServiceInfo
from schemas.ipp.codec import Op, Status, Tag, simple
from tests.support.cupsd import add_driverless_queue, private_cupsd
from tests.support.ipptools import (
    cups_client_env,
    ipp,
    ipp_url,
    missing,
    need_tool,
    new,
    reply,
    run,
    wait_for,
)
from tests.support.stack import Stack, running_stack

minimal_pdf = conformance.minimal_pdf


# ---------------------------------------------------------------------------- helpers shared with test_ipp_driver


# ---------------------------------------------------------------------------- our own client


@contextlib.asynccontextmanager
async def stack_with(tmp: Path, *printers: tuple[str, str]) -> AsyncIterator[Stack]:
    async with running_stack(tmp) as stack:
        for name, driver in printers:
            await stack.add_manager(name, driver=driver)
        yield stack


# ---------------------------------------------------------------------------- tests


async def test_print_job_is_the_same_job_everywhere(tmp_path: Path) -> None:
    async with stack_with(tmp_path, ("office", "file")) as stack:
        # Get-Printer-Attributes needs no credentials (clients ask before they authenticate).
        gpa = reply(await ipp(stack, "office", new(stack, Op.GET_PRINTER_ATTRIBUTES, "office"), auth=None))
        assert gpa.code == Status.OK
        printer = gpa.group(Tag.PRINTER)
        assert printer is not None
        service = (await stack.http.get("/api/v1/services/print/office")).json()
        assert simple(printer.get("printer-uri-supported")) == service["ipp_uri"] == ipp_url(stack, "office")
        assert simple(printer.get("printer-state")) == 3 and simple(printer.get("printer-state-reasons")) == "none"
        assert "two-sided-long-edge" in simple(printer.get("sides-supported"))
        assert simple(printer.get("uri-authentication-supported")) == "basic"

        # Print-Job without credentials: HTTP 401 with a Basic challenge, and no job.
        document = minimal_pdf(pages=3) + os.urandom(3_000_000)  # streamed, several chunks
        msg = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "application/pdf"))
        job_group = msg.new_group(Tag.JOB)
        job_group.add("copies", Tag.INTEGER, 2)
        job_group.add("sides", Tag.KEYWORD, "two-sided-long-edge")
        refused = await ipp(stack, "office", msg, auth=None, data=document)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"] == []

        # With a bearer token: a job, the same one the HTTP API and the device see.
        printed = reply(await ipp(stack, "office", msg, data=document))
        assert printed.code == Status.OK, simple(printed.operation().get("status-message"))
        job = printed.group(Tag.JOB)
        assert job is not None
        job_id = simple(job.get("job-id"))
        assert simple(job.get("job-uri")) == f"{ipp_url(stack, 'office')}/{job_id}"
        done = await stack.wait_job(job_id)
        assert done["state"] == "completed" and done["owner"] == "admin"
        assert done["ticket"] == {"copies": 2, "sides": "two-sided-long-edge"}
        assert done["impressions_completed"] == 6
        out = sorted(stack.output_dir("office").glob(f"job-{job_id}-doc-1*"))
        assert len(out) == 1 and out[0].read_bytes() == document

        # Basic with the user name and the token reads it back over IPP, completed (9).
        msg = new(stack, Op.GET_JOB_ATTRIBUTES, "office", job_id=(Tag.INTEGER, job_id))
        attrs = reply(await ipp(stack, "office", msg, auth="basic")).group(Tag.JOB)
        assert attrs is not None
        assert simple(attrs.get("job-state")) == 9 and simple(attrs.get("job-originating-user-name")) == "admin"
        assert simple(attrs.get("job-impressions-completed")) == 6 and simple(attrs.get("copies")) == 2
        assert (await ipp(stack, "office", msg, auth="basic", user="mallory")).status_code == 401

        # A job submitted over HTTP shows in Get-Jobs, with its own id.
        http_job = (await stack.submit(minimal_pdf(), {"media": "na_letter_8.5x11in"}, service="office")).json()
        await stack.wait_job(http_job["id"])
        msg = new(stack, Op.GET_JOBS, "office", which_jobs=(Tag.KEYWORD, "completed"),
                  requested_attributes=(Tag.KEYWORD, ["job-id", "job-state", "media"]))
        listed = reply(await ipp(stack, "office", msg)).groups_of(Tag.JOB)
        by_id = {simple(g.get("job-id")): g for g in listed}
        assert set(by_id) == {job_id, http_job["id"]}
        assert simple(by_id[http_job["id"]].get("media")) == "na_letter_8.5x11in"
        assert "job-name" not in by_id[job_id]

        # The access log names the IPP user like any other request.
        log = (stack.service.config.logs_dir / "access.log").read_text()
        assert '- admin [' in log and '"POST /ipp/print/office HTTP/1.1" 200' in log
        assert stack.token not in log


async def test_tickets_create_job_cancel_and_privacy(tmp_path: Path) -> None:
    async with stack_with(tmp_path, ("office", "file"), ("lobby", "simulated")) as stack:
        # ipp-attribute-fidelity=false: an unsupported value is dropped and reported.
        msg = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "application/pdf"))
        msg.new_group(Tag.JOB).add("media", Tag.KEYWORD, "iso_a0_841x1189mm")
        loose = reply(await ipp(stack, "office", msg, data=minimal_pdf()))
        assert loose.code == Status.OK_IGNORED_OR_SUBSTITUTED
        unsupported = loose.group(Tag.UNSUPPORTED_GROUP)
        assert unsupported is not None and simple(unsupported.get("media")) == "iso_a0_841x1189mm"
        loose_id = simple(loose.group(Tag.JOB).get("job-id"))
        assert "media" not in (await stack.wait_job(loose_id))["ticket"]
        # ... with fidelity it is refused and no job is made; a bad format is its own status.
        msg.operation().add("ipp-attribute-fidelity", Tag.BOOLEAN, True)
        strict = reply(await ipp(stack, "office", msg, data=minimal_pdf()))
        assert strict.code == Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED
        gif = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "image/gif"))
        assert reply(await ipp(stack, "office", gif, data=b"GIF89a")).code == \
            Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED
        validate = new(stack, Op.VALIDATE_JOB, "office", document_format=(Tag.MIME_TYPE, "text/plain"))
        assert reply(await ipp(stack, "office", validate)).code == Status.OK
        jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]
        assert [j["id"] for j in jobs] == [loose_id]

        # Create-Job, then two Send-Documents: data without last-document, then an empty last one.
        created = reply(await ipp(stack, "office", new(stack, Op.CREATE_JOB, "office",
                                                       job_name=(Tag.NAME, "two steps"))))
        job_id = simple(created.group(Tag.JOB).get("job-id"))
        assert (await stack.http.get(f"/api/v1/jobs/{job_id}")).json()["state"] == "pending-held"
        send = new(stack, Op.SEND_DOCUMENT, "office", job_id=(Tag.INTEGER, job_id),
                   document_format=(Tag.MIME_TYPE, "text/plain"), last_document=(Tag.BOOLEAN, False))
        assert reply(await ipp(stack, "office", send, data=b"hello\n" * 100)).code == Status.OK
        last = new(stack, Op.SEND_DOCUMENT, "office", job_id=(Tag.INTEGER, job_id), last_document=(Tag.BOOLEAN, True))
        assert reply(await ipp(stack, "office", last)).code == Status.OK
        done = await stack.wait_job(job_id)
        assert done["state"] == "completed" and done["documents"][0]["format"] == "text/plain"
        assert done["ticket"]["job-name"] == "two steps"

        # Cancel-Job over IPP on a job waiting for an offline printer: canceled for HTTP too.
        await stack.stop_manager("lobby")
        await stack.wait_service("lobby", online=False)
        gpa = reply(await ipp(stack, "lobby", new(stack, Op.GET_PRINTER_ATTRIBUTES, "lobby"), auth=None))
        printer = gpa.group(Tag.PRINTER)
        assert simple(printer.get("printer-state")) == 5
        assert "offline-report" in printer.get("printer-state-reasons").values
        waiting = (await stack.submit(minimal_pdf(), {}, service="lobby")).json()
        cancel = new(stack, Op.CANCEL_JOB, "lobby", job_id=(Tag.INTEGER, waiting["id"]))
        assert reply(await ipp(stack, "lobby", cancel)).code == Status.OK
        canceled = (await stack.http.get(f"/api/v1/jobs/{waiting['id']}")).json()
        assert canceled["state"] == "canceled" and "job-canceled-by-user" in canceled["state_reasons"]
        assert reply(await ipp(stack, "lobby", cancel)).code == Status.CLIENT_ERROR_NOT_POSSIBLE

        # Another user sees neither the admin's jobs nor their attributes.
        bob = await stack.service.create_token("bob", "user")
        foreign = new(stack, Op.GET_JOB_ATTRIBUTES, "office", job_id=(Tag.INTEGER, job_id))
        assert reply(await ipp(stack, "office", foreign, token=bob)).code == Status.CLIENT_ERROR_NOT_FOUND
        everything = new(stack, Op.GET_JOBS, "office", which_jobs=(Tag.KEYWORD, "all"))
        as_bob = await ipp(stack, "office", everything, token=bob, user="bob", auth="basic")
        assert reply(as_bob).groups_of(Tag.JOB) == []
        assert len(reply(await ipp(stack, "office", everything)).groups_of(Tag.JOB)) == 2

        # Odds and ends: unknown printer, GET, wrong content type, a garbled body.
        unknown = await ipp(stack, "nobody", new(stack, Op.GET_PRINTER_ATTRIBUTES, "nobody"), auth=None)
        assert reply(unknown).code == Status.CLIENT_ERROR_NOT_FOUND
        assert (await stack.http.get("/ipp/print/office")).status_code == 405
        wrong = await stack.http.post("/ipp/print/office", content=b"{}", headers={"Content-Type": "application/json"})
        assert wrong.status_code == 415
        garbled = await stack.http.post("/ipp/print/office", content=b"\x02\x00\x00\x0b\x00\x00\x00\x07\x01\x47\xff",
                                        headers={"Content-Type": "application/ipp"})
        assert reply(garbled).code == Status.CLIENT_ERROR_BAD_REQUEST


async def test_identify_printer_reaches_the_device(tmp_path: Path) -> None:
    async with stack_with(tmp_path, ("lobby", "simulated")) as stack:
        msg = new(stack, Op.IDENTIFY_PRINTER, "lobby", identify_actions=(Tag.KEYWORD, ["sound", "display"]),
                  message=(Tag.TEXT, "over here"))
        assert reply(await ipp(stack, "lobby", msg)).code == Status.OK
        driver = stack.managers["lobby"].drivers["lobby"]

        async def identified() -> bool:
            return bool(driver.identified)

        await wait_for(identified, 10, "the device was not asked to identify itself")
        assert driver.identified == [(("sound", "display"), "over here")]


def test_printers_table_shows_the_ipp_uri() -> None:
    base = {"kind": "print", "device_id": "d", "state": "idle", "state_reasons": ["none"], "online": True,
            "capabilities": {}, "make_and_model": "Acme"}
    services = [ServiceInfo.model_validate({**base, "name": "office", "ipp_uri": "ipps://h:8443/ipp/print/office"}),
                ServiceInfo.model_validate({**base, "name": "old"})]
    lines = services_table(services, now=0).splitlines()
    assert lines[0].endswith("MAKE AND MODEL  IPP URI")
    assert lines[1].endswith("Acme            ipps://h:8443/ipp/print/office") and lines[2].endswith("-")


# ---------------------------------------------------------------------------- ipptool


def ipptool_workdir(tmp: Path) -> Path:
    """ipp-1.1.test and ipp-2.0.test with the documents they name (Debian ships none)."""
    for name in conformance.SUITES:
        if not (conformance.IPPTOOL_DIR / name).exists():
            missing(f"{conformance.IPPTOOL_DIR / name} is needed (apt-get install cups-ipp-utils)")
    return conformance.prepare(tmp / "ipptool")


@pytest.mark.slow
async def test_ipptool_ipp_1_1_and_2_0(tmp_path: Path) -> None:
    ipptool = need_tool("ipptool", "cups-ipp-utils")
    work = ipptool_workdir(tmp_path)
    env = cups_client_env(tmp_path)
    async with stack_with(tmp_path, ("office", "file")) as stack:
        uri = ipp_url(stack, "office", "admin", stack.token)
        for version, suite in (("1.1", "ipp-1.1.test"), ("2.0", "ipp-2.0.test")):
            code, output = await run([ipptool, "-T", "30", "-V", version, "-t", "-f", "document-letter.pdf", uri,
                                      suite], env, timeout=240, cwd=work)
            shown = output.replace(stack.token, "TOKEN")
            assert code == 0 and "[FAIL]" not in output, shown
            assert "[PASS]" in output
            print(shown)
            if version == "1.1":
                summary = re.search(r"Summary: (\d+) tests, (\d+) passed, (\d+) failed", output)
                assert summary is not None and summary.group(3) == "0" and int(summary.group(2)) >= 35, shown
            else:
                assert re.search(r"PWG 5100.12 section 6.2 - Required Printer Description Attributes +\[PASS\]",
                                 output), shown
        jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]
        assert sum(1 for j in jobs if j["state"] == "completed") >= 10


# ---------------------------------------------------------------------------- CUPS, driverless


@pytest.mark.slow
async def test_cups_prints_through_a_driverless_queue(tmp_path: Path) -> None:
    with private_cupsd() as (port, logs, env):
        async with stack_with(tmp_path, ("office", "file")) as stack:
            server = f"127.0.0.1:{port}"
            device = ipp_url(stack, "office", "admin", stack.token)
            await add_driverless_queue(server, "office", device, env)
            code, out = await run(["lpstat", "-h", server, "-v", "office"], env, timeout=30)
            assert code == 0 and "ipps://127.0.0.1" in out and stack.token not in out, out  # CUPS hides the token
            document = tmp_path / "report.pdf"
            document.write_bytes(minimal_pdf(pages=2))
            code, out = await run(["lp", "-h", server, "-d", "office", "-t", "driverless test", str(document)],
                                  env, timeout=30)
            assert code == 0 and "request id is office-" in out, out
            cups_job = out.split("request id is ", 1)[1].split()[0]

            async def cloud_job() -> dict | None:
                jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]
                return jobs[0] if jobs and jobs[0]["state"] == "completed" else None

            try:
                job = await wait_for(cloud_job, 90, "the CUPS job did not complete at the cloud")
            except AssertionError:
                raise AssertionError((logs / "error_log").read_text()[-6000:]) from None
            assert isinstance(job, dict) and job["owner"] == "admin" and job["documents"][0]["format"] == \
                "application/pdf"
            assert job["ticket"].get("job-name") == "driverless test"
            printed = sorted(stack.output_dir("office").glob(f"job-{job['id']}-doc-1*"))
            assert len(printed) == 1 and printed[0].read_bytes().startswith(b"%PDF")

            async def cups_done() -> bool:
                code, out = await run(["lpstat", "-h", server, "-W", "completed", "-o", "office"], env, timeout=30)
                return code == 0 and cups_job in out

            await wait_for(cups_done, 60, "CUPS did not see its job complete")


async def test_an_unreadable_document_is_a_document_format_error(tmp_path: Path) -> None:
    """Bytes that are not what their label says, and a PDF that cannot be transformed for the
    device, are refused with client-error-document-format-error (RFC 8011), not
    document-format-not-supported: the format is supported, the document is broken."""
    from manager.drivers.simulated import RASTER_PRINTER_CAPABILITIES

    async with stack_with(tmp_path, ("office", "file")) as stack:
        # lobby takes only PWG raster and JPEG: a PDF is transformed when its job is closed.
        await stack.add_manager("lobby", capabilities=RASTER_PRINTER_CAPABILITIES)
        png_header = b"\x89PNG\r\n\x1a\n" + bytes(400)
        mislabelled = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "application/pdf"))
        answer = reply(await ipp(stack, "office", mislabelled, data=png_header))
        assert answer.code == Status.CLIENT_ERROR_DOCUMENT_FORMAT_ERROR == 0x0411

        corrupt = new(stack, Op.PRINT_JOB, "lobby", document_format=(Tag.MIME_TYPE, "application/pdf"))
        answer = reply(await ipp(stack, "lobby", corrupt, data=b"%PDF-1.5\n" + b"\x00not really a pdf" * 500))
        assert answer.code == Status.CLIENT_ERROR_DOCUMENT_FORMAT_ERROR
        jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]
        assert len(jobs) == 2 and all(j["state"] == "aborted" for j in jobs), jobs
        assert all("document-format-error" in j["state_reasons"] for j in jobs), jobs
        # The service keeps serving: a good PDF prints on the raster printer.
        good = reply(await ipp(stack, "lobby", new(stack, Op.PRINT_JOB, "lobby",
                                                   document_format=(Tag.MIME_TYPE, "application/pdf")),
                               data=conformance.minimal_pdf(pages=2)))
        assert good.code == Status.OK
        job_id = simple(good.group(Tag.JOB).get("job-id"))
        assert (await stack.wait_job(job_id, timeout=60))["state"] == "completed"
