"""The Document object (cloud_service/documents.py): keys, the one writer of document bytes,
pages counted while the bytes stream in and used by accounting without reading them again.

Real components in-process: SQLite, the local object store, the job operations and admission.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace as DetachedService

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_service import accounting, defaults
from cloud_service import jobs as jobs_module
from cloud_service import objects as objects_module
from cloud_service.auth import User
from cloud_service.documents import DocumentKey, Documents
from cloud_service.errors import Refusal
from cloud_service.jobs import JobOperations
from cloud_service.objects import CHUNK, LocalObjectStore, ObjectTooLarge, Peeked, UrlSigner, _read_up_to
from cloud_service.store import JobStore
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from schemas.enums import ServiceKind
from schemas.model.pages import PageCounter
from tests.support.documents import make_pdf
from tests.support.hops import count_hops
from tests.support.inprocess import service_parts

# ---------------------------------------------------------------------------- keys


@given(st.integers(0, 10**17), st.integers(0, 10**8), st.booleans())
def test_document_key_round_trip(job_id: int, number: int, output: bool) -> None:
    key = DocumentKey(job_id, number, output)
    assert DocumentKey.parse(str(key)) == key


def test_document_key_formats() -> None:
    assert str(DocumentKey(7, 1)) == "jobs/7/doc-1" == DocumentKey.input_key(7, 1)
    assert str(DocumentKey(7, 2, output=True)) == "jobs/7/scan-2"


@pytest.mark.parametrize("key", [
    "", "jobs/7", "jobs/7/doc-", "jobs/7/doc-x", "jobs/x/doc-1", "jobs/07/doc-1", "jobs/7/doc-01",
    "jobs/7/page-1", "jobs/7/doc-1/extra", "/jobs/7/doc-1", "jobs//doc-1", "jobs/-7/doc-1", "jobs/²/doc-1",
    "jobs/7/doc-1\n", "other/7/doc-1", "jobs/7/../8/doc-1",
])
def test_document_key_refuses_what_it_did_not_mint(key: str) -> None:
    with pytest.raises(ValueError):
        DocumentKey.parse(key)


# ---------------------------------------------------------------------------- pages while streaming


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11, 64, 10**6])
def test_page_counter_sees_markers_split_across_chunks(size: int) -> None:
    pdf = make_pdf(5)
    counter = PageCounter("application/pdf")
    for chunk in chunked(pdf, size):
        counter.feed(chunk)
    assert counter.pages == 5  # /Type /Pages (the tree) is not a page


def test_page_counter_marker_cut_at_every_byte() -> None:
    data = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n2 0 obj << /Type /Page>>"
    for cut in range(1, len(data)):
        counter = PageCounter("application/pdf")
        counter.feed(data[:cut])
        counter.feed(data[cut:])
        assert counter.pages == 2, cut


def test_page_counter_text_and_other_formats() -> None:
    text = b"line\n" * 61 + b"no newline at the end"
    counter = PageCounter("text/plain")
    for chunk in chunked(text, 4):
        counter.feed(chunk)
    assert counter.pages == 2  # 62 lines at 60 a page
    image = PageCounter("image/jpeg")
    image.feed(b"/Type /Page" * 10)
    assert image.pages == 1 and not image.counts


# ---------------------------------------------------------------------------- the local object store


@pytest.mark.parametrize("size,piece", [(0, 1), (1, 1), (CHUNK, 1000), (CHUNK + 1, CHUNK), (3 * CHUNK + 5, 77_777)])
async def test_local_objects_small_in_one_trip_large_streamed_same_bytes(tmp_path: Path, size: int,
                                                                         piece: int) -> None:
    """Up to a chunk is held and written at once, more is streamed: either way the bytes, size and
    digest come back as sent, and no temporary file is left, also when the cap refuses it."""
    store = LocalObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32, "https://127.0.0.1:1"))
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    async def pieces() -> AsyncIterator[bytes]:
        for chunk in chunked(data, piece):
            yield chunk

    stored = await store.put_stream("jobs/1/doc-1", pieces(), max_bytes=4 * CHUNK)
    assert (stored.size, stored.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert b"".join([c async for c in store.read_stream("jobs/1/doc-1")]) == data
    # peek: the size, and the bytes only of an object of at most one chunk (else streamed).
    peeked = await store.peek("jobs/1/doc-1")
    assert peeked is not None and peeked.size == size == await store.size("jobs/1/doc-1")
    assert peeked.data == (data if size <= CHUNK else None)
    assert await store.peek("jobs/1/doc-9") is None and await store.size("jobs/1/doc-9") is None
    assert await store.peek("../escape") is None
    if size:
        with pytest.raises(ObjectTooLarge):
            await store.put_stream("jobs/1/doc-2", pieces(), max_bytes=size - 1)
    assert sorted(p.name for p in (tmp_path / "objects" / "jobs" / "0xxx").iterdir()) == ["1-doc-1"]


async def test_local_objects_are_private_whatever_the_umask_and_a_loosened_directory_is_tightened(
        tmp_path: Path) -> None:
    """A new directory of jobs is made 0700 and an object 0600 even under umask 000; a
    directory someone opened up is tightened by the first object a store writes there, and a
    removed ``jobs`` directory is made again."""
    store = LocalObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32, "https://127.0.0.1:1"))
    jobs = tmp_path / "objects" / "jobs"

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    previous = os.umask(0)
    try:
        for key in ("jobs/1/doc-1", "jobs/2/doc-1"):
            await store.put_stream(key, one(b"%PDF-1.4\n"), max_bytes=100)
        assert stat.S_IMODE((jobs / "0xxx").stat().st_mode) == 0o700
        assert stat.S_IMODE((jobs / "0xxx" / "1-doc-1").stat().st_mode) == 0o600
        (jobs / "0xxx").chmod(0o755)
        restarted = LocalObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32, "https://127.0.0.1:1"))
        await restarted.put_stream("jobs/2/scan-1", one(b"scan"), max_bytes=100)
        assert stat.S_IMODE((jobs / "0xxx").stat().st_mode) == 0o700
        assert stat.S_IMODE((jobs / "0xxx" / "2-scan-1").stat().st_mode) == 0o600
        shutil.rmtree(jobs)
        await restarted.put_stream("jobs/3/doc-1", one(b"again"), max_bytes=100)
        assert [stat.S_IMODE(p.stat().st_mode) for p in (jobs, jobs / "0xxx", jobs / "0xxx" / "3-doc-1")] == [
            0o700, 0o700, 0o600]
        await restarted.put_stream("jobs/4000/doc-1", one(b"next thousand"), max_bytes=100)
        assert stat.S_IMODE((jobs / "4xxx").stat().st_mode) == 0o700
    finally:
        os.umask(previous)
    assert b"".join([c async for c in restarted.read_stream("jobs/3/doc-1")]) == b"again"


async def test_local_objects_of_a_thousand_jobs_share_a_directory_and_leave_none_behind(tmp_path: Path) -> None:
    """A job's documents are files of the directory of its thousand (no directory made per
    job); deleting them leaves no directory of the job behind. Documents written under the
    earlier layout (a directory per job) are read, sized, peeked and deleted where they are,
    and their directory goes with the last of them."""
    root = tmp_path / "objects"
    store = LocalObjectStore(root, UrlSigner(b"k" * 32, "https://127.0.0.1:1"))

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    for job_id in (998, 999, 1000, 1999, 12345):
        await store.put_stream(f"jobs/{job_id}/doc-1", one(b"doc %d" % job_id), max_bytes=100)
    await store.put_stream("jobs/999/doc-1-device", one(b"made for the device"), max_bytes=100)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "jobs", "jobs/0xxx", "jobs/0xxx/998-doc-1", "jobs/0xxx/999-doc-1", "jobs/0xxx/999-doc-1-device",
        "jobs/12xxx", "jobs/12xxx/12345-doc-1", "jobs/1xxx", "jobs/1xxx/1000-doc-1", "jobs/1xxx/1999-doc-1"]
    assert (await store.peek("jobs/999/doc-1-device")) == Peeked(19, b"made for the device")
    for job_id in (998, 999, 1000, 1999, 12345):
        await store.delete(f"jobs/{job_id}/doc-1")
    await store.delete("jobs/999/doc-1-device")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "jobs", "jobs/0xxx", "jobs/12xxx", "jobs/1xxx"]  # a directory a thousand jobs, not one a job

    # Written before this layout: jobs/7/doc-1 and jobs/7/doc-2 as paths.
    legacy = root / "jobs" / "7"
    legacy.mkdir(mode=0o700)
    big = os.urandom(CHUNK + 10)
    (legacy / "doc-1").write_bytes(b"%PDF-1.4 old")
    (legacy / "doc-2").write_bytes(big)
    assert await store.size("jobs/7/doc-1") == 12
    assert await store.peek("jobs/7/doc-1") == Peeked(12, b"%PDF-1.4 old")
    assert await store.peek("jobs/7/doc-2") == Peeked(CHUNK + 10, None)
    assert b"".join([c async for c in store.read_stream("jobs/7/doc-2")]) == big
    assert await store.peek("jobs/7/doc-3") is None and await store.size("jobs/7/doc-3") is None
    await store.delete("jobs/7/doc-1")
    assert legacy.is_dir() and await store.size("jobs/7/doc-1") is None  # doc-2 is still there
    await store.delete("jobs/7/doc-2")
    assert not legacy.exists()
    await store.delete("jobs/7/doc-2")  # deleting what is gone is no error
    # Every key names one path: none other under jobs/ reaches a job's file.
    await store.put_stream("jobs/5/doc-1", one(b"job 5"), max_bytes=100)
    for other in ("jobs/0xxx/5-doc-1", "jobs/05/doc-1", "jobs/5/Doc-1x/../doc-1"):
        assert await store.peek(other) is None and await store.size(other) is None
        with pytest.raises(KeyError):
            store.presign(other, "GET", 60)


async def test_a_small_input_document_is_read_from_memory_once_then_from_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's input document (or its transformed copy) of up to FRESH_MAX bytes is answered
    from memory at its first read (the device's download), and from its file after that; scan
    output and larger documents always from the file; at most FRESH_BUDGET bytes are kept, the
    oldest let go first; a deleted document is let go. The file is removed behind the store's
    back below, so that a read from memory shows."""
    monkeypatch.setattr(objects_module, "FRESH_BUDGET", 3 * 1000)
    root = tmp_path / "objects"
    store = LocalObjectStore(root, UrlSigner(b"k" * 32, "https://127.0.0.1:1"))

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    def unlink(key: str) -> None:
        job, name = key.split("/")[1:]
        (root / "jobs" / "0xxx" / f"{job}-{name}").unlink()

    doc = b"d" * 1000
    await store.put_stream("jobs/1/doc-1", one(doc), max_bytes=1 << 20)
    unlink("jobs/1/doc-1")
    assert await store.size("jobs/1/doc-1") == 1000
    assert await store.peek("jobs/1/doc-1") == Peeked(1000, doc)  # from memory
    assert await store.peek("jobs/1/doc-1") is None  # then from the file, which is gone

    await store.put_stream("jobs/2/doc-1-device", one(doc), max_bytes=1 << 20)
    unlink("jobs/2/doc-1-device")
    assert b"".join([c async for c in store.read_stream("jobs/2/doc-1-device")]) == doc
    with pytest.raises(FileNotFoundError):
        _ = [c async for c in store.read_stream("jobs/2/doc-1-device")]

    big = b"b" * (objects_module.FRESH_MAX + 1)
    await store.put_stream("jobs/3/doc-1", one(big), max_bytes=1 << 20)
    await store.put_stream("jobs/3/scan-1", one(doc), max_bytes=1 << 20)
    unlink("jobs/3/doc-1")
    unlink("jobs/3/scan-1")
    assert await store.peek("jobs/3/doc-1") is None and await store.peek("jobs/3/scan-1") is None

    for job in (4, 5, 6, 7):  # four of 1000 bytes with room for three: job 4's is let go
        await store.put_stream(f"jobs/{job}/doc-1", one(doc), max_bytes=1 << 20)
        unlink(f"jobs/{job}/doc-1")
    assert [await store.peek(f"jobs/{job}/doc-1") is not None for job in (4, 5, 6, 7)] == [False, True, True, True]

    await store.put_stream("jobs/8/doc-1", one(doc), max_bytes=1 << 20)
    await store.delete("jobs/8/doc-1")
    assert await store.peek("jobs/8/doc-1") is None and await store.size("jobs/8/doc-1") is None
    assert store._fresh_bytes == 0 and not store._fresh


