"""Honest page counts and content sniffing (schemas/model/pages.py, schemas/model/formats.py),
and what the service does with them: transforms before a job is fetchable, the counts feeding
estimates and quotas, refusals at submit, a failed transform aborting its job.

Inputs come from independent tools (Ghostscript, qpdf); the service parts run in process on
SQLite and the local object store; one end-to-end test prints through a real Manager.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloud_service import accounting
from cloud_service.auth import User
from cloud_service.clf import ClfLog
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import DocumentKey, Documents
from cloud_service.errors import Refusal
from cloud_service.jobs import JobOperations
from cloud_service.store import JobStore
from cloud_service.transform.service import Transformer
from manager.drivers.simulated import RASTER_PRINTER_CAPABILITIES
from schemas.enums import ServiceKind
from schemas.ipp.codec import Op, Status, Tag, simple
from schemas.messages import AcknowledgeJob, Reply, decode_down, encode
from schemas.model.formats import FormatError, FormatSniffer, sniff
from schemas.model.pages import PageCounter
from tests.support.inprocess import service_parts
from tests.support.ipptools import ipp, need_tool, new, reply
from tests.support.rasterdocs import alpha_png, numbered_pdf, photo_jpeg
from tests.support.stack import running_stack

ADMIN = User("root", "admin")
#: A device that takes only PWG raster and JPEG, at a low resolution so tests stay quick.
RASTER_CAPS = {**RASTER_PRINTER_CAPABILITIES, "pwg-raster-document-resolution-supported": [75]}


@pytest.fixture(scope="module")
def pdf36(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return numbered_pdf(tmp_path_factory.mktemp("inputs") / "numbered.pdf", 36).read_bytes()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


def count(data: bytes, fmt: str, size: int) -> int:
    counter = PageCounter(fmt)
    for chunk in chunked(data, size):
        counter.feed(chunk)
    return counter.pages


# ---------------------------------------------------------------------------- page counts


@pytest.mark.parametrize("size", [1, 3, 7, 100, 4096, 10**7])
def test_pdf_pages_in_object_streams_are_counted(pdf36: bytes, size: int) -> None:
    assert count(pdf36, "application/pdf", size) == 36


@pytest.mark.parametrize(("device", "fmt"), [("pwgraster", "image/pwg-raster"), ("urf", "image/urf")])
def test_raster_pages_made_by_ghostscript_are_counted(tmp_path: Path, device: str, fmt: str) -> None:
    gs = need_tool("gs", "ghostscript")
    pdf = numbered_pdf(tmp_path / "five.pdf", 5)
    out = tmp_path / "out.raster"
    subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", f"-sDEVICE={device}", "-r50",
                    f"-sOutputFile={out}", str(pdf)], check=True, timeout=120)
    data = out.read_bytes()
    assert sniff(data[:1024]) == fmt
    for size in (1, 997, 10**7):
        assert count(data, fmt, size) == 5


def test_images_count_one_page_and_text_counts_form_feeds(tmp_path: Path) -> None:
    assert count(photo_jpeg(tmp_path / "p.jpg").read_bytes(), "image/jpeg", 10) == 1
    assert count(alpha_png(tmp_path / "a.png").read_bytes(), "image/png", 10) == 1
    assert count(b"a\nb\n\fc\n\fd", "text/plain", 1) == 3
    assert count(b"x\n" * 120, "text/plain", 5) == 2


# ---------------------------------------------------------------------------- sniffing


def judge(data: bytes, label: str, size: int = 5) -> str:
    sniffer = FormatSniffer(label)
    for chunk in chunked(data, size):
        sniffer.feed(chunk)
    return sniffer.result().document_format


def test_labels_the_bytes_confirm_are_kept(tmp_path: Path, pdf36: bytes) -> None:
    assert judge(pdf36, "application/pdf") == "application/pdf"
    assert judge(photo_jpeg(tmp_path / "p.jpg").read_bytes(), "image/jpeg") == "image/jpeg"
    assert judge("Καλημέρα\n".encode(), "text/plain") == "text/plain"
    assert judge(b"%!PS-Adobe-3.0\n", "application/postscript") == "application/postscript"


@pytest.mark.parametrize(("data", "label", "words"), [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "application/pdf", "image/png"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "image/jpeg", "application/pdf"),
    (b"plain words, not a PDF\n", "application/pdf", "not application/pdf"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 100, "application/pdf", "executable"),
    (b"MZ\x90\x00" + b"\0" * 100, "application/octet-stream", "executable"),
    (b"#!/bin/sh\nrm -rf /\n", "text/plain", "executable"),
    (b"\xff\xfe\x00\x01\x02\x03" * 10, "application/octet-stream", "not a format"),
    (b"caf\xe9 latin-1\n", "text/plain", "UTF-8"),
    (b"text with a NUL\x00 inside", "text/plain", "UTF-8"),
])
def test_contradicting_or_unknown_bytes_are_refused(data: bytes, label: str, words: str) -> None:
    with pytest.raises(FormatError, match=words):
        judge(data, label)


def test_octet_stream_is_named_by_its_content(tmp_path: Path, pdf36: bytes) -> None:
    assert judge(pdf36, "application/octet-stream") == "application/pdf"
    assert judge(alpha_png(tmp_path / "a.png").read_bytes(), "application/octet-stream") == "image/png"
    assert judge(b"just some text\n", "application/octet-stream") == "text/plain"


# ---------------------------------------------------------------------------- the service


class Rig:
    def __init__(self, store: JobStore, documents: Documents, jobs: JobOperations) -> None:
        self.store, self.documents, self.jobs = store, documents, jobs

    async def submit(self, data: bytes, fmt: str = "application/pdf", ticket: dict | None = None) -> int:
        row = await self.jobs.create(ADMIN, ServiceKind.PRINT, "raster", ticket or {}, fmt, "doc", None)
        await self.documents.accept(DocumentKey(row.id, 1), stream(data))
        return row.id


async def stream(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for chunk in chunked(data, size):
        yield chunk


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    transformer = Transformer(workers=1)
    async with service_parts(tmp_path, max_bytes=10_000_000) as parts:
        documents = Documents(parts.store, parts.objects, parts.documents.max_bytes, 60.0, transformer)
        parts.documents = documents
        await parts.store.set_device("dev", online=True, last_seen=time.time())
        assert await parts.store.upsert_service("dev", ServiceKind.PRINT.value, "raster", {
            "state": "idle", "state_reasons": ["none"], "state_message": None, "info": None, "location": None,
            "make_and_model": None, "capabilities": RASTER_CAPS})
        try:
            yield Rig(parts.store, documents, parts.jobs())
        finally:
            transformer.close()


async def test_a_pdf_reaches_a_raster_device_transformed_and_counted(rig: Rig, pdf36: bytes) -> None:
    await accounting.set_quota(rig.store, "dev", "raster", "*", 100, None, "root")
    job_id = await rig.submit(pdf36, ticket={"copies": 2})
    (doc,) = await rig.store.documents(job_id)
    assert doc.pages == 36
    row = await rig.jobs.close(ADMIN, job_id)
    assert row.state == "pending" and "job-fetchable" in row.state_reasons
    assert (await rig.store.get_job(job_id)).impressions_estimated == 72  # 36 pages x 2 copies
    info = await rig.store.job_info(row)
    note = info.history[-1].message or ""
    assert "application/pdf to image/pwg-raster at 75 dpi: 36 page(s) in, 36 out" in note
    assert info.documents[0].format == "application/pdf"  # the client's document is unchanged
    (url,) = await rig.documents.urls(job_id, "GET")
    assert url.document.format == "image/pwg-raster" and "-device" in url.document.object_key
    data = b"".join([chunk async for chunk in rig.documents.objects.read_stream(url.document.object_key)])
    assert len(data) == url.document.size and count(data, "image/pwg-raster", 65536) == 36
    # A JPEG the device takes is given as it is.
    jpeg_job = await rig.submit(photo_jpeg_bytes(), "image/jpeg")
    await rig.jobs.close(ADMIN, jpeg_job)
    (url,) = await rig.documents.urls(jpeg_job, "GET")
    assert url.document.format == "image/jpeg" and "-device" not in url.document.object_key


async def test_a_job_submitted_with_its_document_is_claimed_with_the_transformed_copy(rig: Rig,
                                                                                      pdf36: bytes) -> None:
    """Submitted in one request, the PDF is transformed before the close; the device's claim
    (judged on the job as the store last wrote it, without a read) carries the raster copy's
    URL, format, size and digest, not the client's PDF."""
    row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, "raster", {}, "application/pdf", "doc", stream(pdf36))
    assert row.state == "pending"
    devices = DeviceProtocol(rig.store, rig.documents, ClfLog(rig.documents.objects.root.parent / "clf.log"))
    out = await devices.handle("dev", "up", encode(AcknowledgeJob(job_id=row.id, version=row.version, accept=True)))
    claim = decode_down(encode(out[0][1]))
    assert isinstance(claim, Reply) and claim.ok, claim
    (access,) = claim.documents
    (made,) = await rig.store.documents(row.id)
    assert made.transformed and access.document_format == "image/pwg-raster"
    assert (access.size, access.sha256) == (made.transformed["size"], made.transformed["sha256"])
    assert made.transformed["object_key"] in access.url


