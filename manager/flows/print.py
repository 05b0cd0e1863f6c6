"""The print flow: a claimed print job on its printer, document by document.

job-status processing (or processing-stopped if the printer is stopped) -> per document not
yet done: document-status processing, download (verified), print, document-status completed
-> the Outcome. A document is journaled as printing before the driver gets it, and as done
right after, so a restart never prints it twice (docs/reliability.md).

The download starts as the document-status processing report goes out rather than after its
answer, so the two overlap; nothing is printed before that answer, which may say the job was
canceled. The printer's own state (``attributes``, processing) is published after that answer,
so the service judges the job's reports first and records the printer's state while the
device downloads and prints.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from manager.channel import JobChannel
from manager.drivers.base import DocumentTask, DriverError, PrintCanceled, PrintDriver, PrintJob
from manager.flows.base import CANCELED, COMPLETED, FlowContext, Outcome
from manager.jobbook import JobRecord
from manager.services import ServiceRuntime
from manager.transfer import DownloadError
from schemas.enums import DocumentState, JobState, Reason
from schemas.tickets import PrintJobTicket

log = logging.getLogger("cloudimaging.manager")


class _Canceled(Exception):
    """A cancel was requested while the job ran."""


def _discard_download(fetching: asyncio.Future[tuple[Path, object]]) -> None:
    """Remove a document downloaded for a job that ended before it could be printed."""
    if not fetching.cancelled() and fetching.exception() is None:
        fetching.result()[0].unlink(missing_ok=True)


def print_job(record: JobRecord) -> PrintJob:
    """The job as a print driver sees it."""
    ticket = record.ticket if isinstance(record.ticket, PrintJobTicket) else PrintJobTicket()
    return PrintJob(job_id=record.job_id, service=record.service or "", ticket=ticket,
                    document_count=record.document_count)


class PrintFlow:
    """Prints a claimed job, bracketed by the driver's start_job/end_job."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx

    async def run(self, record: JobRecord, service: ServiceRuntime, channel: JobChannel) -> Outcome:
        driver = service.driver
        assert isinstance(driver, PrintDriver)
        record.start_work()
        self.ctx.book.save(record)
        job = print_job(record)
        await driver.start_job(job)
        outcome: Outcome = (JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), "interrupted")
        try:
            outcome = await self._documents(record, driver, job, channel)
            return outcome
        finally:
            try:
                await driver.end_job(record.job_id, outcome[0])
            except Exception:
                log.exception("job %d: driver end_job failed", record.job_id)

    async def _documents(self, record: JobRecord, driver: PrintDriver, job: PrintJob,
                         channel: JobChannel) -> Outcome:
        try:
            if driver.status.stopped:
                await channel.report_job(JobState.PROCESSING_STOPPED, (Reason.PRINTER_STOPPED,))
            else:
                await channel.report_job(JobState.PROCESSING, (Reason.JOB_PRINTING,))
            for number in range(1, record.document_count + 1):
                if number in record.documents_done:
                    continue
                outcome = await self._document(record, driver, job, number, channel)
                if outcome is not None:
                    return outcome
            return COMPLETED
        except _Canceled:
            return CANCELED

    async def _document(self, record: JobRecord, driver: PrintDriver, job: PrintJob, number: int,
                        channel: JobChannel) -> Outcome | None:
        """Download and print one document; an Outcome if the job ends here, else None."""
        if record.cancel_requested:
            raise _Canceled
        fetching = asyncio.ensure_future(self.ctx.download(record, number, channel))
        try:
            await channel.report_document(number, DocumentState.PROCESSING)
            if record.cancel_requested:
                raise _Canceled
        except BaseException:
            fetching.add_done_callback(_discard_download)
            raise
        self.ctx.publish_attributes()
        try:
            path, access = await fetching
        except DownloadError as exc:
            if exc.kind == "canceled" or record.cancel_requested:
                await channel.report_document(number, DocumentState.CANCELED)
                raise _Canceled from None
            log.warning("job %d doc %d: %s", record.job_id, number, exc.message)
            reasons = (Reason.DOCUMENT_ACCESS_ERROR,)
            await channel.report_document(number, DocumentState.ABORTED, reasons, exc.message)
            return JobState.ABORTED, reasons, exc.message
        base = record.impressions_completed
        tick = self.ctx.progress_reporter(
            record, lambda: channel.report_job(JobState.PROCESSING, (Reason.JOB_PRINTING,)))

        def progress(impressions: int) -> None:
            record.progress(base + impressions)
            tick()

        task = DocumentTask(job=job, document_number=number, document_format=access.document_format,
                            size=access.size, document_name=access.document_name)
        record.start_document(number)
        self.ctx.book.save(record)  # from here on, paper may come out: journaled first
        try:
            impressions = await driver.print_document(task, path, progress)
        except PrintCanceled:
            await channel.report_document(number, DocumentState.CANCELED,
                                          impressions=record.impressions_completed - base)
            raise _Canceled from None
        except DriverError as exc:
            log.warning("job %d doc %d: driver failed: %s", record.job_id, number, exc.message)
            await channel.report_document(number, DocumentState.ABORTED, exc.reasons, exc.message,
                                          impressions=record.impressions_completed - base)
            return JobState.ABORTED, exc.reasons, exc.message
        except Exception as exc:
            log.exception("job %d doc %d: driver crashed", record.job_id, number)
            message = f"driver error: {type(exc).__name__}"
            await channel.report_document(number, DocumentState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), message,
                                          impressions=record.impressions_completed - base)
            return JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), message
        finally:
            path.unlink(missing_ok=True)
        record.progress(base + impressions)
        record.finish_document(number)
        self.ctx.book.save(record)
        await channel.report_document(number, DocumentState.COMPLETED,
                                      impressions=record.impressions_completed - base)
        return None
