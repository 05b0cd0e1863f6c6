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


def count_pages(path: Path, document_format: str) -> int:
    """Pages in the document at ``path`` (at least 1)."""
    fmt = document_format.lower()
    if fmt == "application/pdf":
        return max(1, _count_pdf_pages(path))
    if fmt.startswith("text/"):
        return max(1, math.ceil(_count_lines(path) / LINES_PER_PAGE))
    return 1


def _count_pdf_pages(path: Path) -> int:
    count = 0
    carry = b""
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            data = carry + chunk
            at_end = not chunk
            # Away from the end, accept only matches with room after them for the look-ahead;
            # the rest of the buffer is carried into the next round so none is split or lost.
            limit = len(data) if at_end else len(data) - 1
            last_end = 0
            for match in _PDF_PAGE.finditer(data):
                if match.end() <= limit:
                    count += 1
                    last_end = match.end()
            if at_end:
                return count
            carry = data[max(last_end, len(data) - _OVERLAP) :]


def _count_lines(path: Path) -> int:
    lines = 0
    last = b""
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last and last != b"\n":
        lines += 1  # a last line without its newline is still a line
    return lines