def test_reading_up_to_a_limit_goes_on_after_short_reads() -> None:
    """A read may return less than asked before the end (a pipe, a network file system): the
    object store's small reads go on until they have the limit or reach the end."""
    reader, writer = os.pipe()

    def later() -> None:
        time.sleep(0.05)
        os.write(writer, b"ef")
        os.write(writer, b"gh")
        os.close(writer)

    try:
        os.write(writer, b"ab")
        assert _read_up_to(reader, 2) == b"ab"  # exactly the limit: one read
        os.write(writer, b"cd")
        thread = threading.Thread(target=later)
        thread.start()
        assert _read_up_to(reader, 4) == b"cdef"  # "cd" now, "ef" 50 ms later
        thread.join(5)
        assert _read_up_to(reader, 10) == b"gh"  # then the end
        assert _read_up_to(reader, 10) == b""
    finally:
        os.close(reader)


# ---------------------------------------------------------------------------- the one writer


class Rig:
    def __init__(self, store: JobStore, objects: LocalObjectStore, documents: Documents, jobs: JobOperations) -> None:
        self.store, self.objects, self.documents, self.jobs = store, objects, documents, jobs


@pytest.fixture
async def rig(tmp_path: Path, database_url: str) -> AsyncIterator[Rig]:
    async with service_parts(tmp_path, max_bytes=1_000_000, database_url=database_url) as parts:
        store = parts.store
        await store.set_device("dev", online=True, last_seen=time.time())
        assert await store.upsert_service("dev", ServiceKind.PRINT.value, "office", {
            "state": "idle", "state_reasons": ["none"], "state_message": None, "info": None, "location": None,
            "make_and_model": None, "capabilities": SIMULATED_PRINTER_CAPABILITIES})
        yield Rig(store, parts.objects, parts.documents, parts.jobs())