def photo_jpeg_bytes() -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 0, 0)).save(out, "JPEG")
    return out.getvalue()


async def test_a_quota_that_36_pages_exceed_refuses_the_job(rig: Rig, pdf36: bytes) -> None:
    await accounting.set_quota(rig.store, "dev", "raster", "*", 35, None, "root")
    job_id = await rig.submit(pdf36)
    with pytest.raises(Refusal) as refused:
        await rig.jobs.close(ADMIN, job_id)
    assert refused.value.code == "quota-exceeded" and "36" in refused.value.message
    assert (await rig.store.get_job(job_id)).state == "aborted"


async def test_page_ranges_and_number_up_lower_the_estimate_that_quotas_judge(rig: Rig, pdf36: bytes) -> None:
    # 16 pages selected (1-10, 20-25), 2 to a side: 8 impressions per copy.
    ticket = {"number-up": 2, "page-ranges": [[1, 10], [20, 25]]}
    await accounting.set_quota(rig.store, "dev", "raster", "*", 24, None, "root")
    # 4 copies are 32 impressions: more than the quota of 24.
    job_id = await rig.submit(pdf36, ticket={**ticket, "copies": 4})
    with pytest.raises(Refusal) as refused:
        await rig.jobs.close(ADMIN, job_id)
    assert refused.value.code == "quota-exceeded" and "32" in refused.value.message
    # 3 copies are 24: exactly what the quota allows (36 pages x 3 would be 108).
    job_id = await rig.submit(pdf36, ticket={**ticket, "copies": 3})
    await rig.jobs.close(ADMIN, job_id)
    assert (await rig.store.get_job(job_id)).impressions_estimated == 24


