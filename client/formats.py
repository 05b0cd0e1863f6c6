"""Guess a document's MIME type from its first bytes, the way a printer would see it.

Names and extensions lie; the first bytes are what the device's interpreter acts on. Text is
only claimed when the bytes decode as UTF-8 and hold no control characters a plain-text
printer would choke on, so binary junk is sent as application/octet-stream (the service
then decides) rather than mislabelled.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"

#: How many leading bytes detection looks at.
SNIFF_SIZE = 4096

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"%!PS", "application/postscript"),  # ASCII, so must be recognised before the text test
    (b"RaS2", "image/pwg-raster"),
    (b"UNIRAST\x00", "image/urf"),
)

# Control characters other than TAB, LF, FF and CR mark a file as not plain text.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")


def detect_format(head: bytes) -> str:
    """MIME type of a document whose first bytes are ``head`` (give at least SNIFF_SIZE)."""
    head = head[:SNIFF_SIZE]
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if b"%PDF-" in head[:1024]:  # PDF readers accept junk before the header
        return "application/pdf"
    if not head:
        return OCTET_STREAM
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # final=False: a multi-byte character cut at SNIFF_SIZE is not an error.
        text = decoder.decode(head, final=len(head) < SNIFF_SIZE)
    except UnicodeDecodeError:
        return OCTET_STREAM
    if _NOT_TEXT.search(text):
        return OCTET_STREAM
    return TEXT_PLAIN


def detect_file_format(path: str | os.PathLike[str]) -> str:
    """MIME type of the file at ``path`` from its first bytes."""
    with Path(path).open("rb") as stream:
        return detect_format(stream.read(SNIFF_SIZE))
