"""PDF pages, rendered by PDFium (pypdfium2): the renderer Chrome prints with, fast, and
tolerant of the broken PDFs real producers write. Only the pages a job prints are rendered,
one at a time, each at the size of the box it fills on the sheet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

from cloud_service.transform.page import FORMAT_ERROR, UNPRINTABLE, SourcePage, TransformError


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
            yield SourcePage(width, height, _renderer(page, width, height, self.color))

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
