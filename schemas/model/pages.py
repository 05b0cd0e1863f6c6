"""Cheap page counting for drivers that do not render: enough to report impressions.

Reads the file in chunks so memory stays constant whatever the document size.
PDF: the number of ``/Type /Page`` objects (pages hidden in compressed object streams are
not seen; such a PDF counts as 1 page). Text: 60 lines per page. Anything else: 1 page.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

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

    So a store can count while it writes, and never reads a document back to count it.
    """

    def __init__(self, document_format: str) -> None:
        fmt = document_format.lower()
        self._kind = "pdf" if fmt == "application/pdf" else "text" if fmt.startswith("text/") else "other"
        self._count = 0
        self._carry = b""
        self._last = b""

    @property
    def counts(self) -> bool:
        """False for formats counted as one page whatever their bytes (nothing to feed)."""
        return self._kind != "other"

    def feed(self, chunk: bytes) -> None:
        if not chunk or self._kind == "other":
            return
        if self._kind == "text":
            self._count += chunk.count(b"\n")
            self._last = chunk[-1:]
            return
        data = self._carry + chunk
        # Away from the end, accept only matches with room after them for the look-ahead;
        # the rest of the buffer is carried into the next chunk so none is split or lost.
        last_end = 0
        for match in _PDF_PAGE.finditer(data):
            if match.end() <= len(data) - 1:
                self._count += 1
                last_end = match.end()
        self._carry = data[max(last_end, len(data) - _OVERLAP) :]

    @property
    def pages(self) -> int:
        """Pages in what was fed so far, as if it ended here (at least 1)."""
        if self._kind == "pdf":
            return max(1, self._count + sum(1 for _ in _PDF_PAGE.finditer(self._carry)))
        if self._kind == "text":
            # A last line without its newline is still a line.
            lines = self._count + (1 if self._last and self._last != b"\n" else 0)
            return max(1, math.ceil(lines / LINES_PER_PAGE))
        return 1


def count_pages(path: Path, document_format: str) -> int:
    """Pages in the document at ``path`` (at least 1)."""
    counter = PageCounter(document_format)
    if counter.counts:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                counter.feed(chunk)
    return counter.pages
