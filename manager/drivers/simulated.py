"""The ``simulated`` driver: a printer that takes time, jams, runs out of paper and fails.

It exists so the whole system (service states, job states, cancel, exactly-once printing)
can be exercised without hardware. It prints ``pages_per_second`` impressions per second
and follows a script of events, each fired once, keyed by the running count of impressions
the printer has made since it started (so "page 3" is the third sheet side ever printed):

    {"at_page": 3, "event": "media-jam", "seconds": 2}   stopped with media-jam, then resumes
    {"at_page": 5, "event": "media-empty", "seconds": 1} stopped with media-empty, then resumes
    {"at_page": 7, "event": "fail"}                      the job printing page 7 is aborted

``supplies`` are the markers it reports (a colour laser's four toners and its waste box by
default, at fixed levels). ``reject: true`` refuses every job at fetch. Every job whose last document has left the
printer appends one line with its job id to ``{output_dir}/printed.log``, so a test can check
a job was printed exactly once. The line is written when the paper is out, not when the
Manager later ends the job: a Manager killed in between still leaves a true count.
Cancel stops between pages (and during a jam).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from manager.drivers.base import (
    DeviceStatus,
    DocumentTask,
    DriverError,
    DriverOptions,
    JobRefused,
    PrintCanceled,
    PrintDriver,
    PrintJob,
    Progress,
)
from schemas.enums import JobState, Reason
from schemas.model.pages import count_pages
from schemas.supplies import Supplies, Supply
from schemas.text import Keyword

log = logging.getLogger("cloudimaging.manager.simulated")

#: What the simulated printer offers (as `cloudimaging up` configures it): enough variety to try
#: every ticket attribute.
SIMULATED_PRINTER_CAPABILITIES: dict[str, Any] = {
    "copies-supported": [1, 99],
    "sides-supported": ["one-sided", "two-sided-long-edge", "two-sided-short-edge"],
    "media-supported": ["iso_a4_210x297mm", "na_letter_8.5x11in", "iso_a5_148x210mm", "na_legal_8.5x14in"],
    "media-default": "iso_a4_210x297mm",
    "print-color-mode-supported": ["auto", "monochrome", "color"],
    "print-color-mode-default": "auto",
    "print-quality-supported": [3, 4, 5],
    "orientation-requested-supported": [3, 4, 5, 6],
    "page-ranges-supported": True,
    "number-up-supported": [1, 2, 4],
    "finishings-supported": [3, 4, 5],
    "document-format-supported": ["application/pdf", "image/jpeg", "image/png", "text/plain"],
}

#: The printer of ``cloudimaging up``: like many IPP Everywhere printers it takes only PWG raster
#: and JPEG, so a PDF, PNG or text document reaches it transformed by the service.
RASTER_PRINTER_CAPABILITIES: dict[str, Any] = {
    **SIMULATED_PRINTER_CAPABILITIES,
    "document-format-supported": ["image/pwg-raster", "image/jpeg"],
    "document-format-default": "image/pwg-raster",
    "pwg-raster-document-resolution-supported": [150, 300],
    "pwg-raster-document-sheet-back": "normal",
}


#: The supplies the simulated printer reports (a colour laser printer part way through its toner).
SIMULATED_SUPPLIES: tuple[Supply, ...] = (
    Supply(name="Black Toner", type="toner", color="#000000", colorant="black", level=72, low_level=10),
    Supply(name="Cyan Toner", type="toner", color="#00FFFF", colorant="cyan", level=58, low_level=10),
    Supply(name="Magenta Toner", type="toner", color="#FF00FF", colorant="magenta", level=41,
           low_level=10),
    Supply(name="Yellow Toner", type="toner", color="#FFFF00", colorant="yellow", level=66, low_level=10),
    Supply(name="Waste Toner Box", type="waste-toner", level=18, high_level=90),
)


class ScriptEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at_page: Annotated[int, Field(ge=1)]
    event: Literal["media-empty", "media-jam", "fail"]
    #: How long the printer stays stopped (media-empty, media-jam).
    seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    message: str | None = None


class SimulatedOptions(DriverOptions):
    pages_per_second: Annotated[float, Field(gt=0, le=100_000)] = 20.0
    #: Where printed.log goes; ``{state_dir}/output/{service}`` when not given.
    output_dir: Path | None = None
    script: list[ScriptEvent] = []
    reject: bool = False
    reject_reason: Keyword = "aborted-by-system"
    #: The supplies (markers) reported with the service's attributes.
    supplies: Supplies = list(SIMULATED_SUPPLIES)


class SimulatedDriver(PrintDriver):
    kind = "simulated"
    Options = SimulatedOptions
    options: SimulatedOptions

    def __init__(self, name: str, options: dict[str, object], state_dir: Path) -> None:
        super().__init__(name, options, state_dir)
        self.output_dir = self.options.output_dir or self.state_dir / "output" / name
        self.printed_log = self.output_dir / "printed.log"
        #: Impressions made since start; script events are keyed by it.
        self.pages_printed = 0
        self.identified: list[tuple[tuple[str, ...], str | None]] = []
        self._pending_events = sorted(self.options.script, key=lambda e: e.at_page)
        self._cancel: dict[int, asyncio.Event] = {}
        self.supplies = tuple(self.options.supplies)

    async def open(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def check_job(self, job: PrintJob) -> None:
        if self.options.reject:
            raise JobRefused(self.options.reject_reason, "the simulated printer rejects every job")

    def _cancel_event(self, job_id: int) -> asyncio.Event:
        return self._cancel.setdefault(job_id, asyncio.Event())

    async def print_document(self, task: DocumentTask, path: Path, progress: Progress) -> int:
        job_id = task.job.job_id
        canceled = self._cancel_event(job_id)
        pages = await asyncio.to_thread(count_pages, path, task.document_format)
        log.info("job %d document %d received: %s, %d page(s)%s", job_id, task.document_number,
                 task.document_format, pages, await asyncio.to_thread(raster_geometry, path, task.document_format))
        impressions = pages * task.job.copies
        page_time = 1.0 / self.options.pages_per_second
        for done in range(impressions):
            if canceled.is_set():
                raise PrintCanceled(f"job {job_id} canceled")
            await self._run_events(job_id, canceled)
            if await _wait(canceled, page_time):
                raise PrintCanceled(f"job {job_id} canceled")
            self.pages_printed += 1
            progress(done + 1)
        if task.document_number >= task.job.document_count:
            await asyncio.to_thread(self._log_printed, job_id)
        return impressions

    async def _run_events(self, job_id: int, canceled: asyncio.Event) -> None:
        """Fire the script events due at the page about to be printed."""
        page = self.pages_printed + 1
        while self._pending_events and self._pending_events[0].at_page <= page:
            event = self._pending_events.pop(0)
            if event.event == "fail":
                raise DriverError(event.message or f"simulated failure at page {page}", (Reason.ABORTED_BY_SYSTEM,))
            reason = Reason.MEDIA_EMPTY if event.event == "media-empty" else Reason.MEDIA_JAM
            log.info("simulated %s at page %d for %.1f s (job %d)", reason, page, event.seconds, job_id)
            self.set_status(DeviceStatus(stopped=True, reasons=(reason,), message=event.message))
            try:
                if await _wait(canceled, event.seconds):
                    raise PrintCanceled(f"job {job_id} canceled")
            finally:
                self.set_status(DeviceStatus())

    def cancel(self, job_id: int) -> None:
        self._cancel_event(job_id).set()

    async def end_job(self, job_id: int, state: JobState) -> None:
        self._cancel.pop(job_id, None)

    def _log_printed(self, job_id: int) -> None:
        with self.printed_log.open("a", encoding="ascii") as f:
            f.write(f"{job_id}\n")
            f.flush()
            os.fsync(f.fileno())

    async def identify(self, actions: Sequence[str], message: str | None) -> None:
        self.identified.append((tuple(actions), message))


def raster_geometry(path: Path, document_format: str) -> str:
    """", W x H pixels at R dpi" from the first page header of PWG raster or URF (else "")."""
    with path.open("rb") as f:
        head = f.read(4 + 1796)
    if document_format == "image/pwg-raster" and head[:4] == b"RaS2" and len(head) >= 4 + 1796:
        header = head[4:]
        width, height = (int.from_bytes(header[o:o + 4], "big") for o in (372, 376))
        dpi = int.from_bytes(header[276:280], "big")
        return f", {width} x {height} pixels at {dpi} dpi"
    if document_format == "image/urf" and head[:8] == b"UNIRAST\0" and len(head) >= 44:
        header = head[12:44]
        width, height, dpi = (int.from_bytes(header[o:o + 4], "big") for o in (12, 16, 20))
        return f", {width} x {height} pixels at {dpi} dpi"
    return ""


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``event`` is set first; True if it was."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
