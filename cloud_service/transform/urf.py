"""Apple raster (``image/urf``, "UNIRAST") writer: an 8-byte magic and a page count, then per
page a 32-byte header and the page's run-length coded lines (cloud_service.transform.rle).

URF has no public specification; the layout here is the one CUPS, cups-filters and
Ghostscript read and AirPrint printers take: bits per pixel, colour space (0 sGray, 1 sRGB),
duplex (1 none, 2 short edge, 3 long edge), quality, width, height and resolution, big-endian.
The page count in the file header is patched when the last page is written, so pages stream.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from cloud_service.transform.page import Sheet
from cloud_service.transform.rle import encode_page

MAGIC = b"UNIRAST\0"


def page_header(sheet: Sheet) -> bytes:
    width, height = sheet.size
    color = sheet.color
    duplex = 1 if not sheet.duplex else (2 if sheet.tumble else 3)
    return struct.pack(">BBBBII III II", 24 if color else 8, 1 if color else 0, duplex, sheet.quality,
                       0, 0, width, height, sheet.dpi, 0, 0)


class UrfWriter:
    format = "image/urf"

    def __init__(self, out: BinaryIO, total_pages: int) -> None:
        self.out = out
        self.pages = 0
        self._start = out.tell()
        out.write(MAGIC + struct.pack(">I", total_pages))

    def write(self, sheet: Sheet) -> None:
        self.out.write(page_header(sheet))
        self.out.write(encode_page(sheet.pixels))
        self.pages += 1

    def close(self) -> None:
        end = self.out.tell()
        self.out.seek(self._start + len(MAGIC))
        self.out.write(struct.pack(">I", self.pages))
        self.out.seek(end)
        self.out.flush()
