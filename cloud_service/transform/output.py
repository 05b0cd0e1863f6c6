"""PDF and JPEG writers (Pillow), beside the raster writers of pwgraster.py and urf.py.

PDF output is for devices that take PDF but not the document's format (an image or text):
each sheet is one page, appended to the file as it is made (Pillow's incremental append), so
memory stays one page. JPEG holds one page: a document that makes more is unprintable on a
device whose only fitting format is JPEG.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from cloud_service.transform.page import UNPRINTABLE, Sheet, TransformError


class PdfWriter:
    format = "application/pdf"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pages = 0

    def write(self, sheet: Sheet) -> None:
        sheet.image.save(self.path, "PDF", resolution=float(sheet.dpi), append=self.pages > 0)
        self.pages += 1

    def close(self) -> None:
        return None


class JpegWriter:
    format = "image/jpeg"

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pages = 0

    def write(self, sheet: Sheet) -> None:
        if self.pages:
            raise TransformError(UNPRINTABLE, "the document has more than one page, and the device's only "
                                              "fitting format (image/jpeg) holds one")
        sheet.image.save(self.out, "JPEG", quality=92, dpi=(sheet.dpi, sheet.dpi))
        self.pages += 1

    def close(self) -> None:
        self.out.flush()
