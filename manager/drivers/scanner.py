"""Scanner drivers: the ``ScanDriver`` interface and the ``simulated-scanner``.

A scan driver turns a validated scan ticket (its ``ScanSettings``, defaults filled in) into
output files: one PDF holding every page, or one JPEG/PNG per page (images hold one page).
It is a sibling of PrintDriver under DeviceDriver (options model, device status and
listeners, identify, open/close, cancel), so the Manager treats every service's device alike.

The simulated scanner makes real images with Pillow (and PDFs with img2pdf) that honour the
resolution (pixels and the dpi recorded in the file), the color mode (RGB, 8-bit gray or
1-bit), the size or region, and the page count: 1 from the platen, ``adf_sheets`` from the
feeder, twice that in duplex. Cancel stops between pages.
"""

from __future__ import annotations

import asyncio
import io
import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from manager.drivers.base import DeviceDriver, DriverError, DriverOptions, JobRefused, PrintCanceled
from schemas.enums import Reason
from schemas.model.scan import ScanSettings
from schemas.tickets import ScanJobTicket

log = logging.getLogger("cloudimaging.manager.scanner")

#: What the simulated scanner offers as `cloudimaging up` configures it (PWG 5100.17 names).
SIMULATED_SCANNER_CAPABILITIES: dict[str, Any] = {
    "input-source-supported": ["platen", "adf"],
    "input-source-default": "platen",
    "input-sides-supported": ["one-sided", "two-sided-long-edge", "two-sided-short-edge"],
    "input-resolution-supported": [75, 150, 300],
    "input-resolution-default": 150,
    "input-color-mode-supported": ["color", "monochrome", "bi-level"],
    "input-color-mode-default": "color",
    "input-media-supported": ["iso_a4_210x297mm", "na_letter_8.5x11in", "iso_a5_148x210mm"],
    "input-media-default": "iso_a4_210x297mm",
    "input-scan-regions-supported": True,
    "document-format-supported": ["application/pdf", "image/jpeg", "image/png"],
    "document-format-default": "application/pdf",
}

#: Called with the pages scanned so far.
ScanProgress = Callable[[int], None]


@dataclass(frozen=True)
class ScanJob:
    job_id: int
    service: str
    ticket: ScanJobTicket
    settings: ScanSettings


@dataclass(frozen=True)
class ScannedDocument:
    """One output document, written by the driver, ready to upload."""

    path: Path
    document_format: str
    pages: int


class ScanDriver(DeviceDriver):
    """Base of scanner drivers: ``scan`` is the work; ``cancel`` stops it between pages."""

    def check_scan(self, job: ScanJob) -> None:
        """Raise JobRefused for a job the capabilities did not rule out."""

    @abstractmethod
    async def scan(self, job: ScanJob, out_dir: Path, progress: ScanProgress) -> list[ScannedDocument]:
        """Scan every page; raise PrintCanceled after cancel(job_id), DriverError on a fault."""



class SimulatedScannerOptions(DriverOptions):
    #: Pages scanned per second (the delay makes cancel mid-scan testable).
    pages_per_second: Annotated[float, Field(gt=0, le=1000)] = 4.0
    #: Sheets in the document feeder; 0 is an empty feeder (an ADF job fails with media-empty).
    adf_sheets: Annotated[int, Field(ge=0, le=500)] = 3
    #: Fail the job when this page (1-based, of the job) is reached: a simulated jam.
    fail_at_page: Annotated[int, Field(ge=1)] | None = None
    reject: bool = False


