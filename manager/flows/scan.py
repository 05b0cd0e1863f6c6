"""The scan flow: a claimed scan job on its scanner.

Scan every page (driver) -> per output document: ``request-upload`` (a presigned PUT URL,
never through the broker) -> streamed PUT -> ``document-status completed`` with its size
and SHA-256, which the service checks against what it stored -> the Outcome.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from manager.channel import JobChannel
from manager.drivers.base import DriverError, PrintCanceled
from manager.drivers.scanner import ScanDriver, ScanJob, ScannedDocument
from manager.flows.base import CANCELED, COMPLETED, FlowContext, Outcome
from manager.jobbook import JobRecord
from manager.services import ServiceRuntime
from manager.transfer import UploadError, upload_file
from schemas.enums import JobState, Reason
from schemas.model.scan import validate_scan_ticket
from schemas.tickets import ScanJobTicket

log = logging.getLogger("cloudimaging.manager")

JOB_SCANNING = "job-scanning"


class ScanFlow:
    """Scans a claimed job and uploads its output documents."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx

    async def run(self, record: JobRecord, service: ServiceRuntime, channel: JobChannel) -> Outcome:
        return await self.ctx.at_work(record, service, lambda: self._scan(record, service, channel))

    async def _scan(self, record: JobRecord, service: ServiceRuntime, channel: JobChannel) -> Outcome:
        driver = service.driver
        assert isinstance(driver, ScanDriver) and isinstance(record.ticket, ScanJobTicket)
        settings = validate_scan_ticket(record.ticket, service.config.capabilities)
        job = ScanJob(record.job_id, service.name, record.ticket, settings)
        await channel.report_job(JobState.PROCESSING, (JOB_SCANNING,))
        out_dir = self.ctx.spool / f"scan-{record.job_id}"
        tick = self.ctx.progress_reporter(record, lambda: channel.report_job(JobState.PROCESSING, (JOB_SCANNING,)))

        def progress(pages: int) -> None:
            record.progress(pages)
            tick()

        try:
            if record.cancel_requested:
                return CANCELED
            try:
                documents = await driver.scan(job, out_dir, progress)
            except PrintCanceled:
                return CANCELED
            except DriverError as exc:
                log.warning("job %d: scan failed: %s", record.job_id, exc.message)
                return JobState.ABORTED, exc.reasons, f"scan failed: {exc.message}"
            record.progress(sum(d.pages for d in documents))
            for number, document in enumerate(documents, start=1):
                if record.cancel_requested:
                    return CANCELED
                problem = await self._upload(record, number, document, channel)
                if problem is not None:
                    if record.cancel_requested:
                        return CANCELED
                    return JobState.ABORTED, (Reason.DOCUMENT_ACCESS_ERROR,), problem
            return COMPLETED
        finally:
            await asyncio.to_thread(shutil.rmtree, out_dir, True)

    async def _upload(self, record: JobRecord, number: int, document: ScannedDocument,
                      channel: JobChannel) -> str | None:
        """Upload one output document and report it; the reason it failed, or None."""
        uploaded: tuple[int, str] | None = None
        for attempt in (1, 2):
            upload = await channel.request_upload(number, document.document_format, document.path.name)
            if upload.already_stored:
                return None
            if upload.url is None:
                return f"no upload URL for output document {number}"
            try:
                uploaded = await asyncio.to_thread(
                    upload_file, upload.url, document.path, verify=self.ctx.ssl,
                    timeout=max(30.0, self.ctx.config.request_timeout), stop=record.stop,
                    allow_http=self.ctx.config.allow_http_documents)
                break
            except UploadError as exc:
                if record.cancel_requested or attempt == 2:
                    return f"output document {number}: {exc}"
                log.warning("job %d: output %d: %s; trying again with a fresh URL", record.job_id, number, exc)
        assert uploaded is not None
        size, sha256 = uploaded
        if not await channel.report_output(number, document.pages, size, sha256):
            return f"the service did not accept output document {number}"
        log.info("job %d: output %d uploaded (%d bytes, %s)", record.job_id, number, size, document.document_format)
        return None
