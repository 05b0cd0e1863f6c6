"""The file and simulated drivers, and page counting."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from manager.drivers import DeviceStatus, DocumentTask, DriverError, JobRefused, PrintCanceled, PrintJob
from manager.drivers.file import FileDriver
from manager.drivers.simulated import SimulatedDriver
from schemas.enums import JobState
from schemas.model.pages import CHUNK, count_pages, extension
from schemas.tickets import PrintJobTicket
from tests.support.documents import make_pdf


def job(job_id: int = 7, copies: int | None = None, documents: int = 1) -> PrintJob:
    return PrintJob(
        job_id=job_id, service="office", ticket=PrintJobTicket(copies=copies, job_name="t"), document_count=documents
    )


def task(j: PrintJob, fmt: str, size: int, number: int = 1) -> DocumentTask:
    return DocumentTask(job=j, document_number=number, document_format=fmt, size=size)


# ---------------------------------------------------------------------------- pages


def test_count_pages(tmp_path: Path) -> None:
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(make_pdf(3))
    assert count_pages(pdf, "application/pdf") == 3  # /Type /Pages is not a page
    text = tmp_path / "a.txt"
    text.write_text("line\n" * 61)
    assert count_pages(text, "text/plain") == 2
    text.write_text("line\n" * 59 + "last line without newline")
    assert count_pages(text, "text/plain") == 1
    img = tmp_path / "a.jpg"
    img.write_bytes(b"\xff\xd8" + b"\0" * 100)
    assert count_pages(img, "image/jpeg") == 1
    (tmp_path / "empty.pdf").write_bytes(b"%PDF-1.7 compressed objects only")
    assert count_pages(tmp_path / "empty.pdf", "application/pdf") == 1


def test_pdf_page_marker_split_across_chunks(tmp_path: Path) -> None:
    marker = b"/Type /Page "
    for cut in range(1, len(marker)):
        filler = b"x" * (CHUNK - cut)
        data = filler + marker + b"/Type /Pages " + b"y" * 10 + b"/Type/Page>>"
        path = tmp_path / "split.pdf"
        path.write_bytes(data)
        assert count_pages(path, "application/pdf") == 2, cut
    # "/Type /Page" at a chunk end followed by "s" in the next chunk is /Pages, not a page.
    path.write_bytes(b"x" * (CHUNK - len(b"/Type /Page")) + b"/Type /Pages" + b"/Type /Page\n")
    assert count_pages(path, "application/pdf") == 1


def test_extensions() -> None:
    assert extension("application/pdf") == ".pdf"
    assert extension("image/jpeg") == ".jpg"
    assert extension("text/plain") == ".txt"
    assert extension("application/x-unknown") == ".bin"


# ---------------------------------------------------------------------------- file driver


async def test_file_driver_writes_bytes_ticket_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    driver = FileDriver("office", {"output_dir": str(out)}, tmp_path)
    await driver.open()
    data = make_pdf(4)
    src = tmp_path / "in.pdf"
    src.write_bytes(data)
    j = job(copies=2, documents=2)
    await driver.start_job(j)
    seen: list[int] = []
    impressions = await driver.print_document(task(j, "application/pdf", len(data)), src, seen.append)
    assert impressions == 8 and seen == [8]
    text = tmp_path / "in.txt"
    text.write_text("x\n" * 120)
    assert await driver.print_document(task(j, "text/plain", 240, 2), text, seen.append) == 4
    await driver.end_job(7, JobState.COMPLETED)
    assert (out / "job-7-doc-1.pdf").read_bytes() == data
    assert (out / "job-7-doc-2.txt").read_bytes() == text.read_bytes()
    ticket = json.loads((out / "job-7.ticket.json").read_text())
    assert ticket == {"copies": 2, "job-name": "t"}
    assert sorted(p.name for p in out.iterdir()) == ["job-7-doc-1.pdf", "job-7-doc-2.txt", "job-7.ticket.json"]


async def test_file_driver_links_the_spool_and_copies_across_file_systems(tmp_path: Path) -> None:
    driver = FileDriver("office", {"output_dir": str(tmp_path / "out")}, tmp_path)
    await driver.open()
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(2))
    j = job()
    assert await driver.print_document(task(j, "application/pdf", 10), src, lambda n: None) == 2
    out = tmp_path / "out" / "job-7-doc-1.pdf"
    assert out.stat().st_ino == src.stat().st_ino  # no byte copied
    # A new download replaces the spool by rename: the printed file keeps its bytes.
    fresh = tmp_path / "in.pdf.part"
    fresh.write_bytes(make_pdf(3))
    os.replace(fresh, src)
    assert out.read_bytes() == make_pdf(2)
    # Spool and output on different file systems: a copy.
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to copy across")
    other = FileDriver("office", {"output_dir": str(tmp_path / "out2")}, tmp_path)
    await other.open()
    with tempfile.NamedTemporaryFile(dir=shm, suffix=".pdf") as spooled:
        spooled.write(make_pdf(1))
        spooled.flush()
        await other.print_document(task(j, "application/pdf", 10), Path(spooled.name), lambda n: None)
        copied = tmp_path / "out2" / "job-7-doc-1.pdf"
        assert copied.read_bytes() == make_pdf(1) and copied.stat().st_dev != shm.stat().st_dev
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["job-7-doc-1.pdf"]


async def test_file_driver_cancel_leaves_no_output(tmp_path: Path) -> None:
    driver = FileDriver("office", {}, tmp_path)
    await driver.open()
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(1))
    j = job()
    await driver.start_job(j)
    driver.cancel(7)
    with pytest.raises(PrintCanceled):
        await driver.print_document(task(j, "application/pdf", 10), src, lambda n: None)
    assert [p.name for p in driver.output_dir.iterdir()] == ["job-7.ticket.json"]


async def test_file_driver_write_failure_is_a_driver_error(tmp_path: Path) -> None:
    driver = FileDriver("office", {"output_dir": str(tmp_path / "out")}, tmp_path)
    await driver.open()
    src = tmp_path / "in.pdf"
    src.write_bytes(b"%PDF")
    (tmp_path / "out").rmdir()
    with pytest.raises(DriverError, match="cannot write"):
        await driver.print_document(task(job(), "application/pdf", 4), src, lambda n: None)


# ---------------------------------------------------------------------------- simulated driver


async def sim(tmp_path: Path, **options: object) -> SimulatedDriver:
    driver = SimulatedDriver("lab", {"pages_per_second": 100, **options}, tmp_path)
    await driver.open()
    return driver


async def test_simulated_prints_at_speed_and_logs(tmp_path: Path) -> None:
    driver = await sim(tmp_path)
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(5))
    j = job(copies=2)
    pages: list[int] = []
    started = time.monotonic()
    assert await driver.print_document(task(j, "application/pdf", 1), src, pages.append) == 10
    elapsed = time.monotonic() - started
    assert 0.08 <= elapsed < 2.0
    assert pages == list(range(1, 11))
    assert driver.printed_log.read_text() == "7\n"  # the job's only document is out of the printer
    await driver.end_job(7, JobState.COMPLETED)
    assert driver.printed_log.read_text() == "7\n"  # ending it adds nothing


async def test_simulated_jam_stops_then_resumes(tmp_path: Path) -> None:
    driver = await sim(tmp_path, script=[{"at_page": 3, "event": "media-jam", "seconds": 0.3}])
    states: list[DeviceStatus] = []
    driver.add_listener(states.append)
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(5))
    started = time.monotonic()
    assert await driver.print_document(task(job(), "application/pdf", 1), src, lambda n: None) == 5
    assert 0.3 <= time.monotonic() - started < 2.5
    assert states == [DeviceStatus(stopped=True, reasons=("media-jam",)), DeviceStatus()]
    assert driver.pages_printed == 5
    # Events fire once: the next job prints straight through.
    states.clear()
    await driver.print_document(task(job(8), "application/pdf", 1), src, lambda n: None)
    assert states == []


async def test_simulated_media_empty_then_cancel_during_stop(tmp_path: Path) -> None:
    driver = await sim(tmp_path, script=[{"at_page": 1, "event": "media-empty", "seconds": 30}])
    states: list[DeviceStatus] = []
    driver.add_listener(states.append)
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(2))
    printing = asyncio.create_task(driver.print_document(task(job(), "application/pdf", 1), src, lambda n: None))
    for _ in range(100):
        if states:
            break
        await asyncio.sleep(0.01)
    assert states == [DeviceStatus(stopped=True, reasons=("media-empty",))]
    started = time.monotonic()
    driver.cancel(7)
    with pytest.raises(PrintCanceled):
        await asyncio.wait_for(printing, 2)
    assert time.monotonic() - started < 0.5
    assert driver.status == DeviceStatus()  # running again after the cancel


async def test_simulated_fail_at_page(tmp_path: Path) -> None:
    driver = await sim(tmp_path, script=[{"at_page": 2, "event": "fail"}])
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(3))
    progress: list[int] = []
    with pytest.raises(DriverError, match="page 2") as err:
        await driver.print_document(task(job(), "application/pdf", 1), src, progress.append)
    assert err.value.reasons == ("aborted-by-system",)
    assert progress == [1]


async def test_simulated_cancel_between_pages_is_prompt(tmp_path: Path) -> None:
    driver = await sim(tmp_path, pages_per_second=5)
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf(50))
    printing = asyncio.create_task(driver.print_document(task(job(), "application/pdf", 1), src, lambda n: None))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    driver.cancel(7)
    with pytest.raises(PrintCanceled):
        await asyncio.wait_for(printing, 2)
    assert time.monotonic() - started < 0.3
    assert 1 <= driver.pages_printed < 5


async def test_simulated_reject_and_identify(tmp_path: Path) -> None:
    driver = await sim(tmp_path, reject=True)
    with pytest.raises(JobRefused) as err:
        driver.check_job(job())
    assert err.value.reason == "aborted-by-system"
    await driver.identify(["display", "sound"], "hello")
    assert driver.identified == [(("display", "sound"), "hello")]
