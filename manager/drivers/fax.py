"""Fax modem drivers: the ``FaxDriver`` interface and the ``simulated-modem``.

A fax driver sends one document to one destination per call and says how it went:
``completed`` (with the pages sent), ``busy``, ``no-answer`` or ``failed``. The retry
policy (which outcomes are dialled again, how often, how long apart) is the Manager's
(schemas.model.fax), so every modem driver gets the same one.

The simulated modem renders the document to fax pages (bilevel, 1728 pixels wide, at the
job's ``printer-resolution``, e.g. 204x98 or 204x196 dpi) and writes one multi-page TIFF
(CCITT Group 4) per destination into ``output_dir``, as a receiving fax machine would print
it. Images are scaled and dithered to the page; text is typeset; a PDF becomes one page per
PDF page with its name and page number (it is not rasterised: no PDF renderer is assumed).
It answers ``busy`` or ``no-answer`` for the numbers listed in its options, for every dial
or only for the first ``fail_attempts`` dials of each number.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from manager.drivers.base import DeviceDriver, DriverOptions, JobRefused, PrintCanceled
from schemas.enums import Reason
from schemas.model.fax import FaxSettings
from schemas.model.pages import count_pages
from schemas.tickets import FaxOutJobTicket

log = logging.getLogger("cloudimaging.manager.fax")

#: What the simulated modem offers as `cloudimaging up` configures it (PWG 5100.15 names).
SIMULATED_MODEM_CAPABILITIES: dict[str, Any] = {
    "destination-uri-schemes-supported": ["tel"],
    "multiple-destination-uris-supported": True,
    "destination-uris-max": 8,
    "printer-resolution-supported": [[204, 98], [204, 196], [204, 392]],
    "printer-resolution-default": [204, 98],
    "number-of-retries-supported": [0, 5],
    "number-of-retries-default": 2,
    "retry-interval-supported": [0, 600],
    "retry-interval-default": 5,
    "document-format-supported": ["application/pdf", "image/jpeg", "image/png", "text/plain"],
    "document-format-default": "application/pdf",
}

#: Fax page width in pixels (ITU-T T.4, 215 mm at 204 dpi) and A4 length in inches.
FAX_WIDTH = 1728
PAGE_INCHES = 11.69
DialOutcome = Literal["completed", "busy", "no-answer", "failed"]


@dataclass(frozen=True)
class FaxJob:
    job_id: int
    service: str
    ticket: FaxOutJobTicket
    settings: FaxSettings


@dataclass(frozen=True)
class DialResult:
    outcome: DialOutcome
    pages: int = 0
    message: str | None = None


class FaxDriver(DeviceDriver):
    """Base of modem drivers: ``send`` one document to one destination."""

    def check_fax(self, job: FaxJob) -> None:
        """Raise JobRefused for a job the capabilities did not rule out."""

    @abstractmethod
    async def send(self, job: FaxJob, destination: str, path: Path, document_format: str,
                   progress: Callable[[int], None]) -> DialResult:
        """Dial and transmit; raise PrintCanceled after cancel(job_id), DriverError on a modem fault."""



class SimulatedModemOptions(DriverOptions):
    #: Where the received faxes (TIFF) go; ``{state_dir}/output/{service}`` when not given.
    output_dir: Path | None = None
    #: Numbers (tel: URIs) that answer busy / do not answer.
    busy: list[str] = []
    no_answer: list[str] = []
    #: Answer busy / no-answer only for the first N dials of those numbers (None: always).
    fail_attempts: Annotated[int, Field(ge=1)] | None = None
    #: Transmission time per page (the delay makes cancel mid-fax testable).
    seconds_per_page: Annotated[float, Field(ge=0, le=600)] = 0.2
    reject: bool = False


class SimulatedModem(FaxDriver):
    kind = "simulated-modem"
    Options = SimulatedModemOptions
    options: SimulatedModemOptions

    def __init__(self, name: str, options: dict[str, object], state_dir: Path) -> None:
        super().__init__(name, options, state_dir)
        self.output_dir = self.options.output_dir or self.state_dir / "output" / name
        self._cancel: dict[int, asyncio.Event] = {}
        #: Dials per destination so far (for ``fail_attempts``).
        self.dials: dict[str, int] = {}

    async def open(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def check_fax(self, job: FaxJob) -> None:
        if self.options.reject:
            raise JobRefused(Reason.ABORTED_BY_SYSTEM, "the simulated modem rejects every job")

    def cancel(self, job_id: int) -> None:
        self._cancel.setdefault(job_id, asyncio.Event()).set()

    async def end_job(self, job_id: int, state: object) -> None:
        self._cancel.pop(job_id, None)

    async def send(self, job: FaxJob, destination: str, path: Path, document_format: str,
                   progress: Callable[[int], None]) -> DialResult:
        canceled = self._cancel.setdefault(job.job_id, asyncio.Event())
        if canceled.is_set():
            raise PrintCanceled(f"job {job.job_id} canceled")
        self.dials[destination] = dials = self.dials.get(destination, 0) + 1
        failing = self.options.fail_attempts is None or dials <= self.options.fail_attempts
        if destination in self.options.busy and failing:
            return DialResult("busy", 0, f"{destination} is busy")
        if destination in self.options.no_answer and failing:
            return DialResult("no-answer", 0, f"{destination} does not answer")
        pages = await asyncio.to_thread(fax_pages, path, document_format, job.settings.resolution)
        for number in range(1, len(pages) + 1):
            try:
                await asyncio.wait_for(canceled.wait(), timeout=self.options.seconds_per_page)
                raise PrintCanceled(f"job {job.job_id} canceled")
            except TimeoutError:
                progress(number)
        name = f"job-{job.job_id}-{re.sub(r'[^0-9A-Za-z+]', '', destination.removeprefix('tel:'))}.tiff"
        await asyncio.to_thread(write_tiff, pages, self.output_dir / name, job.settings.resolution)
        return DialResult("completed", len(pages))


# ---------------------------------------------------------------------------- fax pages


def fax_pages(path: Path, document_format: str, resolution: tuple[int, int]) -> list:  # list[PIL.Image.Image]
    """The document as bilevel fax pages at ``resolution`` (x, y dpi)."""
    from PIL import Image, ImageDraw, ImageOps

    x_dpi, y_dpi = resolution
    size = (FAX_WIDTH * x_dpi // 204, round(PAGE_INCHES * y_dpi))

    def blank() -> Image.Image:
        return Image.new("L", size, 255)

    pages: list[Image.Image] = []
    if document_format in ("image/jpeg", "image/png", "image/tiff"):
        with Image.open(path) as source:
            image = ImageOps.exif_transpose(source).convert("L")
        # Square source pixels become fax pixels that are twice as tall at 204x98.
        image = image.resize((size[0], max(1, round(image.height * size[0] / image.width * y_dpi / x_dpi))))
        page = blank()
        page.paste(image.crop((0, 0, size[0], min(image.height, size[1]))), (0, 0))
        pages.append(page)
    elif document_format == "text/plain":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() or [""]
        per_page = 60
        for start in range(0, len(lines), per_page):
            page = blank()
            draw = ImageDraw.Draw(page)
            for i, line in enumerate(lines[start:start + per_page]):
                draw.text((40, 20 + i * size[1] // (per_page + 2)), line[:160], fill=0)
            pages.append(page)
    else:
        count = count_pages(path, document_format)
        for number in range(1, count + 1):
            page = blank()
            draw = ImageDraw.Draw(page)
            draw.rectangle((20, 20, size[0] - 21, size[1] - 21), outline=0, width=3)
            draw.text((60, 60), f"{path.name}: page {number} of {count} ({document_format})", fill=0)
            pages.append(page)
    return [p.convert("1") for p in pages]


def write_tiff(pages: list, dest: Path, resolution: tuple[int, int]) -> None:
    """A multi-page bilevel TIFF (CCITT Group 4) with the fax resolution recorded."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    pages[0].save(tmp, "TIFF", compression="group4", dpi=resolution, save_all=True, append_images=pages[1:])
    tmp.replace(dest)
