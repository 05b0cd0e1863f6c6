"""One transform, start to end, in a worker process: read the source page by page, compose the
sheets, write them; report what it cost. Nothing here touches the event loop or the database."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from cloud_service.transform.compose import sheet_count, sheets
from cloud_service.transform.page import FORMAT_ERROR, UNPRINTABLE, Layout, TransformError


@dataclass(frozen=True)
class Outcome:
    """What a transform made (pages read, sheet sides written, seconds), or why it failed."""

    pages_in: int = 0
    pages_out: int = 0
    seconds: float = 0.0
    reason: str | None = None
    message: str | None = None


def transform_file(source: Path, source_format: str, target: Path, target_format: str, layout: Layout) -> Outcome:
    """Transform ``source`` into ``target``; failures come back as an Outcome with a reason."""
    started = time.monotonic()
    try:
        pages_in, pages_out = _transform(source, source_format, target, target_format, layout)
    except TransformError as exc:
        return Outcome(seconds=time.monotonic() - started, reason=exc.reason, message=exc.message)
    except MemoryError:
        return Outcome(seconds=time.monotonic() - started, reason=UNPRINTABLE,
                       message="the document needs more memory to print than the service allows")
    except Exception as exc:  # a reader's bug on hostile input must not take the service down
        return Outcome(seconds=time.monotonic() - started, reason=FORMAT_ERROR,
                       message=f"the document cannot be transformed ({type(exc).__name__}: {str(exc)[:200]})")
    return Outcome(pages_in, pages_out, time.monotonic() - started)


def _open(source: Path, source_format: str, layout: Layout):  # type: ignore[no-untyped-def]
    source_format = source_format.split(";", 1)[0].strip().lower()  # text/plain; charset=utf-8
    if source_format == "application/pdf":
        from cloud_service.transform.pdf import PdfSource
        return PdfSource(source, layout.color)
    if source_format in ("image/jpeg", "image/png"):
        from cloud_service.transform.image import ImageSource
        return ImageSource(source)
    if source_format == "text/plain":
        from cloud_service.transform.text import TextSource
        left, top, right, bottom = layout.printable_box
        return TextSource(source, (right - left) / (bottom - top))
    raise TransformError(FORMAT_ERROR, f"{source_format} cannot be transformed")


def _transform(source: Path, source_format: str, target: Path, target_format: str,
               layout: Layout) -> tuple[int, int]:
    reader = _open(source, source_format, layout)
    try:
        total = sheet_count(reader.count, layout) if reader.count else 0
        if total == 0 and reader.count:
            raise TransformError(UNPRINTABLE, "page-ranges select no page of the document")
        with contextlib.ExitStack() as stack:
            if target_format == "application/pdf":
                from cloud_service.transform.output import PdfWriter
                writer = PdfWriter(target)
            else:
                out = stack.enter_context(target.open("wb"))
                if target_format == "image/pwg-raster":
                    from cloud_service.transform.pwgraster import PwgRasterWriter
                    writer = PwgRasterWriter(out, total)
                elif target_format == "image/urf":
                    from cloud_service.transform.urf import UrfWriter
                    writer = UrfWriter(out, total)
                elif target_format == "image/jpeg":
                    from cloud_service.transform.output import JpegWriter
                    writer = JpegWriter(out)
                else:
                    raise TransformError(FORMAT_ERROR, f"the service cannot write {target_format}")
            pages_in = 0

            def counted():  # type: ignore[no-untyped-def]
                nonlocal pages_in
                for page in reader.pages():
                    pages_in += 1
                    yield page

            for sheet in sheets(counted(), layout):
                writer.write(sheet)
            writer.close()
        if writer.pages == 0:
            raise TransformError(UNPRINTABLE, "the document has no page to print")
        return pages_in, writer.pages
    finally:
        reader.close()
