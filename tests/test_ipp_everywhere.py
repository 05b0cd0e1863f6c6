"""The IPP front as an IPP Everywhere printer (PWG 5100.14): CUPS's ``ipp-everywhere.test`` and
``ipp-2.0.test`` against a real stack, and what they do not exercise themselves (Hold-Job and
Release-Job, job-hold-until, Cancel-My-Jobs, media-col and overrides in a ticket, the icons).

The device is a real Manager with the file driver, whose print service takes PDF, JPEG, PWG
raster and Apple raster as they come (it stores the bytes), so the front advertises them
without any transform. The PWG raster documents the suite prints are made here by Ghostscript
from PDFs and JPEGs written by this test (Pillow); none are shipped by Debian or copied.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from cloud_service.ipp import conformance
from cloud_service.transform import advertised_capabilities
from schemas.ipp import attributes as ia
from schemas.ipp.codec import Group, Op, Range, Status, Tag, collection, simple
from tests.support.ipptools import (
    cups_client_env,
    everywhere_samples,
    ipp,
    ipp_url,
    ipptool_results,
    missing,
    need_tool,
    new,
    placeholders_for_skipped,
    reply,
    run,
    wait_for,
)
from tests.support.stack import Stack, running_stack

HOLD_JOB, RELEASE_JOB = 0x000C, 0x000D

#: A print service that takes what IPP Everywhere requires, directly.
EVERYWHERE_CAPABILITIES = {
    "copies-supported": [1, 99],
    "sides-supported": ["one-sided", "two-sided-long-edge", "two-sided-short-edge"],
    "media-supported": ["na_letter_8.5x11in", "iso_a4_210x297mm", "na_index-4x6_4x6in"],
    "media-default": "na_letter_8.5x11in",
    "print-color-mode-supported": ["auto", "monochrome", "color"],
    "print-color-mode-default": "auto",
    "print-quality-supported": [3, 4, 5],
    "page-ranges-supported": True,
    "document-format-supported": ["application/pdf", "image/jpeg", "image/pwg-raster", "image/urf"],
}

minimal_pdf = conformance.minimal_pdf


@contextlib.asynccontextmanager
async def everywhere_stack(tmp: Path, *names: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp) as stack:
        for name in names:
            await stack.add_manager(name, driver="file", capabilities=EVERYWHERE_CAPABILITIES)
        yield stack


def job_id_of(message: object) -> int:
    group = message.group(Tag.JOB)  # type: ignore[attr-defined]
    assert group is not None, simple(message.operation().get("status-message"))  # type: ignore[attr-defined]
    return int(simple(group.get("job-id")))


# ---------------------------------------------------------------------------- pure mapping


def test_tickets_take_hold_priority_media_col_and_whole_job_overrides() -> None:
    group = Group(Tag.JOB)
    group.add("job-hold-until", Tag.KEYWORD, "indefinite")
    group.add("job-priority", Tag.INTEGER, 80)
    group.add("media-col", Tag.BEGIN_COLLECTION,
              collection(media_size=(Tag.BEGIN_COLLECTION, collection(x_dimension=(Tag.INTEGER, 21000),
                                                                        y_dimension=(Tag.INTEGER, 29700))),
                         media_type=(Tag.KEYWORD, "stationery"), media_top_margin=(Tag.INTEGER, ia.NOMINAL_MARGIN)))
    group.add("overrides", Tag.BEGIN_COLLECTION,
              [collection(document_numbers=(Tag.RANGE, Range(1, 1)), copies=(Tag.INTEGER, 3))])
    parsed = ia.ticket_from_job_attributes(group)
    assert parsed.hold and parsed.unsupported == []
    assert parsed.ticket == {"media": "iso_a4_210x297mm", "copies": 3}

    # What the front cannot honour is reported, not silently dropped.
    odd = Group(Tag.JOB)
    odd.add("job-hold-until", Tag.KEYWORD, "weekend")
    odd.add("media-col", Tag.BEGIN_COLLECTION, collection(media_type=(Tag.KEYWORD, "photographic-glossy")))
    odd.add("overrides", Tag.BEGIN_COLLECTION, [collection(pages=(Tag.RANGE, Range(2, 3)), sides=(Tag.KEYWORD,
                                                                                                   "one-sided"))])
    parsed = ia.ticket_from_job_attributes(odd)
    assert not parsed.hold and parsed.ticket == {}
    assert [a.name for a in parsed.unsupported] == ["job-hold-until", "media-col", "overrides"]

    assert ia.media_size("na_index-4x6_4x6in") == (10160, 15240) and ia.media_size("custom") is None
    assert ia.device_id("Acme Laser 5", ["application/pdf", "image/pwg-raster"]) == \
        "MFG:Acme;MDL:Laser 5;CMD:PDF,PWGRaster;"


# ---------------------------------------------------------------------------- our own client, a real stack


async def test_everywhere_attributes_and_icons(tmp_path: Path) -> None:
    async with everywhere_stack(tmp_path, "office") as stack:
        msg = new(stack, Op.GET_PRINTER_ATTRIBUTES, "office",
                  requested_attributes=(Tag.KEYWORD, ["all", "media-col-database"]))
        printer = reply(await ipp(stack, "office", msg, auth=None)).group(Tag.PRINTER)
        assert printer is not None
        # What the device takes, then what the service transforms into it (docs/formats.md).
        assert printer.get("document-format-supported").values == advertised_capabilities(EVERYWHERE_CAPABILITIES)[
            "document-format-supported"]
        assert {"image/png", "text/plain"} <= set(printer.get("document-format-supported").values)
        assert printer.get("ipp-versions-supported").values == ["1.1", "2.0"]
        assert simple(printer.get("ipp-features-supported")) == "ipp-everywhere"
        assert printer.get("pwg-raster-document-type-supported").values == ["sgray_8", "srgb_8"]
        assert simple(printer.get("printer-device-id")).startswith("MFG:test;MDL:printer;CMD:PDF,JPEG,PWGRaster,URF")
        database = {simple(c["media-size-name"]): simple(c["media-size"]) for c in
                    printer.get("media-col-database").values}
        assert database["na_letter_8.5x11in"] == {"x-dimension": 21590, "y-dimension": 27940}
        assert database["na_index-4x6_4x6in"] == {"x-dimension": 10160, "y-dimension": 15240}
        assert simple(printer.get("media-col-default"))["media-size-name"] == "na_letter_8.5x11in"
        for op in (HOLD_JOB, RELEASE_JOB, Op.CANCEL_MY_JOBS):
            assert op in printer.get("operations-supported").values
        assert "urf-supported" in printer
        # A printer that takes neither JPEG nor PWG raster is not called IPP Everywhere.
        await stack.add_manager("plain", driver="file")
        plain = reply(await ipp(stack, "plain", new(stack, Op.GET_PRINTER_ATTRIBUTES, "plain"), auth=None))
        plain_printer = plain.group(Tag.PRINTER)
        assert simple(plain_printer.get("ipp-features-supported")) == "none"
        assert "pwg-raster-document-type-supported" not in plain_printer
        # The supply level is unknown (the device reports none), and says so.
        assert b"level=-2" in simple(printer.get("printer-supply"))

        # printer-icons: 48, 128 and 512 pixel PNGs on the service's HTTPS port, no credentials.
        icons = printer.get("printer-icons").values
        assert len(icons) == 3
        for uri, size in zip(icons, (48, 128, 512), strict=True):
            assert uri.startswith(stack.service.url + "/ipp/icons/")
            got = await stack.http.get(uri.removeprefix(stack.service.url), headers={"Authorization": ""})
            assert got.status_code == 200 and got.headers["content-type"] == "image/png"
            with Image.open(io.BytesIO(got.content)) as image:
                assert image.format == "PNG" and image.size == (size, size)
                assert len(set(image.convert("RGB").getdata())) > 3  # drawn, not blank
        assert (await stack.http.get("/ipp/icons/64.png")).status_code == 404


async def test_hold_release_cancel_my_jobs_and_media_col(tmp_path: Path) -> None:
    async with everywhere_stack(tmp_path, "office", "lobby") as stack:
        # Print-Job with job-hold-until=indefinite and media-col: held, not printed.
        msg = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "application/pdf"))
        job = msg.new_group(Tag.JOB)
        job.add("job-hold-until", Tag.KEYWORD, "indefinite")
        job.add("media-col", Tag.BEGIN_COLLECTION,
                collection(media_size=(Tag.BEGIN_COLLECTION, collection(x_dimension=(Tag.INTEGER, 10160),
                                                                          y_dimension=(Tag.INTEGER, 15240)))))
        printed = reply(await ipp(stack, "office", msg, data=minimal_pdf(288, 432)))
        assert printed.code == Status.OK, simple(printed.operation().get("status-message"))
        held_id = job_id_of(printed)
        held = (await stack.http.get(f"/api/v1/jobs/{held_id}")).json()
        assert held["state"] == "pending-held" and held["state_reasons"] == ["job-hold-until-specified"]
        assert held["ticket"]["media"] == "na_index-4x6_4x6in"  # media-col honoured in the ticket
        attrs = reply(await ipp(stack, "office", new(stack, Op.GET_JOB_ATTRIBUTES, "office",
                                                     job_id=(Tag.INTEGER, held_id)))).group(Tag.JOB)
        assert simple(attrs.get("job-state")) == 4 and simple(attrs.get("job-hold-until")) == "indefinite"
        # Another job printed after it completes while the held one stays held and unprinted.
        other = reply(await ipp(stack, "office", new(stack, Op.PRINT_JOB, "office",
                                                     document_format=(Tag.MIME_TYPE, "application/pdf")),
                                data=minimal_pdf()))
        await stack.wait_job(job_id_of(other))
        assert (await stack.http.get(f"/api/v1/jobs/{held_id}")).json()["state"] == "pending-held"
        assert not list(stack.output_dir("office").glob(f"job-{held_id}-*"))
        # Release-Job: it prints, on the media asked for.
        release = new(stack, RELEASE_JOB, "office", job_id=(Tag.INTEGER, held_id))
        assert reply(await ipp(stack, "office", release)).code == Status.OK
        done = await stack.wait_job(held_id)
        assert done["state"] == "completed" and done["ticket"]["media"] == "na_index-4x6_4x6in"
        assert len(list(stack.output_dir("office").glob(f"job-{held_id}-doc-1*"))) == 1
        assert reply(await ipp(stack, "office", release)).code == Status.CLIENT_ERROR_NOT_POSSIBLE
        hold = new(stack, HOLD_JOB, "office", job_id=(Tag.INTEGER, held_id))
        assert reply(await ipp(stack, "office", hold)).code == Status.CLIENT_ERROR_NOT_POSSIBLE

        # Create-Job, Hold-Job while incoming, Send-Document: held once closed; released, printed.
        created = job_id_of(reply(await ipp(stack, "office", new(stack, Op.CREATE_JOB, "office"))))
        hold = new(stack, HOLD_JOB, "office", job_id=(Tag.INTEGER, created),
                   job_hold_until=(Tag.KEYWORD, "indefinite"))
        assert reply(await ipp(stack, "office", hold)).code == Status.OK
        send = new(stack, Op.SEND_DOCUMENT, "office", job_id=(Tag.INTEGER, created),
                   document_format=(Tag.MIME_TYPE, "image/jpeg"), last_document=(Tag.BOOLEAN, True))
        jpeg = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(jpeg, format="JPEG")
        assert reply(await ipp(stack, "office", send, data=jpeg.getvalue())).code == Status.OK
        assert (await stack.http.get(f"/api/v1/jobs/{created}")).json()["state"] == "pending-held"
        weekend = new(stack, HOLD_JOB, "office", job_id=(Tag.INTEGER, created), job_hold_until=(Tag.KEYWORD, "weekend"))
        assert reply(await ipp(stack, "office", weekend)).code == Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED
        assert reply(await ipp(stack, "office", new(stack, RELEASE_JOB, "office",
                                                    job_id=(Tag.INTEGER, created)))).code == Status.OK
        assert (await stack.wait_job(created))["state"] == "completed"

        # The HTTP API holds and releases the same way (on a printer whose device is away, so
        # nothing claims the job meanwhile); a media-col the device cannot honour is reported.
        await stack.stop_manager("lobby")
        await stack.wait_service("lobby", online=False)
        waiting = (await stack.submit(minimal_pdf(), {}, service="lobby")).json()
        held = (await stack.http.post(f"/api/v1/jobs/{waiting['id']}/hold")).json()
        assert held["state"] == "pending-held" and "job-hold-until-specified" in held["state_reasons"]
        assert (await stack.http.post(f"/api/v1/jobs/{waiting['id']}/hold")).status_code == 200
        released = (await stack.http.post(f"/api/v1/jobs/{waiting['id']}/release")).json()
        assert released["state"] == "pending" and "job-fetchable" in released["state_reasons"]
        assert (await stack.http.post(f"/api/v1/jobs/{waiting['id']}/release")).status_code == 409
        photo = new(stack, Op.PRINT_JOB, "lobby", document_format=(Tag.MIME_TYPE, "application/pdf"))
        photo.new_group(Tag.JOB).add("media-col", Tag.BEGIN_COLLECTION,
                                     collection(media_type=(Tag.KEYWORD, "photographic-glossy")))
        loose = reply(await ipp(stack, "lobby", photo, data=minimal_pdf()))
        assert loose.code == Status.OK_IGNORED_OR_SUBSTITUTED
        assert "media-col" in loose.group(Tag.UNSUPPORTED_GROUP)

        # Cancel-My-Jobs: bob's cancels bob's jobs only; with job-ids, just those.
        bob = await stack.service.create_token("bob", "user")
        shared = await stack.http.post("/api/v1/services/print/lobby/shares", json={"user": "bob"})
        assert shared.status_code == 201, shared.text
        bobs = [(await stack.submit(minimal_pdf(), {}, service="lobby")).json()["id"]]
        for _ in range(2):
            bob_job = new(stack, Op.PRINT_JOB, "lobby", document_format=(Tag.MIME_TYPE, "application/pdf"))
            bobs.append(job_id_of(reply(await ipp(stack, "lobby", bob_job, token=bob, data=minimal_pdf()))))
        admin_jobs = [waiting["id"], job_id_of(loose), bobs.pop(0)]
        mine = new(stack, Op.CANCEL_MY_JOBS, "lobby")
        assert reply(await ipp(stack, "lobby", mine, token=bob)).code == Status.OK
        states = {j["id"]: j["state"] for j in
                  (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]}
        assert all(states[i] == "canceled" for i in bobs)
        assert all(states[i] == "pending" for i in admin_jobs)
        just_one = new(stack, Op.CANCEL_MY_JOBS, "lobby", job_ids=(Tag.INTEGER, [admin_jobs[0]]))
        assert reply(await ipp(stack, "lobby", just_one)).code == Status.OK
        assert (await stack.http.get(f"/api/v1/jobs/{admin_jobs[0]}")).json()["state"] == "canceled"
        assert (await stack.http.get(f"/api/v1/jobs/{admin_jobs[1]}")).json()["state"] == "pending"
        foreign = new(stack, Op.CANCEL_MY_JOBS, "lobby", job_ids=(Tag.INTEGER, [admin_jobs[1]]))
        assert reply(await ipp(stack, "lobby", foreign, token=bob)).code == Status.CLIENT_ERROR_NOT_POSSIBLE
        # Get-Jobs with job-ids lists exactly those, ended or not.
        listing = new(stack, Op.GET_JOBS, "lobby", job_ids=(Tag.INTEGER, [admin_jobs[0], admin_jobs[1]]))
        listed = reply(await ipp(stack, "lobby", listing)).groups_of(Tag.JOB)
        assert sorted(simple(g.get("job-id")) for g in listed) == sorted(admin_jobs[:2])


# ---------------------------------------------------------------------------- ipptool


@pytest.mark.slow
async def test_ipptool_ipp_everywhere_and_ipp_2_0(tmp_path: Path) -> None:
    ipptool = need_tool("ipptool", "cups-ipp-utils")
    gs = need_tool("gs", "ghostscript")
    for name in conformance.SUITES:
        if not (conformance.IPPTOOL_DIR / name).exists():
            missing(f"{conformance.IPPTOOL_DIR / name} is needed (apt-get install cups-ipp-utils)")
    work = conformance.prepare(tmp_path / "ipptool")
    env = cups_client_env(tmp_path)
    async with everywhere_stack(tmp_path, "office") as stack:
        gpa = reply(await ipp(stack, "office", new(stack, Op.GET_PRINTER_ATTRIBUTES, "office"), auth=None))
        printer = gpa.group(Tag.PRINTER)
        dpis = [r[0] for r in printer.get("pwg-raster-document-resolution-supported").values]
        types = printer.get("pwg-raster-document-type-supported").values
        samples = everywhere_samples(work, dpis, types, gs)
        placeholders = placeholders_for_skipped(work, "ipp-everywhere.test")
        uri = ipp_url(stack, "office", "admin", stack.token)
        for suite in ("ipp-everywhere.test", "ipp-2.0.test"):
            code, output = await run([ipptool, "-T", "30", "-V", "2.0", "-t", "-f", "document-letter.pdf", uri,
                                      suite], env, timeout=900, cwd=work)
            shown = output.replace(stack.token, "TOKEN")
            results = ipptool_results(output)
            assert results["FAIL"] == [] and code == 0, f"{suite} failed: {results['FAIL']}\n{shown}"
            assert "cannot be read" not in output, shown  # ipptool stopped reading the suite
            print(f"{suite}: {len(results['PASS'])} passed, {len(results['SKIP'])} skipped")
            if suite == "ipp-everywhere.test":
                assert "PWG 5100.14 section 5.1/5.2 - Required Operations and Attributes" in results["PASS"], shown
                raster = [n for n in results["PASS"] if n.startswith("Print ") and "dpi" in n]
                lines = [line for line in shown.splitlines() if " @ " in line and "dpi" in line]
                assert len(raster) == len(samples), "\n".join(lines)  # every sample printed, none skipped
                # The placeholders' tests (other resolutions and types) were all skipped, never sent.
                skipped = [n for n in results["SKIP"] if n.startswith("Print ") and "dpi" in n]
                assert len(skipped) == 3 * len(placeholders) + 2 * len(samples), (skipped, shown)
            assert "PWG 5100.12 section 6.2 - Required Printer Description Attributes" in results["PASS"], shown

        # Every raster sample is a real job that reached the device, byte for byte.
        async def all_done() -> bool:
            jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true", "limit": "1000"})).json()["jobs"]
            return bool(jobs) and all(j["state"] in ("completed", "canceled", "aborted") for j in jobs)

        await wait_for(all_done, 120, "the suite's jobs did not all end")
        jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true", "limit": "1000"})).json()["jobs"]
        raster_jobs = [j for j in jobs if j["documents"] and j["documents"][0]["format"] == "image/pwg-raster"]
        assert len(raster_jobs) == len(samples)
        assert all(j["state"] == "completed" for j in raster_jobs)
        sample_bytes = {p.read_bytes() for p in samples}
        for j in raster_jobs:
            out = list(stack.output_dir("office").glob(f"job-{j['id']}-doc-1*"))
            assert len(out) == 1 and out[0].read_bytes() in sample_bytes
