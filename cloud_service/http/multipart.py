"""Multipart job submissions, parsed as the bytes arrive, with the document's size cap applied.

Starlette's ``request.form()`` spools a file part to disk whatever its size and leaves the cap
to whoever reads it afterwards: a 300 MiB body took ~537 MiB of temporary disk before the
service answered 413. Here the body is refused on its declared ``Content-Length`` before a byte
is read, and otherwise parsed by python-multipart's streaming parser with the cap counted on
every chunk of the document part, so no more than the cap is ever spooled, whether the client
declared a length or sent the body chunked.

The form has a ``job`` field (JobCreate as JSON) and one ``document`` file; anything else is
refused. The caller reads the document back with ``JobForm.chunks`` and must ``close`` it.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import Any

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cloud_service.errors import Refusal

#: Largest non-file part (the ``job`` JSON), in bytes.
MAX_FIELD_BYTES = 64 * 1024
#: Most parts a job submission may have (``job``, ``document`` and a little slack).
MAX_PARTS = 4
#: A document up to this size stays in memory; a larger one goes to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024
#: The form's overhead besides the document: fields, part headers, boundaries.
FORM_OVERHEAD = MAX_PARTS * (MAX_FIELD_BYTES + 1024)


@dataclass
class JobForm:
    """A parsed job submission: the ``job`` field and the spooled ``document`` part."""

    job: str | None = None
    document: SpooledTemporaryFile[bytes] | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int = 0

    async def chunks(self, size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The document's bytes, read back from the spool: off the event loop once it is a file,
        at once while it is in memory (no thread hops for a small document)."""
        assert self.document is not None
        if self.size <= SPOOL_IN_MEMORY:  # never rolled over to disk
            self.document.seek(0)
            while data := self.document.read(size):
                yield data
            return
        await anyio.to_thread.run_sync(self.document.seek, 0)
        while data := await anyio.to_thread.run_sync(self.document.read, size):
            yield data

    def close(self) -> None:
        if self.document is not None:
            self.document.close()


def _too_large(limit: int) -> Refusal:
    return Refusal(413, "too-large", f"the document is larger than this service takes ({limit} bytes)")


@dataclass
class _Collector:
    """python-multipart's callbacks: headers and data of each part, the cap applied per chunk."""

    max_document_bytes: int
    form: JobForm = field(default_factory=JobForm)
    parts: int = 0
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    part_type: bytes = b""
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)
    #: File bytes parsed but not yet written (written off the loop between chunks).
    pending: list[bytes] = field(default_factory=list)

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Refusal(422, "bad-request", f"a job submission has at most {MAX_PARTS} parts")
        self.disposition = self.part_type = b""
        self.data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self.header_name.lower()
        if name == b"content-disposition":
            self.disposition = self.header_value
        elif name == b"content-type":
            self.part_type = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.name = _text(options.get(b"name"), "part name") or ""
        self.is_file = b"filename" in options
        if not self.is_file:
            return
        if self.name != "document" or self.form.document is not None:
            raise Refusal(422, "bad-request", "a job submission has one file part, named 'document'")
        self.form.filename = _text(options[b"filename"], "document filename")
        media_type, _ = parse_options_header(self.part_type)
        self.form.content_type = media_type.decode("latin-1") or None
        self.form.document = SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (JobForm.close)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            self.form.size += end - start
            if self.form.size > self.max_document_bytes:
                raise _too_large(self.max_document_bytes)
            self.pending.append(bytes(data[start:end]))
            return
        if len(self.data) + end - start > MAX_FIELD_BYTES:
            raise Refusal(413, "too-large", f"the part {self.name!r} is larger than {MAX_FIELD_BYTES} bytes")
        self.data += data[start:end]

    def on_part_end(self) -> None:
        if not self.is_file and self.name == "job":
            self.form.job = _text(bytes(self.data), "job part")

    async def flush(self) -> None:
        if self.pending and self.form.document is not None:
            data, self.pending = b"".join(self.pending), []
            if self.form.size <= SPOOL_IN_MEMORY:  # stays in memory: no disk I/O to keep off the loop
                self.form.document.write(data)
            else:
                await anyio.to_thread.run_sync(self.form.document.write, data)


def _text(raw: bytes | None, what: str) -> str | None:
    if raw is None:
        return None
    try:
        return codecs.decode(raw, "utf-8")
    except UnicodeDecodeError:
        raise Refusal(422, "bad-request", f"{what} is not UTF-8") from None


def declared_length(request: Request) -> int | None:
    """The body size the client declared (``Content-Length``), if it did."""
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


async def read_job_form(request: Request, max_document_bytes: int) -> JobForm:
    """Parse a multipart job submission; Refusal (413) as soon as the document passes the cap."""
    declared = declared_length(request)
    if declared is not None and declared > max_document_bytes + FORM_OVERHEAD:
        raise _too_large(max_document_bytes)
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise Refusal(422, "bad-request", "multipart/form-data needs a boundary")
    collector = _Collector(max_document_bytes)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
            await collector.flush()
        parser.finalize()
        await collector.flush()
    except FormParserError:
        collector.form.close()
        raise Refusal(422, "bad-request", "the multipart body is malformed") from None
    except BaseException:
        collector.form.close()
        raise
    return collector.form
