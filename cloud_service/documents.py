"""The Document object (PWG 5100.5): object keys, the one writer of document bytes, their URLs.

A job's documents are rows in the ``documents`` table (cloud_service.store) and bytes in the
object store (cloud_service.objects), named by a ``DocumentKey``:

- ``jobs/{id}/doc-{n}``: input document ``n`` of a print or fax job, uploaded by a client;
- ``jobs/{id}/scan-{n}``: output document ``n`` of a scan job, uploaded by the device;
- ``jobs/{id}/doc-{n}-device``: input document ``n`` transformed into a format its device takes
  (cloud_service.transform), made by ``Documents.prepare`` before the job becomes fetchable.

``Documents.accept`` is the only way bytes get in, for both kinds: it checks that the job takes
that document now, streams the bytes to the object store (size cap, SHA-256), checks on the way
that the bytes are what their label says (schemas.model.formats) and counts pages
(schemas.model.pages.PageCounter), then records size, digest and pages on the row. So a price or
quota never reads a document back. ``Documents.urls`` mints every presigned URL; a device is
given the transformed copy when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from cloud_service.db import DocumentRow, JobRow
from cloud_service.errors import Refusal
from cloud_service.objects import ObjectStore, ObjectTooLarge, StoredObject
from cloud_service.store import JobNotFound, JobStore, detached
from cloud_service.transform import target_format
from cloud_service.transform.page import UNPRINTABLE, Layout
from cloud_service.transform.service import Transformer
from schemas.enums import DocumentState, JobState, Reason, ServiceKind
from schemas.model.formats import FormatError, FormatSniffer
from schemas.model.job import Abort, InvalidTransition
from schemas.model.pages import PageCounter

log = logging.getLogger("cloudimaging.documents")

#: Most output documents one scan job may make (a 1000-sheet duplex ADF in single pages).
MAX_SCAN_DOCUMENTS = 2000
#: A client uploading a big document over a slow link gets at least this long (seconds).
MIN_UPLOAD_TTL = 3600.0

_KEY = re.compile(r"jobs/(0|[1-9][0-9]{0,17})/(doc|scan)-(0|[1-9][0-9]{0,8})(-device)?")
#: Largest transformed copy kept (raster at 600 dpi is far larger than the PDF it came from).
MAX_TRANSFORMED_BYTES = 8 * 1024**3
CHUNK = 256 * 1024
#: What a document row holds (every column), to copy one.
_DOC_COLUMNS = tuple(c.key for c in DocumentRow.__table__.columns)
#: What storing a document's bytes records on its row.
RECORDED = ("size", "sha256", "pages", "format")
#: One transformer (a process pool) for the whole service, made on first use.
_SHARED_TRANSFORMER: Transformer | None = None


def shared_transformer() -> Transformer:
    global _SHARED_TRANSFORMER
    if _SHARED_TRANSFORMER is None:
        _SHARED_TRANSFORMER = Transformer()
    return _SHARED_TRANSFORMER


class TransformFailed(Exception):
    """A document could not be made printable: the job is aborted with ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class DocumentKey:
    """Where a document's bytes live: the only code that formats or parses object keys."""

    job_id: int
    number: int
    #: Scan output (made by the device) rather than an input document (sent by a client).
    output: bool = False
    #: The copy transformed for the device (never uploaded by anyone).
    transformed: bool = False

    @classmethod
    def parse(cls, key: str) -> DocumentKey:
        """The key's parts; ValueError for anything this module did not mint."""
        match = _KEY.fullmatch(key)
        if match is None or (match[4] and match[2] == "scan"):
            raise ValueError(f"not a document key: {key[:100]!r}")
        return cls(int(match[1]), int(match[3]), match[2] == "scan", bool(match[4]))

    @staticmethod
    def input_key(job_id: int, number: int) -> str:
        return str(DocumentKey(job_id, number))

    def __str__(self) -> str:
        suffix = "-device" if self.transformed else ""
        return f"jobs/{self.job_id}/{'scan' if self.output else 'doc'}-{self.number}{suffix}"


@dataclass(frozen=True)
class DocumentUrl:
    """A presigned URL for one method on one document, and when it stops working."""

    document: DocumentRow
    url: str
    expires_at: float