async def stream(data: bytes, size: int) -> AsyncIterator[bytes]:
    for chunk in chunked(data, size):
        yield chunk


ADMIN = User("root", "admin")


async def test_pages_are_stored_at_upload_and_priced_without_a_second_read(rig: Rig) -> None:
    await accounting.set_policy(rig.store, "dev", "office", "root", price_per_impression=1)
    await accounting.add_credit(rig.store, "root", 100, "root")
    row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, "office", {"copies": 2}, "application/pdf", "d.pdf", None)
    stored = await rig.documents.accept(DocumentKey(row.id, 1), stream(make_pdf(3), 5))
    (doc,) = await rig.store.documents(row.id)
    assert (doc.pages, doc.size, doc.sha256) == (3, stored.size, stored.sha256)
    # The bytes are gone before close: the estimate must come from the row, not a re-read.
    await rig.objects.delete(doc.object_key)
    await rig.jobs.close(ADMIN, row.id)
    assert (await rig.store.get_job(row.id)).impressions_estimated == 6  # 2 copies x 3 pages


async def test_a_submit_with_its_document_records_it_in_the_close(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create with the bytes (multipart, IPP Print-Job) in three hops to the database (the
    service with what admission decides on; the new job; the close): size, digest, pages and the
    estimate are written with the close, with no price or quota to check; with a price,
    admission still checks at close with the pages counted."""
    hops = count_hops(monkeypatch, rig.store, names=False)
    row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, "office", {"copies": 2}, "application/pdf", "d.pdf",
                                stream(make_pdf(3), 7))
    info = await rig.store.job_info(row)  # the answer to the submit: read with the close
    monkeypatch.undo()
    assert len(hops) == 3, hops
    assert [e.state for e in info.history] == ["pending-held", "pending"] and info.documents[0].size
    (doc,) = await rig.store.documents(row.id)
    assert doc.pages == 3 and doc.size and doc.sha256 and doc.format == "application/pdf"
    job = await rig.store.get_job(row.id)
    assert (job.state, job.version, job.impressions_estimated) == ("pending", row.version, 6)
    assert [e.state for e in (await rig.store.job_info(job)).history] == ["pending-held", "pending"]
    await accounting.set_policy(rig.store, "dev", "office", "root", price_per_impression=1)
    await accounting.add_credit(rig.store, "root", 10, "root")
    with pytest.raises(Refusal) as refused:  # 2 copies x 6 pages at 1 credit: 12 > 10
        await rig.jobs.create(ADMIN, ServiceKind.PRINT, "office", {"copies": 2}, "application/pdf", "e.pdf",
                              stream(make_pdf(6), 7))
    assert refused.value.code == "insufficient-balance"
    (aborted,) = [j for j in await rig.store.list_jobs(owner=None, include_ended=True) if j.id != row.id]
    (doc,) = await rig.store.documents(aborted.id)
    assert (aborted.state, doc.pages) == ("aborted", 6)


async def test_accept_refuses_replays_and_keys_of_the_wrong_kind(rig: Rig) -> None:
    row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, "office", {}, "application/pdf", None, None)
    with pytest.raises(Refusal) as refused:
        await rig.documents.accept(DocumentKey(row.id, 1, output=True), stream(b"x", 1))
    assert refused.value.code == "job-not-scanning"
    with pytest.raises(Refusal) as refused:
        await rig.documents.accept(DocumentKey(row.id, 2), stream(b"x", 1))
    assert refused.value.status == 404
    await rig.documents.accept(DocumentKey(row.id, 1), stream(make_pdf(1), 100))
    with pytest.raises(Refusal) as refused:
        await rig.documents.accept(DocumentKey(row.id, 1), stream(make_pdf(2), 100))
    assert refused.value.code == "document-stored"
    with pytest.raises(Refusal) as refused:
        await rig.documents.accept(DocumentKey(row.id + 1, 1), stream(b"x", 1))
    assert refused.value.status == 404


async def test_upload_urls_give_clients_time_and_devices_the_configured_ttl(rig: Rig) -> None:
    row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, "office", {}, "application/pdf", None, None)
    before = time.time()
    (put,) = await rig.documents.urls(row.id, "PUT")
    assert put.expires_at >= before + 3600 - 1 and f"/objects/{DocumentKey(row.id, 1)}?" in put.url
    (get,) = await rig.documents.urls(row.id, "GET")
    assert get.expires_at <= time.time() + 60 + 1


async def test_a_job_naming_no_service_goes_to_the_default_read_by_its_name(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a default the service is read by its name, with its device and what admission
    decides on: no list of every service (with thousands of printers that list was what a
    submit cost). A default that is gone is refused by name, with the services to choose from;
    with several services and no default the job is refused, never sent to a guess."""
    assert await rig.store.upsert_service("dev", ServiceKind.PRINT.value, "lobby", {
        "state": "idle", "state_reasons": ["none"], "state_message": None, "info": None, "location": None,
        "make_and_model": None, "capabilities": SIMULATED_PRINTER_CAPABILITIES})
    listed: list[object] = []
    real_services = rig.store.services

    async def counted(kind=None):  # type: ignore[no-untyped-def]
        listed.append(kind)
        return await real_services(kind)

    monkeypatch.setattr(rig.store, "services", counted)
    with pytest.raises(Refusal) as refused:
        await rig.jobs.create(ADMIN, ServiceKind.PRINT, None, {}, "application/pdf", "a.pdf", stream(make_pdf(1), 64))
    assert refused.value.code == "service-required" and len(listed) == 1
    await defaults.set_default(rig.store, "root", ServiceKind.PRINT, "lobby")
    listed.clear()
    hops = count_hops(monkeypatch, rig.store)
    row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, None, {}, "application/pdf", "b.pdf", None)
    assert row.service_name == "lobby" and listed == []
    # the default's service, then the service with its device and admission's rules: two reads
    assert [h for h in hops if "create_job" not in h] == ["choose_service.<locals>.<lambda>",
                                                           "JobOperations._usable.<locals>.work"], hops
    await defaults.set_default(rig.store, "root", ServiceKind.PRINT, "gone")
    with pytest.raises(Refusal) as refused:
        await rig.jobs.create(ADMIN, ServiceKind.PRINT, None, {}, "application/pdf", "c.pdf", None)
    assert refused.value.status == 404 and "gone" in refused.value.message
    assert refused.value.supported == ["lobby", "office"] and len(listed) == 1


