"""PWG raster (PWG 5102.4, ``image/pwg-raster``) writer: a sync word, then per page a 1796-byte
header and the page's run-length coded lines (cloud_service.transform.rle).

Only what PWG 5102.4 requires is written: 8-bit sGray or 24-bit sRGB, chunky, one page per
header, big-endian integers, the other fields zero. Back sides of duplex sheets are turned by
the caller (cloud_service.transform.compose) as the device's ``pwg-raster-document-sheet-back``
asks, so the header's feed transforms stay 1.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from cloud_service.transform.page import Sheet
from cloud_service.transform.rle import encode_page

SYNC = b"RaS2"
HEADER_SIZE = 1796
SGRAY, SRGB = 18, 19


def _text(value: str, size: int = 64) -> bytes:
    return value.encode("ascii", "replace")[: size - 1].ljust(size, b"\0")


def page_header(sheet: Sheet, total_pages: int) -> bytes:
    """The 1796-byte header of one page."""
    width, height = sheet.size
    color = sheet.color
    head = bytearray(HEADER_SIZE)
    head[0:64] = _text("PwgRaster")
    head[64:128] = _text("")  # MediaColor
    head[128:192] = _text(sheet.media_type)
    head[192:256] = _text("")  # OutputType (print-content-optimize)

    def put(offset: int, *values: int) -> None:
        struct.pack_into(f">{len(values)}I", head, offset, *values)

    put(272, 1 if sheet.duplex else 0)  # Duplex
    put(276, sheet.dpi, sheet.dpi)  # HWResolution
    put(340, 1)  # NumCopies (copies are the device's, from the ticket)
    put(352, round(width * 72 / sheet.dpi), round(height * 72 / sheet.dpi))  # PageSize, points
    put(368, 1 if sheet.tumble else 0)  # Tumble
    put(372, width, height)  # cupsWidth, cupsHeight
    put(384, 8, 24 if color else 8, width * (3 if color else 1))  # bits/color, bits/pixel, bytes/line
    put(396, 0, SRGB if color else SGRAY)  # chunky; colour space
    put(420, 3 if color else 1)  # cupsNumColors
    put(452, total_pages, 1, 1)  # TotalPageCount, CrossFeedTransform, FeedTransform
    put(484, sheet.quality)  # PrintQuality
    head[1732:1796] = _text(sheet.media_name)  # cupsPageSizeName
    return bytes(head)


class PwgRasterWriter:
    """Writes pages as they come: memory is one page whatever the document's length."""

    format = "image/pwg-raster"

    def __init__(self, out: BinaryIO, total_pages: int) -> None:
        self.out = out
        self.total_pages = total_pages
        self.pages = 0
        out.write(SYNC)

    def write(self, sheet: Sheet) -> None:
        self.out.write(page_header(sheet, self.total_pages))
        self.out.write(encode_page(sheet.pixels))
        self.pages += 1

    def close(self) -> None:
        self.out.flush()