class Documents:
    """Input documents and scan output of jobs: accepting bytes, minting URLs."""

    def __init__(self, store: JobStore, objects: ObjectStore, max_bytes: int, url_ttl: float,
                 transformer: Transformer | None = None) -> None:
        self.store = store
        self.objects = objects
        self.max_bytes = max_bytes
        self.url_ttl = url_ttl
        self.transformer = transformer or shared_transformer()
        self._preparing: set[int] = set()

    async def accept(self, key: DocumentKey, chunks: AsyncIterator[bytes],
                     declared_size: int | None = None) -> StoredObject:
        """Store the bytes of the document at ``key`` if its job takes them now (else Refusal).

        ``declared_size`` (an upload's ``Content-Length``) over the cap is refused before a byte
        is read. An input document refused as too large aborts its job with that reason: the
        job cannot go on without it, and its history says why rather than who canceled it.
        """
        if key.transformed:
            raise Refusal(404, "not-found", "no such upload")
        doc = await (self._output_slot(key) if key.output else self._input_slot(key))
        stored, values = await self._receive(key, doc, chunks, declared_size)
        await self.store.set_document(key.job_id, key.number, **values)
        return stored

    async def receive_new(self, doc: DocumentRow, chunks: AsyncIterator[bytes]) -> tuple[StoredObject, DocumentRow]:
        """The bytes of input document ``doc`` of a job the caller has just created in this same
        request (so nobody else can have stored or refused them yet): streamed and checked as
        ``accept`` does, but not recorded. The caller writes the returned row's size, digest,
        pages and format (``recorded``) in the transaction that closes the job, a hop less and
        no window in which the job has its bytes recorded but is not closed."""
        key = DocumentKey.parse(doc.object_key)
        if key.output or key.transformed:
            raise ValueError(f"not an input document: {doc.object_key}")
        stored, values = await self._receive(key, doc, chunks, None)
        return stored, detached(DocumentRow, {**{k: getattr(doc, k) for k in _DOC_COLUMNS}, **values})

    async def _receive(self, key: DocumentKey, doc: DocumentRow, chunks: AsyncIterator[bytes],
                       declared_size: int | None) -> tuple[StoredObject, dict[str, Any]]:
        """Stream the bytes to the object store; what to record on the document's row."""
        if declared_size is not None and declared_size > self.max_bytes:
            raise await self._too_large(key, f"the document ({declared_size} bytes) is larger than this "
                                             f"service takes ({self.max_bytes} bytes)")
        sniffer = None if key.output else FormatSniffer(doc.format)
        counter = PageCounter(doc.format) if sniffer is None else None
        head: list[bytes] = []  # the first bytes, held only until the sniffer names the format

        async def counted() -> AsyncIterator[bytes]:
            nonlocal counter
            async for chunk in chunks:
                if sniffer is not None:
                    sniffer.feed(chunk)
                    if counter is None and (fmt := sniffer.known_format) is not None:
                        counter = PageCounter(fmt)
                        for held in head:
                            counter.feed(held)
                        head.clear()
                    elif counter is None:
                        head.append(chunk)
                if counter is not None:
                    counter.feed(chunk)
                yield chunk
            if sniffer is not None:
                sniffer.result()  # refuses before the object is kept

        try:
            stored = await self.objects.put_stream(doc.object_key, counted(), self.max_bytes)
        except ObjectTooLarge:
            raise await self._too_large(key, f"the document is larger than this service takes "
                                             f"({self.max_bytes} bytes)") from None
        except FormatError as exc:
            raise await self._refuse_format(key, str(exc)) from None
        values: dict[str, Any] = {"size": stored.size, "sha256": stored.sha256}
        if sniffer is not None:
            fmt = sniffer.result().document_format
            if fmt != doc.format:
                values["format"] = fmt  # octet-stream named by its content
            if counter is None:
                counter = PageCounter(fmt)
                for held in head:
                    counter.feed(held)
        assert counter is not None
        values["pages"] = counter.pages
        return stored, values

    async def _refuse_format(self, key: DocumentKey, message: str) -> Refusal:
        """Bytes that are not what their label says end the job (it cannot print them)."""
        with contextlib.suppress(InvalidTransition, JobNotFound):
            await self.store.transition(key.job_id, Abort(Reason.DOCUMENT_FORMAT_ERROR, message))
        return Refusal(400, "document-format-error", message, attribute="document-format")

    async def _too_large(self, key: DocumentKey, message: str) -> Refusal:
        if not key.output:
            with contextlib.suppress(InvalidTransition, JobNotFound):
                await self.store.transition(key.job_id, Abort(Reason.ABORTED_BY_SYSTEM, message))
        return Refusal(413, "too-large", message)

    async def _job(self, job_id: int) -> JobRow:
        try:
            return await self.store.get_job(job_id)
        except JobNotFound:
            raise Refusal(404, "not-found", "no such job") from None

    async def _document(self, key: DocumentKey) -> DocumentRow | None:
        return next((d for d in await self.store.documents(key.job_id) if d.number == key.number), None)

    async def _input_slot(self, key: DocumentKey) -> DocumentRow:
        """An input document is taken once, while the job waits for it (pending-held, job-incoming)."""
        row = await self._job(key.job_id)
        if row.state != JobState.PENDING_HELD.value or "job-incoming" not in row.state_reasons:
            raise Refusal(409, "job-not-incoming", "the job does not accept documents any more")
        doc = await self._document(key)
        if doc is None or doc.object_key != str(key):
            raise Refusal(404, "not-found", "no such document")
        if doc.sha256 is not None:  # upload URLs are one-time: a replayed PUT cannot swap the document
            raise Refusal(409, "document-stored", "the document was uploaded already")
        return doc

    async def _output_slot(self, key: DocumentKey) -> DocumentRow:
        """Scan output is taken only while its job runs, and never over a completed document."""
        row = await self._job(key.job_id)
        if row.kind != ServiceKind.SCAN.value or JobState(row.state).terminal or not row.claimed:
            raise Refusal(409, "job-not-scanning", "the job does not take scan output now")
        doc = await self._document(key)
        if doc is None or doc.object_key != str(key):
            raise Refusal(404, "not-found", "no such output document")
        if doc.state == DocumentState.COMPLETED.value:
            raise Refusal(409, "document-stored", "this output document is complete already")
        return doc

    async def add_output(self, job: JobRow, number: int, document_format: str, name: str | None) -> DocumentRow:
        """The row of scan output ``number``, made on the device's first request (idempotent)."""
        return await self.store.add_document(job.id, number, name=name, document_format=document_format,
                                             object_key=str(DocumentKey(job.id, number, output=True)))

    async def urls(self, job_id: int, method: str, number: int | None = None,
                   documents: list[DocumentRow] | None = None) -> list[DocumentUrl]:
        """Presigned ``method`` (GET or PUT) URLs for the job's documents (or document ``number``).

        GET is for the device: a document transformed for it is given as its transformed copy
        (format, size and digest of that copy). A client's PUT of an input document lasts at
        least ``MIN_UPLOAD_TTL``; every other URL lasts ``url_ttl``. ``documents``: the job's
        rows when the caller has just read them (no second read).
        """
        return self.presigned(documents if documents is not None else await self.store.documents(job_id),
                              method, number)

    def presigned(self, documents: list[DocumentRow], method: str, number: int | None = None) -> list[DocumentUrl]:
        """``urls`` for document rows in hand: no I/O, so it may run inside a transaction's callback."""
        out = []
        for doc in documents:
            if number is not None and doc.number != number:
                continue
            slow_client = method == "PUT" and not DocumentKey.parse(doc.object_key).output
            ttl = max(self.url_ttl, MIN_UPLOAD_TTL) if slow_client else self.url_ttl
            given = device_copy(doc) if method == "GET" else doc
            url, expires = self.objects.presign(given.object_key, method, ttl)
            out.append(DocumentUrl(given, url, expires))
        return out

    # ------------------------------------------------------------------ transforms

    async def make_printable(self, job: JobRow, kind: str, capabilities: dict[str, Any],
                             documents: list[DocumentRow] | None = None) -> str | None:
        """Close-Job's step before the job becomes fetchable: transform what the device cannot
        take. Returns the note for the job's history (None: nothing to do). A failed transform
        aborts the job with its reason and raises Refusal; a second close of a job being
        transformed is refused (409) rather than transforming twice."""
        if kind != ServiceKind.PRINT.value or job.state != JobState.PENDING_HELD.value:
            return None
        if job.id in self._preparing:
            raise Refusal(409, "job-transforming", "the job's documents are being transformed")
        self._preparing.add(job.id)
        try:
            notes = await self.prepare(job, capabilities, documents)
        except TransformFailed as exc:
            with contextlib.suppress(InvalidTransition, JobNotFound):
                await self.store.transition(job.id, Abort(exc.reason, exc.message))
            raise Refusal(422 if exc.reason == UNPRINTABLE else 400, exc.reason, exc.message,
                          attribute="document-format") from None
        finally:
            self._preparing.discard(job.id)
        return "; ".join(notes) or None

    async def prepare(self, job: JobRow, capabilities: dict[str, Any],
                      documents: list[DocumentRow] | None = None) -> list[str]:
        """Transform each input document the device cannot take into one it can, before the job
        becomes fetchable; returns one line per transform for the job's history (format, pages,
        time). Raises TransformFailed (the job is then to be aborted with its reason).
        ``documents``: the job's rows when the caller holds them current (no second read)."""
        device_formats = capabilities.get("document-format-supported") or []
        notes = []
        for doc in documents if documents is not None else await self.store.documents(job.id):
            key = DocumentKey.parse(doc.object_key)
            if key.output or doc.sha256 is None or doc.transformed:
                continue
            try:
                target = target_format(doc.format, device_formats)
            except ValueError:
                # Nothing the service writes fits (the device's formats changed since the job was
                # accepted): the device checks the job again and refuses it with its reason.
                continue
            if target is None:
                continue
            notes.append(await self._transform(job, doc, target, Layout.for_job(capabilities, job.ticket or {})))
        return notes

    async def _transform(self, job: JobRow, doc: DocumentRow, target: str, layout: Layout) -> str:
        out_key = str(DocumentKey(job.id, doc.number, transformed=True))
        with tempfile.TemporaryDirectory(prefix="cloudimaging-transform-") as work:
            source, made = Path(work) / "in", Path(work) / "out"
            async with await anyio.open_file(source, "wb") as fh:
                async for chunk in self.objects.read_stream(doc.object_key):
                    await fh.write(chunk)
            outcome = await self.transformer.run(source, doc.format, made, target, layout)
            if outcome.reason is not None:
                raise TransformFailed(outcome.reason, f"document {doc.number} ({doc.format}) cannot be "
                                                      f"transformed to {target}: {outcome.message}")

            async def read_made() -> AsyncIterator[bytes]:
                async with await anyio.open_file(made, "rb") as fh:
                    while chunk := await fh.read(CHUNK):
                        yield chunk

            try:
                stored = await self.objects.put_stream(out_key, read_made(), MAX_TRANSFORMED_BYTES)
            except ObjectTooLarge:
                raise TransformFailed(UNPRINTABLE, f"document {doc.number} is too large once transformed "
                                                   f"to {target}") from None
        note = (f"document {doc.number} transformed from {doc.format} to {target} at {layout.dpi} dpi: "
                f"{outcome.pages_in} page(s) in, {outcome.pages_out} out, {outcome.seconds:.2f} s")
        await self.store.set_document(job.id, doc.number, transformed={
            "format": target, "object_key": out_key, "size": stored.size, "sha256": stored.sha256,
            "pages": outcome.pages_out, "pages_in": outcome.pages_in, "seconds": round(outcome.seconds, 3),
            "dpi": layout.dpi})
        log.info("job %s: %s", job.id, note)
        return note