async def test_a_corrupt_pdf_aborts_its_job_and_the_next_job_prints(rig: Rig, pdf36: bytes) -> None:
    job_id = await rig.submit(b"%PDF-1.5\n" + b"\x00not really a pdf" * 500)
    with pytest.raises(Refusal) as refused:
        await rig.jobs.close(ADMIN, job_id)
    assert refused.value.code == "document-format-error"
    row = await rig.store.get_job(job_id)
    assert row.state == "aborted" and row.state_reasons == ["document-format-error"]
    assert "cannot be transformed to image/pwg-raster" in (row.state_message or "")
    good = await rig.submit(pdf36)
    assert (await rig.jobs.close(ADMIN, good)).state == "pending"


async def test_mislabelled_and_executable_documents_are_refused_at_submit(rig: Rig, tmp_path: Path) -> None:
    png = alpha_png(tmp_path / "a.png").read_bytes()
    for data, fmt in ((png, "application/pdf"), (b"\x7fELF\x02\x01\x01" + bytes(200), "application/octet-stream")):
        row = await rig.jobs.create(ADMIN, ServiceKind.PRINT, "raster", {}, fmt, "doc", None)
        with pytest.raises(Refusal) as refused:
            await rig.documents.accept(DocumentKey(row.id, 1), stream(data, 7))
        assert refused.value.status == 400 and refused.value.code == "document-format-error"
        after = await rig.store.get_job(row.id)
        assert after.state == "aborted" and after.state_reasons == ["document-format-error"]
        assert await rig.documents.objects.size(f"jobs/{row.id}/doc-1") is None  # nothing kept
    # octet-stream with a PNG inside is stored as the PNG it is, and counted as one.
    job_id = await rig.submit(png, "application/octet-stream")
    (doc,) = await rig.store.documents(job_id)
    assert (doc.format, doc.pages) == ("image/png", 1)