class SimulatedScanner(ScanDriver):
    kind = "simulated-scanner"
    Options = SimulatedScannerOptions
    options: SimulatedScannerOptions

    def __init__(self, name: str, options: dict[str, object], state_dir: Path) -> None:
        super().__init__(name, options, state_dir)
        self._cancel: dict[int, asyncio.Event] = {}
        self.scanned_pages = 0

    def check_scan(self, job: ScanJob) -> None:
        if self.options.reject:
            raise JobRefused(Reason.ABORTED_BY_SYSTEM, "the simulated scanner rejects every job")

    def cancel(self, job_id: int) -> None:
        self._cancel.setdefault(job_id, asyncio.Event()).set()

    def page_count(self, settings: ScanSettings) -> int:
        if settings.input_source != "adf":
            return 1
        return self.options.adf_sheets * (2 if settings.duplex else 1)

    async def scan(self, job: ScanJob, out_dir: Path, progress: ScanProgress) -> list[ScannedDocument]:
        canceled = self._cancel.setdefault(job.job_id, asyncio.Event())
        try:
            settings = job.settings
            pages = self.page_count(settings)
            if pages == 0:
                raise DriverError("the document feeder is empty", (Reason.MEDIA_EMPTY,))
            images: list[bytes] = []
            for number in range(1, pages + 1):
                if self.options.fail_at_page is not None and number >= self.options.fail_at_page:
                    raise DriverError(f"simulated jam at page {number}", (Reason.MEDIA_JAM,))
                try:
                    await asyncio.wait_for(canceled.wait(), timeout=1.0 / self.options.pages_per_second)
                    raise PrintCanceled(f"job {job.job_id} canceled")
                except TimeoutError:
                    pass
                images.append(await asyncio.to_thread(render_page, settings, job.job_id, number, pages))
                self.scanned_pages += 1
                progress(number)
            if canceled.is_set():
                raise PrintCanceled(f"job {job.job_id} canceled")
            return await asyncio.to_thread(write_output, settings, images, out_dir, job.job_id)
        finally:
            self._cancel.pop(job.job_id, None)


# ---------------------------------------------------------------------------- images


def render_page(settings: ScanSettings, job_id: int, number: int, pages: int) -> bytes:
    """One scanned page as PNG (lossless, so the output format decides the compression)."""
    from PIL import Image, ImageDraw

    width, height = settings.pixels
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    unit = max(1, min(width, height) // 20)
    # Colour bars, a grey ramp and a frame: a page whose colours and geometry can be checked.
    for i, color in enumerate(("#d62728", "#2ca02c", "#1f77b4", "#ffbf00")):
        draw.rectangle((unit + i * 2 * unit, unit, unit + (i * 2 + 1) * unit, 3 * unit), fill=color)
    for i in range(10):
        shade = 25 * i
        draw.rectangle((unit + i * unit, 4 * unit, unit + (i + 1) * unit, 5 * unit), fill=(shade, shade, shade))
    draw.rectangle((0, 0, width - 1, height - 1), outline="black", width=max(1, unit // 8))
    draw.text((unit, 6 * unit), f"cloudimaging simulated scan - job {job_id} - page {number} of {pages}",
              fill="black")
    draw.text((unit, 7 * unit), f"{settings.resolution} dpi {settings.color_mode} {settings.media}", fill="black")
    mode = {"color": "RGB", "monochrome": "L", "bi-level": "1"}.get(settings.color_mode, "RGB")
    if mode != "RGB":
        page = page.convert(mode)
    out = io.BytesIO()
    page.save(out, "PNG", dpi=(settings.resolution, settings.resolution))
    return out.getvalue()


def write_output(settings: ScanSettings, pages: list[bytes], out_dir: Path, job_id: int) -> list[ScannedDocument]:
    """Write the pages as one PDF, or as one JPEG/PNG file per page."""
    import img2pdf
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = settings.document_format
    dpi = (settings.resolution, settings.resolution)
    if fmt == "application/pdf":
        embedded = []
        for data in pages:
            image = Image.open(io.BytesIO(data))
            if image.mode == "1":
                embedded.append(data)  # 1-bit PNG: kept lossless and bilevel in the PDF
                continue
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85, dpi=dpi)
            embedded.append(buffer.getvalue())
        path = out_dir / f"scan-{job_id}.pdf"
        path.write_bytes(img2pdf.convert(embedded))
        return [ScannedDocument(path, fmt, len(pages))]
    documents = []
    for number, data in enumerate(pages, start=1):
        if fmt == "image/png":
            path = out_dir / f"scan-{job_id}-{number}.png"
            path.write_bytes(data)
        else:
            path = out_dir / f"scan-{job_id}-{number}.jpg"
            Image.open(io.BytesIO(data)).save(path, "JPEG", quality=85, dpi=dpi)
        documents.append(ScannedDocument(path, fmt, 1))
    return documents