def object_keys(doc: DocumentRow) -> list[str]:
    """Every object a document has: its bytes and, if one was made, its transformed copy."""
    made = (doc.transformed or {}).get("object_key")
    return [doc.object_key, made] if made else [doc.object_key]


#: Ticket attributes a transform applies to the pages it makes: the device must not apply them again.
APPLIED_BY_TRANSFORM = ("page-ranges", "number-up", "orientation-requested")


def device_ticket(ticket: dict[str, Any], docs: list[DocumentRow]) -> dict[str, Any]:
    """The job ticket as the device gets it: ``document-format`` is the format it is given, and
    the page layout a transform already applied is left out."""
    out = dict(ticket)
    out["document-format"] = device_copy(docs[0]).format
    if any(doc.transformed for doc in docs):
        for name in APPLIED_BY_TRANSFORM:
            out.pop(name, None)
    return out


def device_copy(doc: DocumentRow) -> DocumentRow:
    """The document as its device gets it: the transformed copy if one was made, else itself."""
    made = doc.transformed
    if not made:
        return doc
    return DocumentRow(job_id=doc.job_id, number=doc.number, name=doc.name, format=made["format"],
                       size=made["size"], sha256=made["sha256"], object_key=made["object_key"], state=doc.state,
                       impressions_completed=doc.impressions_completed, pages=made.get("pages"))