async def test_validation_refuses_only_what_neither_device_nor_service_can_do(rig: Rig) -> None:
    service = await rig.store.service("print", "raster")
    assert service is not None
    for fmt in ("application/pdf", "text/plain", "image/png", "image/pwg-raster"):
        rig.jobs.check_ticket(service, {}, fmt)
    with pytest.raises(Refusal) as refused:
        rig.jobs.check_ticket(service, {}, "application/postscript")
    assert refused.value.attribute == "document-format" and "application/pdf" in refused.value.supported


async def test_a_pdf_prints_on_a_raster_only_printer_through_the_manager(tmp_path: Path, pdf36: bytes) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("rasterprinter", driver="simulated",
                                options={"pages_per_second": 1000}, capabilities=RASTER_CAPS)
        services = (await stack.http.get("/api/v1/services", params={"kind": "print"})).json()["services"]
        caps = next(s for s in services if s["name"] == "rasterprinter")["capabilities"]
        assert caps["document-format-device-supported"] == ["image/pwg-raster", "image/jpeg"]
        assert "application/pdf" in caps["document-format-supported"]
        response = await stack.submit(pdf36, {"copies": 2}, service="rasterprinter")
        assert response.status_code in (200, 201), response.text
        job = await stack.wait_job(response.json()["id"], timeout=120)
        assert job["state"] == "completed", job
        assert job["impressions_completed"] == 72  # the device counted 36 raster pages, twice


async def test_mismatched_and_executable_documents_are_refused_on_http_and_ipp(tmp_path: Path) -> None:
    png = alpha_png(tmp_path / "a.png").read_bytes()
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("office", driver="file")
        refused = await stack.submit(png, service="office", fmt="application/pdf")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "document-format-error" and "image/png" in error["message"]
        refused = await stack.submit(b"\x7fELF\x02\x01\x01" + bytes(300), service="office",
                                     fmt="application/octet-stream", name="a.out")
        assert refused.status_code == 400 and "executable" in refused.json()["error"]["message"]
        for data, fmt, words in ((png, "application/pdf", "image/png"),
                                 (b"MZ\x90\x00" + bytes(300), "application/octet-stream", "executable")):
            msg = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, fmt))
            answer = reply(await ipp(stack, "office", msg, data=data))
            assert answer.code == Status.CLIENT_ERROR_DOCUMENT_FORMAT_ERROR, hex(answer.code)  # as on HTTP
            assert words in str(simple(answer.operation().get("status-message")))
        # octet-stream with a PNG inside is taken as the PNG it is.
        msg = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "application/octet-stream"))
        answer = reply(await ipp(stack, "office", msg, data=png))
        assert answer.code == Status.OK, hex(answer.code)
        jobs = (await stack.http.get("/api/v1/jobs", params={"all": "true"})).json()["jobs"]
        formats = {job["documents"][0]["format"] for job in jobs if job["state"] != "aborted"}
        assert formats == {"image/png"}


def test_the_device_ticket_names_the_copy_and_leaves_out_what_the_transform_applied() -> None:
    from cloud_service.db import DocumentRow
    from cloud_service.documents import device_ticket

    def doc(transformed: dict | None) -> DocumentRow:
        return DocumentRow(job_id=1, number=1, name=None, format="application/pdf", size=10, sha256="0" * 64,
                           object_key="jobs/1/doc-1", state="pending", impressions_completed=0, pages=3,
                           transformed=transformed)

    ticket = {"copies": 2, "number-up": 2, "page-ranges": [[1, 3]], "orientation-requested": 4}
    assert device_ticket(ticket, [doc(None)]) == {**ticket, "document-format": "application/pdf"}
    made = {"format": "image/pwg-raster", "object_key": "jobs/1/doc-1-device", "size": 5, "sha256": "1" * 64}
    assert device_ticket(ticket, [doc(made)]) == {"copies": 2, "document-format": "image/pwg-raster"}
