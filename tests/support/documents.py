"""Documents for tests: PDFs with a known number of page objects."""

from __future__ import annotations

import os


def pdf_bytes(pages: int = 3, size: int = 200_000) -> bytes:
    body = b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 1) for i in range(pages))
    return b"%PDF-1.4\n" + body + os.urandom(size) + b"\n%%EOF\n"


def make_pdf(pages: int) -> bytes:
    """A minimal PDF with ``pages`` page objects (enough for counting, not for rendering)."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n",
        f"2 0 obj << /Type /Pages /Kids [{kids}] /Count {pages} >> endobj\n".encode(),
    ]
    objects += [
        f"{3 + i} 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >> endobj\n".encode() for i in range(pages)
    ]
    return b"%PDF-1.4\n" + b"".join(objects) + b"trailer << /Root 1 0 R >>\n%%EOF\n"
