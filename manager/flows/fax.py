"""The FaxOut flow: a claimed fax job on its modem.

Download the document -> per destination: dial, on busy/no-answer wait ``retry-interval``
and dial again up to ``number-of-retries`` times (schemas.model.fax) ->
``destination-statuses`` in every job-status -> the job's outcome from all destinations.
Destination outcomes are journaled, so a destination already sent is never dialled again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from manager.channel import JobChannel
from manager.drivers.base import DriverError, PrintCanceled
from manager.drivers.fax import DialResult, FaxDriver, FaxJob
from manager.flows.base import CANCELED, FlowContext, Outcome
from manager.jobbook import JobRecord
from manager.services import ServiceRuntime
from manager.transfer import DownloadError
from schemas.enums import JobState, Reason
from schemas.model.fax import job_outcome, should_retry, validate_fax_ticket
from schemas.tickets import DestinationStatus, FaxOutJobTicket

log = logging.getLogger("cloudimaging.manager")

JOB_TRANSMITTING = "job-transmitting"


def final_destinations(record: JobRecord, state: JobState) -> list[DestinationStatus] | None:
    """The destination-statuses of a final job-status: unfinished ones end with the job."""
    if record.kind != "faxout" or not record.destination_statuses:
        return None
    end = "canceled" if state is JobState.CANCELED else "aborted"
    return [s if s.transmission_status in ("completed", "aborted", "canceled")
            else s.model_copy(update={"transmission_status": end}) for s in record.destination_statuses]


class FaxFlow:
    """Sends a claimed fax job to each of its destinations."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx

    async def run(self, record: JobRecord, service: ServiceRuntime, channel: JobChannel) -> Outcome:
        return await self.ctx.at_work(record, service, lambda: self._fax(record, service, channel))

    async def _fax(self, record: JobRecord, service: ServiceRuntime, channel: JobChannel) -> Outcome:
        driver = service.driver
        assert isinstance(driver, FaxDriver) and isinstance(record.ticket, FaxOutJobTicket)
        settings = validate_fax_ticket(record.ticket, service.config.capabilities, record.ticket.document_format)
        job = FaxJob(record.job_id, service.name, record.ticket, settings)
        known = {s.destination_uri: s for s in record.destination_statuses}
        statuses = {uri: known.get(uri) or DestinationStatus(destination_uri=uri) for uri in settings.destinations}
        self._set_destinations(record, statuses)
        await self._report(record, channel)
        try:
            path, access = await self.ctx.download(record, 1, channel)
        except DownloadError as exc:
            if exc.kind == "canceled" or record.cancel_requested:
                return self._canceled(record, statuses)
            return JobState.ABORTED, (Reason.DOCUMENT_ACCESS_ERROR,), exc.message
        try:
            for uri in settings.destinations:
                await self._send_to(record, driver, job, uri, statuses, path, access.document_format, channel)
        except PrintCanceled:
            return self._canceled(record, statuses)
        finally:
            path.unlink(missing_ok=True)
        return job_outcome(list(statuses.values()))

    async def _send_to(self, record: JobRecord, driver: FaxDriver, job: FaxJob, uri: str,
                       statuses: dict[str, DestinationStatus], path: Path, document_format: str,
                       channel: JobChannel) -> None:
        """Send to one destination, retrying busy/no-answer per the job's policy."""
        status = statuses[uri]
        while status.transmission_status not in ("completed", "aborted"):
            if record.cancel_requested:
                raise PrintCanceled("canceled")
            status = status.model_copy(update={"transmission_status": "processing", "attempts": status.attempts + 1,
                                               "transmission_status_reasons": []})
            statuses[uri] = status
            self._set_destinations(record, statuses)
            await self._report(record, channel)

            def progress(pages: int, uri: str = uri) -> None:
                statuses[uri] = statuses[uri].model_copy(update={"images_completed": pages})

            try:
                result = await driver.send(job, uri, path, document_format, progress)
            except DriverError as exc:
                result = DialResult("failed", 0, exc.message)
            if result.outcome == "completed":
                status = status.model_copy(update={"transmission_status": "completed",
                                                   "images_completed": result.pages})
                record.progress(record.impressions_completed + result.pages)
            elif should_retry(result.outcome, status.attempts, job.settings.retries):
                status = status.model_copy(update={"transmission_status": "pending-retry",
                                                   "transmission_status_reasons": [result.outcome]})
            else:
                status = status.model_copy(update={"transmission_status": "aborted",
                                                   "transmission_status_reasons": [result.outcome]})
            log.info("job %d: %s -> %s (attempt %d)", record.job_id, uri, result.outcome, status.attempts)
            statuses[uri] = status
            self._set_destinations(record, statuses)
            await self._report(record, channel)
            if status.transmission_status == "pending-retry":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(record.wakeup.wait(), timeout=job.settings.retry_interval)

    def _canceled(self, record: JobRecord, statuses: dict[str, DestinationStatus]) -> Outcome:
        for uri, status in statuses.items():
            if status.transmission_status not in ("completed", "aborted"):
                statuses[uri] = status.model_copy(update={"transmission_status": "canceled"})
        self._set_destinations(record, statuses)
        return CANCELED

    def _set_destinations(self, record: JobRecord, statuses: dict[str, DestinationStatus]) -> None:
        record.set_destinations(statuses.values())
        self.ctx.book.save(record)

    async def _report(self, record: JobRecord, channel: JobChannel) -> None:
        """job-status processing with the destination-statuses so far."""
        await channel.report_job(JobState.PROCESSING, (JOB_TRANSMITTING,),
                                 destinations=record.destination_statuses)