async def test_a_services_capabilities_are_parsed_once_while_unchanged_and_again_when_they_change(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each submit reads its service; the capabilities it read are parsed into the model only
    when they differ from what was parsed last: a device that drops a size has tickets asking
    for it refused at once, and one that adds it back has them taken again."""
    parsed: list[int] = []
    model_validate = jobs_module.PrintCapabilities.model_validate

    def counted(value: object) -> object:
        parsed.append(1)
        return model_validate(value)

    monkeypatch.setattr(jobs_module.PrintCapabilities, "model_validate", counted)
    jobs_module._parsed_capabilities.clear()
    letter = {"media": "na_letter_8.5x11in"}

    async def check(ticket: dict) -> dict:
        service = await rig.store.service(ServiceKind.PRINT.value, "office")
        assert service is not None
        return rig.jobs.check_ticket(service, ticket, "application/pdf")

    assert (await check(letter))["media"] == "na_letter_8.5x11in"
    assert (await check({})) == {} and len(parsed) == 1  # read again, unchanged: not parsed again

    async def report(media: list[str]) -> None:
        assert await rig.store.upsert_service("dev", ServiceKind.PRINT.value, "office", {
            "state": "idle", "state_reasons": ["none"], "state_message": None, "info": None, "location": None,
            "make_and_model": None, "capabilities": {**SIMULATED_PRINTER_CAPABILITIES, "media-supported": media}})

    await report(["iso_a4_210x297mm"])
    with pytest.raises(Refusal) as refused:
        await check(letter)
    assert refused.value.code == "unsupported-attribute" and len(parsed) == 2
    await report(["iso_a4_210x297mm", "na_letter_8.5x11in"])
    assert (await check(letter))["media"] == "na_letter_8.5x11in" and len(parsed) == 3

    # Only so many services are kept: the least recently used is parsed again.
    monkeypatch.setattr(jobs_module, "PARSED_CAPABILITIES_KEPT", 1)
    service = await rig.store.service(ServiceKind.PRINT.value, "office")
    assert service is not None
    other = DetachedService(kind=ServiceKind.PRINT.value, id=service.id + 1000,
                            capabilities=SIMULATED_PRINTER_CAPABILITIES)
    rig.jobs.check_ticket(other, {}, "application/pdf")  # type: ignore[arg-type]
    rig.jobs.check_ticket(service, {}, "application/pdf")
    assert len(parsed) == 5 and len(jobs_module._parsed_capabilities) == 1
