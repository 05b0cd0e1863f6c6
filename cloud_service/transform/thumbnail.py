"""One page of a PDF as a small PNG: the console's glance at a scan (docs/console.md).

``render`` runs in a worker process of its own ``Transformer`` (``Transformer.thumbnail``), never
in the service's threads. PDFium is not thread-safe: two threads in it at once, even on two
documents, can fail to load a page, draw the wrong one, or crash the process (pypdfium2 says so,
and six threads drawing at once here did the first two). And the PDF came from a device: a crash
on a hostile one ends a worker, not the service.
"""

from __future__ import annotations

from typing import NamedTuple

#: A thumbnail's width in pixels; its height follows the page, capped at twice that.
WIDTH = 160
#: Longest one page may take to draw: a thumbnail is a glance, and a page that takes longer is
#: answered as one that cannot be drawn (its worker is killed).
TIMEOUT = 60.0


class Thumbnail(NamedTuple):
    """What rendering one page gave: the PNG (None past the last page, or when ``error`` says
    why the PDF could not be drawn) and the PDF's page count (0 when it could not be read)."""

    png: bytes | None
    pages: int
    error: str | None = None


def render(data: bytes, page_number: int) -> Thumbnail:
    """Page ``page_number`` (from 1) of the PDF ``data`` as a PNG ``WIDTH`` pixels wide.

    Errors come back as ``Thumbnail.error``, not raised: an exception crossing the process
    boundary is pickled, and pypdfium2's own do not unpickle."""
    import io

    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except Exception as exc:  # pypdfium2.PdfiumError: not a PDF, or one PDFium cannot read
        return Thumbnail(None, 0, str(exc))
    try:
        count = len(doc)
        if page_number > count:
            return Thumbnail(None, count)
        page = doc[page_number - 1]
        try:
            width, height = page.get_size()
            scale = min(WIDTH / width, 2 * WIDTH / height)
            image = page.render(scale=scale, fill_color=(255, 255, 255, 255)).to_pil()
        finally:
            page.close()
    except Exception as exc:  # a page PDFium cannot load or draw
        return Thumbnail(None, 0, str(exc))
    finally:
        doc.close()
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", optimize=True)
    return Thumbnail(out.getvalue(), count)
