"""PDF pages, rendered by PDFium (pypdfium2): the renderer Chrome prints with, fast, and
tolerant of the broken PDFs real producers write. Only the pages a job prints are rendered,
one at a time, each at the size of the box it fills on the sheet.

A page is drawn straight into the sheet's pixels (``draw``): PDFium writes 8-bit gray, or RGB
(its BGR with the byte order reversed), into the sheet's own memory, so no bitmap, Pillow image
or copy is made per page; the same pixels as pypdfium2's ``render``, which remains for a page
that must go through Pillow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from cloud_service.transform.page import FORMAT_ERROR, UNPRINTABLE, SourcePage, TransformError

#: Counter-clockwise turn in degrees -> PDFium's rotation (quarter turns clockwise).
_ROTATE = {0: 0, 90: 3, 180: 2, 270: 1}


class PdfSource:
    def __init__(self, path: Path, color: bool = True) -> None:
        self.color = color
        try:
            self.doc = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise TransformError(FORMAT_ERROR, f"the PDF cannot be read ({exc})") from None
        self.count = len(self.doc)
        if self.count < 1:
            raise TransformError(UNPRINTABLE, "the PDF has no pages")

    def pages(self) -> Iterator[SourcePage]:
        for index in range(self.count):
            page = self.doc[index]
            width, height = page.get_size()
            if width <= 0 or height <= 0:
                raise TransformError(UNPRINTABLE, f"page {index + 1} of the PDF has no size")
            yield SourcePage(width, height, _renderer(page, width, height, self.color), _drawer(page))

    def close(self) -> None:
        self.doc.close()


def _renderer(page: pdfium.PdfPage, width: float, height: float, color: bool):  # type: ignore[no-untyped-def]
    def render(box_width: int, box_height: int) -> Image.Image:
        scale = min(box_width / width, box_height / height)
        try:
            bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), may_draw_forms=True,
                                 grayscale=not color)
            return bitmap.to_pil()
        except pdfium.PdfiumError as exc:
            raise TransformError(UNPRINTABLE, f"a page of the PDF cannot be rendered ({exc})") from None
        finally:
            page.close()
    return render


def _drawer(page: pdfium.PdfPage):  # type: ignore[no-untyped-def]
    def draw(region: np.ndarray, turn: int) -> None:
        """Render the page into ``region`` (rows of gray or RGB bytes, any row stride)."""
        try:
            if region.dtype != np.uint8 or region.strides[1:] != ((3, 1) if region.ndim == 3 else (1,)):
                raise ValueError("the region's rows are not packed bytes")
            height, width = region.shape[:2]
            color = region.ndim == 3
            bitmap = pdfium_c.FPDFBitmap_CreateEx(width, height, pdfium_c.FPDFBitmap_BGR if color
                                                  else pdfium_c.FPDFBitmap_Gray, region.ctypes.data,
                                                  region.strides[0])
            if not bitmap:
                raise TransformError(UNPRINTABLE, "a page of the PDF cannot be rendered (no bitmap)")
            try:
                flags = pdfium_c.FPDF_ANNOT | (pdfium_c.FPDF_REVERSE_BYTE_ORDER if color else pdfium_c.FPDF_GRAYSCALE)
                pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, 0xFFFFFFFF)
                pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, 0, width, height, _ROTATE[turn], flags)
                if page.formenv:
                    pdfium_c.FPDF_FFLDraw(page.formenv, bitmap, page, 0, 0, width, height, _ROTATE[turn], flags)
            finally:
                pdfium_c.FPDFBitmap_Destroy(bitmap)
        finally:
            page.close()
    return draw
