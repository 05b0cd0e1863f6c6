"""Page counting while a document streams in: the pages that prices, quotas and
``job-impressions`` are computed from, with no second read and bounded memory.

PDF: ``/Type /Page`` objects, including those inside compressed object streams (PDF 1.5).
PWG raster and Apple raster: the pages the stream holds (each page's lines are decoded).
Text: a form feed ends a page, 60 lines per page. JPEG, PNG and anything else: 1 page.
Pure (zlib only): the service counts at upload, the Manager's drivers count what they print.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHUNK = 64 * 1024
LINES_PER_PAGE = 60
_PDF_PAGE = re.compile(rb"/Type\s{0,64}/Page(?![A-Za-z0-9])")
#: Bytes kept between chunks: longer than any match, so a match is never split.
_OVERLAP = 256

EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/postscript": ".ps",
    "application/vnd.hp-pcl": ".pcl",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/pwg-raster": ".pwg",
    "image/urf": ".urf",
    "image/tiff": ".tiff",
    "text/plain": ".txt",
    "application/octet-stream": ".bin",
}


def extension(document_format: str) -> str:
    """File extension for a MIME type (``.bin`` when unknown)."""
    return EXTENSIONS.get(document_format.lower(), ".bin")


class PageCounter:
    """Counts pages incrementally: ``feed`` the bytes in any chunking, then read ``pages``.

    So a store can count while it writes, and never reads a document back to count it. Memory
    stays bounded whatever the chunking: a few KiB of carried bytes and one zlib window.
    """

    def __init__(self, document_format: str) -> None:
        fmt = document_format.lower()
        self._impl: _Counter = (
            _PdfCounter() if fmt == "application/pdf"
            else _TextCounter() if fmt.startswith("text/")
            else _RasterCounter(pwg=True) if fmt == "image/pwg-raster"
            else _RasterCounter(pwg=False) if fmt == "image/urf"
            else _OnePage()
        )

    @property
    def counts(self) -> bool:
        """False for formats counted as one page whatever their bytes (nothing to feed)."""
        return not isinstance(self._impl, _OnePage)

    def feed(self, chunk: bytes) -> None:
        if chunk:
            self._impl.feed(chunk)

    @property
    def pages(self) -> int:
        """Pages in what was fed so far, as if it ended here (at least 1)."""
        return max(1, self._impl.pages())


class _Counter:
    def feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    def pages(self) -> int:
        raise NotImplementedError


class _OnePage(_Counter):
    """JPEG, PNG and formats we do not parse: one page (an image is one impression)."""

    def feed(self, chunk: bytes) -> None:
        return None

    def pages(self) -> int:
        return 1


class _TextCounter(_Counter):
    """Plain text: a form feed ends a page; a page holds ``LINES_PER_PAGE`` lines."""

    def __init__(self) -> None:
        self._done = 0  # pages ended by form feeds
        self._lines = 0  # complete lines on the current page
        self._partial = False  # the current line has characters but no newline yet

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\f")
        for i, part in enumerate(parts):
            if i:  # a form feed: the current page ends
                self._done += self._page_count()
                self._lines, self._partial = 0, False
            if part:
                self._lines += part.count(b"\n")
                self._partial = not part.endswith(b"\n")

    def _page_count(self) -> int:
        lines = self._lines + (1 if self._partial else 0)
        return max(1, math.ceil(lines / LINES_PER_PAGE))

    def pages(self) -> int:
        current = self._page_count() if (self._lines or self._partial) else 0
        return self._done + current


_PDF_OBJSTM = re.compile(rb"/Type\s{0,64}/ObjStm(?![A-Za-z0-9])")
_PDF_STREAM = re.compile(rb"(?<!end)stream(?:\r\n|\n|\r)")
#: Longest dictionary between an object stream's ``/Type`` and its data we wait for.
_MAX_DICT = 64 * 1024
#: Most bytes one zlib call may produce (bounds memory on a deflate bomb).
_INFLATE_STEP = 256 * 1024


class _PageScan:
    """Counts ``/Type /Page`` in a byte stream split anywhere (a carry joins the chunks)."""

    def __init__(self) -> None:
        self.count = 0
        self._carry = b""

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        last_end = 0
        for match in _PDF_PAGE.finditer(data):
            if match.end() <= len(data) - 1:
                self.count += 1
                last_end = match.end()
        self._carry = data[max(last_end, len(data) - _OVERLAP):]

    def total(self) -> int:
        return self.count + sum(1 for _ in _PDF_PAGE.finditer(self._carry))


class _PdfCounter(_Counter):
    """PDF: page objects, both in the file's plain text and inside compressed object streams
    (PDF 1.5 ``/Type /ObjStm``, FlateDecode), which modern producers put every page in.

    Counting page objects (not trusting the page tree's ``/Count``) keeps a crafted ``/Count``
    from lowering a price; an incremental update that rewrites a page can count it twice.
    """

    def __init__(self) -> None:
        self._plain = _PageScan()
        self._objects = _PageScan()
        self._tail = b""  # the last plain bytes, so a marker split between chunks is found
        self._pending = b""  # plain bytes from an ObjStm's /Type up to its ``stream`` keyword
        self._inflate: zlib._Decompress | None = None

    def feed(self, chunk: bytes) -> None:
        data = chunk
        while data:
            if self._inflate is not None:
                data = self._feed_stream(data)
                continue
            if self._pending:
                data = self._pending + data
                self._pending = b""
                start = _PDF_STREAM.search(data)
                if start is None:
                    if len(data) < _MAX_DICT:
                        self._pending = data
                    return
                self._inflate = zlib.decompressobj()
                data = data[start.end():]
                continue
            joined = self._tail + data
            marker = _PDF_OBJSTM.search(joined)
            if marker is None:
                self._plain.feed(data)
                self._tail = joined[-_OVERLAP:]
                return
            if marker.start() > len(self._tail):
                self._plain.feed(data[:marker.start() - len(self._tail)])
            self._tail = b""
            self._pending, data = joined[marker.start():marker.end()], joined[marker.end():]

    def _feed_stream(self, data: bytes) -> bytes:
        """Inflate an object stream's bytes; what follows its end is returned as plain bytes."""
        assert self._inflate is not None
        try:
            out = self._inflate.decompress(data, _INFLATE_STEP)
            self._objects.feed(out)
            while self._inflate.unconsumed_tail and not self._inflate.eof:
                out = self._inflate.decompress(self._inflate.unconsumed_tail, _INFLATE_STEP)
                self._objects.feed(out)
        except zlib.error:  # not Flate (or encrypted): its pages cannot be seen here
            self._inflate = None
            return b""
        if self._inflate.eof:
            rest = self._inflate.unused_data
            self._inflate = None
            self._objects.feed(b"\n")
            return rest
        return b""

    def pages(self) -> int:
        return self._plain.total() + self._objects.total()


#: PWG 5102.4 page header: 1796 bytes; width, height, bits per pixel at these offsets.
_PWG_HEADER = 1796
_URF_HEADER = 32


class _RasterCounter(_Counter):
    """PWG raster (``RaS2``) and Apple raster (``UNIRAST``): pages are counted by decoding each
    page's run-length lines, so the count is the pages really in the stream (not a header's
    claim) and a truncated page still counts."""

    def __init__(self, pwg: bool) -> None:
        self._pwg = pwg
        self._buf = bytearray()
        self._count = 0
        self._state = "file"
        self._width = self._height = self._bpp = 0
        self._y = 0
        self._x = 0
        self._bad = False

    def feed(self, chunk: bytes) -> None:
        if self._bad:
            return
        self._buf += chunk
        pos = self._run(memoryview(self._buf))
        del self._buf[:pos]

    def _run(self, buf: memoryview) -> int:
        pos, n = 0, len(buf)
        while True:
            if self._state == "file":
                size = 4 if self._pwg else 12
                if n - pos < size:
                    return pos
                pos += size
                self._state = "header"
            elif self._state == "header":
                size = _PWG_HEADER if self._pwg else _URF_HEADER
                if n - pos < size:
                    return pos
                head = bytes(buf[pos:pos + size])
                if self._pwg:
                    width, self._height, self._bpp = _u32(head, 372), _u32(head, 376), _u32(head, 388)
                else:
                    self._bpp, width, self._height = head[0], _u32(head, 12), _u32(head, 16)
                pos += size
                if not (width and self._height and self._bpp in (1, 2, 4, 8, 16, 24, 32, 40, 48, 64)):
                    self._bad = True
                    return n
                # Runs count pixels of 8 bits or more, bytes of packed pixels below that.
                self._width = (width * self._bpp + 7) // 8 // max(1, self._bpp // 8)
                self._count += 1
                self._state, self._y = "line", 0
            elif self._state == "line":
                if self._y >= self._height:
                    self._state = "header"
                    continue
                if n - pos < 1:
                    return pos
                self._y += buf[pos] + 1
                pos += 1
                self._state, self._x = "run", 0
            else:  # run
                step = max(1, self._bpp // 8)
                while self._x < self._width:
                    if n - pos < 1:
                        return pos
                    code = buf[pos]
                    if code < 128:
                        if n - pos < 1 + step:
                            return pos
                        pos += 1 + step
                        self._x += code + 1
                    elif code == 128:
                        pos += 1
                        self._x = self._width
                    else:
                        count = 257 - code
                        if n - pos < 1 + count * step:
                            return pos
                        pos += 1 + count * step
                        self._x += count
                self._state = "line"

    def pages(self) -> int:
        return self._count


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "big")


def count_pages(path: Path, document_format: str) -> int:
    """Pages in the document at ``path`` (at least 1)."""
    counter = PageCounter(document_format)
    if counter.counts:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                counter.feed(chunk)
    return counter.pages


def impressions(pages: int, ticket: Mapping[str, Any] | None = None) -> int:
    """``job-impressions`` of one document of ``pages`` pages under a print ticket (IPP names).

    An impression is one sheet side with marks, per copy: the pages ``page-ranges`` selects,
    ``number-up`` of them to a side, times ``copies``. ``sides`` does not change it (it changes
    sheets, not sides). A document counts at least one impression per copy: a range past its
    end still makes the device feed a sheet, and a quota must not be slipped that way.
    """
    ticket = ticket or {}
    copies = max(1, int(ticket.get("copies") or 1))
    number_up = max(1, int(ticket.get("number-up") or 1))
    pages = max(1, pages)
    ranges = ticket.get("page-ranges")
    selected = pages if not ranges else sum(max(0, min(int(hi), pages) - int(lo) + 1) for lo, hi in ranges)
    return copies * max(1, math.ceil(selected / number_up))
