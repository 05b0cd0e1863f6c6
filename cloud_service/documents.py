"""The Document object (PWG 5100.5): object keys, the one writer of document bytes, their URLs.

A job's documents are rows in the ``documents`` table (cloud_service.store) and bytes in the
object store (cloud_service.objects), named by a ``DocumentKey``:

- ``jobs/{id}/doc-{n}``: input document ``n`` of a print or fax job, uploaded by a client;
- ``jobs/{id}/scan-{n}``: output document ``n`` of a scan job, uploaded by the device.

``Documents.accept`` is the only way bytes get in, for both kinds: it checks that the job takes
that document now, streams the bytes to the object store (size cap, SHA-256) and counts pages on
the way (schemas.model.pages.PageCounter), then records size, digest and pages on the row. So a
price or quota never reads a document back. ``Documents.urls`` mints every presigned URL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloud_service.db import DocumentRow, JobRow
from cloud_service.errors import Refusal
from cloud_service.objects import ObjectStore, ObjectTooLarge, StoredObject
from cloud_service.store import JobNotFound, JobStore
from schemas.enums import DocumentState, JobState, Reason, ServiceKind
from schemas.model.job import Abort, InvalidTransition
from schemas.model.pages import PageCounter

#: Most output documents one scan job may make (a 1000-sheet duplex ADF in single pages).
MAX_SCAN_DOCUMENTS = 2000
#: A client uploading a big document over a slow link gets at least this long (seconds).
MIN_UPLOAD_TTL = 3600.0

_KEY = re.compile(r"jobs/(0|[1-9][0-9]{0,17})/(doc|scan)-(0|[1-9][0-9]{0,8})")


@dataclass(frozen=True)
class DocumentKey:
    """Where a document's bytes live: the only code that formats or parses object keys."""

    job_id: int
    number: int
    #: Scan output (made by the device) rather than an input document (sent by a client).
    output: bool = False

    @classmethod
    def parse(cls, key: str) -> DocumentKey:
        """The key's parts; ValueError for anything this module did not mint."""
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"not a document key: {key[:100]!r}")
        return cls(int(match[1]), int(match[3]), match[2] == "scan")

    @staticmethod
    def input_key(job_id: int, number: int) -> str:
        return str(DocumentKey(job_id, number))

    def __str__(self) -> str:
        return f"jobs/{self.job_id}/{'scan' if self.output else 'doc'}-{self.number}"


@dataclass(frozen=True)
class DocumentUrl:
    """A presigned URL for one method on one document, and when it stops working."""

    document: DocumentRow
    url: str
    expires_at: float


class Documents:
    """Input documents and scan output of jobs: accepting bytes, minting URLs."""

    def __init__(self, store: JobStore, objects: ObjectStore, max_bytes: int, url_ttl: float) -> None:
        self.store = store
        self.objects = objects
        self.max_bytes = max_bytes
        self.url_ttl = url_ttl

    async def accept(self, key: DocumentKey, chunks: AsyncIterator[bytes],
                     declared_size: int | None = None) -> StoredObject:
        """Store the bytes of the document at ``key`` if its job takes them now (else Refusal).

        ``declared_size`` (an upload's ``Content-Length``) over the cap is refused before a byte
        is read. An input document refused as too large aborts its job with that reason: the
        job cannot go on without it, and its history says why rather than who canceled it.
        """
        doc = await (self._output_slot(key) if key.output else self._input_slot(key))
        if declared_size is not None and declared_size > self.max_bytes:
            raise await self._too_large(key, f"the document ({declared_size} bytes) is larger than this "
                                             f"service takes ({self.max_bytes} bytes)")
        counter = PageCounter(doc.format)

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                counter.feed(chunk)
                yield chunk

        try:
            stored = await self.objects.put_stream(doc.object_key, counted(), self.max_bytes)
        except ObjectTooLarge:
            raise await self._too_large(key, f"the document is larger than this service takes "
                                             f"({self.max_bytes} bytes)") from None
        await self.store.set_document(key.job_id, key.number, size=stored.size, sha256=stored.sha256,
                                      pages=counter.pages)
        return stored

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

    async def urls(self, job_id: int, method: str, number: int | None = None) -> list[DocumentUrl]:
        """Presigned ``method`` (GET or PUT) URLs for the job's documents (or document ``number``).

        A client's PUT of an input document lasts at least ``MIN_UPLOAD_TTL``; every other URL
        lasts ``url_ttl``.
        """
        out = []
        for doc in await self.store.documents(job_id):
            if number is not None and doc.number != number:
                continue
            slow_client = method == "PUT" and not DocumentKey.parse(doc.object_key).output
            ttl = max(self.url_ttl, MIN_UPLOAD_TTL) if slow_client else self.url_ttl
            url, expires = self.objects.presign(doc.object_key, method, ttl)
            out.append(DocumentUrl(doc, url, expires))
        return out
