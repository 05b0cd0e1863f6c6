"""The scan and fax flows of the Manager's runner (mixed into manager.runner.Runner).

Both run after the claim, holding the service's slot, in phase PRINTING (the phase means
"the device is working on it": cancel reaches the driver, and a restart while in it ends
the job aborted rather than doing it twice, see docs/reliability.md).

Scan: scan every page (driver) -> per output document: ``request-upload`` (a presigned PUT
URL, never through the broker) -> streamed PUT -> ``document-status completed`` with its
size and SHA-256, which the service checks against what it stored -> job completed.

Fax: download the document -> per destination: dial, on busy/no-answer wait
``retry-interval`` and dial again up to ``number-of-retries`` times (schemas.model.fax)
-> ``destination-statuses`` in every job-status -> the job's outcome from all destinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from manager.download import DownloadError
from manager.drivers.base import DriverError, JobRefused, PrintCanceled
from manager.drivers.fax import DialResult, FaxDriver, FaxJob
from manager.drivers.scanner import ScanDriver, ScanJob, ScannedDocument
from manager.jobbook import JobRecord, Phase
from manager.requests import RequestTimeout
from schemas.enums import DocumentState, JobState, Reason
from schemas.messages import DocumentStatus, JobStatus, RequestUpload
from schemas.model.fax import job_outcome, should_retry, validate_fax_ticket
from schemas.model.scan import validate_scan_ticket
from schemas.model.ticket import TicketError
from schemas.tickets import DestinationStatus, FaxOutJobTicket, ScanJobTicket

if TYPE_CHECKING:
    from manager.runner import Outcome, ServiceRuntime

log = logging.getLogger("cloudimaging.manager")

JOB_SCANNING = "job-scanning"
JOB_TRANSMITTING = "job-transmitting"
UPLOAD_CHUNK = 64 * 1024


class UploadError(Exception):
    pass


def upload_file(url: str, path: Path, *, verify: ssl.SSLContext, timeout: float, stop: threading.Event,
                allow_http: bool = False) -> tuple[int, str]:
    """PUT a file to a presigned URL, streamed in chunks; returns (size, sha256) as the service
    stored them, after checking they are the file's. Synchronous: run it in a thread."""
    if not (url.startswith("https://") or (allow_http and url.startswith("http://"))):
        raise UploadError("upload URL must be https")
    digest = hashlib.sha256()
    size = path.stat().st_size

    def chunks():  # type: ignore[no-untyped-def]
        with path.open("rb") as fh:
            while data := fh.read(UPLOAD_CHUNK):
                if stop.is_set():
                    raise UploadError("canceled")
                digest.update(data)
                yield data

    try:
        with httpx.Client(verify=verify, timeout=timeout) as client:
            response = client.put(url, content=chunks(), headers={"Content-Length": str(size),
                                                                  "Content-Type": "application/octet-stream"})
    except httpx.HTTPError as exc:
        raise UploadError(f"upload failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise UploadError(f"upload refused: HTTP {response.status_code}")
    try:
        receipt = json.loads(response.content)
    except ValueError:
        raise UploadError("upload receipt is not JSON") from None
    if receipt.get("size") != size or receipt.get("sha256") != digest.hexdigest():
        raise UploadError("the service stored other bytes than were sent")
    return size, digest.hexdigest()


class ScanFaxFlows:
    """Scan and fax job flows; relies on the Runner's exchange, report and journal helpers."""

    # Provided by Runner.
    book: Any
    spool: Path
    config: Any
    _ssl: ssl.SSLContext

    # ------------------------------------------------------------------ checks

    def _check_imaging(self, record: JobRecord, service: ServiceRuntime) -> tuple[str, str] | None:
        """Why this device cannot do a scan or fax job, or None."""
        kind = service.config.kind
        if record.kind != kind:
            return Reason.UNSUPPORTED_ATTRIBUTES, f"service {service.name!r} is a {kind} service, not {record.kind}"
        try:
            if kind == "scan":
                assert isinstance(record.ticket, ScanJobTicket) and isinstance(service.driver, ScanDriver)
                settings = validate_scan_ticket(record.ticket, service.config.capabilities)
                service.driver.check_scan(ScanJob(record.job_id, service.name, record.ticket, settings))
            else:
                assert isinstance(record.ticket, FaxOutJobTicket) and isinstance(service.driver, FaxDriver)
                fax = validate_fax_ticket(record.ticket, service.config.capabilities, record.ticket.document_format)
                service.driver.check_fax(FaxJob(record.job_id, service.name, record.ticket, fax))
        except TicketError as exc:
            problem = exc.first
            reason = (Reason.UNSUPPORTED_DOCUMENT_FORMAT if problem.attribute == "document-format"
                      else Reason.UNSUPPORTED_ATTRIBUTES)
            return reason, problem.message
        except JobRefused as exc:
            return exc.reason, exc.message
        return None

    # ------------------------------------------------------------------ common

    async def _imaging(self, record: JobRecord, service: ServiceRuntime) -> Outcome:
        """Run a claimed scan or fax job on its device (the service's slot is held)."""
        record.phase = Phase.PRINTING
        record.printing_document = 1  # the device is at work: a restart now does not redo it
        self.book.save(record)
        self._publish_attributes()  # type: ignore[attr-defined]
        try:
            if service.config.kind == "scan":
                outcome = await self._scan(record, service)
            else:
                outcome = await self._fax(record, service)
        finally:
            with contextlib.suppress(Exception):
                await service.driver.end_job(record.job_id, JobState.PROCESSING)
        if outcome[0] is JobState.COMPLETED:
            record.documents_done.add(1)
            record.printing_document = None
            self.book.save(record)
        return outcome

    # ------------------------------------------------------------------ scan

    async def _scan(self, record: JobRecord, service: ServiceRuntime) -> Outcome:
        from manager.runner import PROGRESS_REPORT_SECONDS

        driver = service.driver
        assert isinstance(driver, ScanDriver) and isinstance(record.ticket, ScanJobTicket)
        settings = validate_scan_ticket(record.ticket, service.config.capabilities)
        job = ScanJob(record.job_id, service.name, record.ticket, settings)
        await self._report_job(record, JobState.PROCESSING, (JOB_SCANNING,))  # type: ignore[attr-defined]
        out_dir = self.spool / f"scan-{record.job_id}"
        last_report = time.monotonic()

        def progress(pages: int) -> None:
            nonlocal last_report
            record.impressions_completed = max(record.impressions_completed, pages)
            if time.monotonic() - last_report >= PROGRESS_REPORT_SECONDS and not record.cancel_requested:
                last_report = time.monotonic()
                self._spawn(self._report_job(record, JobState.PROCESSING, (JOB_SCANNING,)))  # type: ignore[attr-defined]

        try:
            if record.cancel_requested:
                return JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None
            try:
                documents = await driver.scan(job, out_dir, progress)
            except PrintCanceled:
                return JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None
            except DriverError as exc:
                log.warning("job %d: scan failed: %s", record.job_id, exc.message)
                return JobState.ABORTED, exc.reasons, f"scan failed: {exc.message}"
            record.impressions_completed = sum(d.pages for d in documents)
            for number, document in enumerate(documents, start=1):
                if record.cancel_requested:
                    return JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None
                problem = await self._upload_output(record, number, document)
                if problem is not None:
                    if record.cancel_requested:
                        return JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None
                    return JobState.ABORTED, (Reason.DOCUMENT_ACCESS_ERROR,), problem
            return JobState.COMPLETED, (Reason.JOB_COMPLETED_SUCCESSFULLY,), None
        finally:
            await asyncio.to_thread(shutil.rmtree, out_dir, True)

    async def _upload_output(self, record: JobRecord, number: int, document: ScannedDocument) -> str | None:
        """Upload one output document and report it; the reason it failed, or None."""
        uploaded: tuple[int, str] | None = None
        for attempt in (1, 2):
            try:
                reply = await self._locked_exchange(  # type: ignore[attr-defined]
                    record, lambda _v: RequestUpload(job_id=record.job_id, document_number=number,
                                                     document_format=document.document_format,
                                                     document_name=document.path.name),
                    final=False, persistent=False)
            except RequestTimeout:
                reply = None
            if reply is not None and reply.code == "duplicate":
                return None  # completed already (a resent report was applied)
            if reply is None or not reply.uploads:
                return f"no upload URL for output document {number}"
            try:
                uploaded = await asyncio.to_thread(
                    upload_file, reply.uploads[0].url, document.path, verify=self._ssl,
                    timeout=max(30.0, self.config.request_timeout), stop=record.stop,
                    allow_http=self.config.allow_http_documents)
                break
            except UploadError as exc:
                if record.cancel_requested or attempt == 2:
                    return f"output document {number}: {exc}"
                log.warning("job %d: output %d: %s; trying again with a fresh URL", record.job_id, number, exc)
        assert uploaded is not None
        size, sha256 = uploaded
        async with record.lock:
            reply = await self._exchange(  # type: ignore[attr-defined]
                record, lambda v: DocumentStatus(job_id=record.job_id, document_number=number, version=v,
                                                 state=DocumentState.COMPLETED, impressions_completed=document.pages,
                                                 size=size, sha256=sha256),
                final=False, persistent=True)
        if reply is None:
            return f"the service did not accept output document {number}"
        log.info("job %d: output %d uploaded (%d bytes, %s)", record.job_id, number, size, document.document_format)
        return None

    # ------------------------------------------------------------------ fax

    async def _fax(self, record: JobRecord, service: ServiceRuntime) -> Outcome:
        driver = service.driver
        assert isinstance(driver, FaxDriver) and isinstance(record.ticket, FaxOutJobTicket)
        settings = validate_fax_ticket(record.ticket, service.config.capabilities, record.ticket.document_format)
        job = FaxJob(record.job_id, service.name, record.ticket, settings)
        known = {s.destination_uri: s for s in record.destination_statuses}
        statuses = {uri: known.get(uri) or DestinationStatus(destination_uri=uri) for uri in settings.destinations}
        self._set_destinations(record, statuses)
        await self._report_fax(record)
        try:
            path, access = await self._download(record, 1)  # type: ignore[attr-defined]
        except DownloadError as exc:
            if exc.kind == "canceled" or record.cancel_requested:
                return self._fax_canceled(record, statuses)
            return JobState.ABORTED, (Reason.DOCUMENT_ACCESS_ERROR,), exc.message
        try:
            for uri in settings.destinations:
                await self._send_to(record, driver, job, uri, statuses, path, access.document_format)
        except PrintCanceled:
            return self._fax_canceled(record, statuses)
        finally:
            path.unlink(missing_ok=True)
        return job_outcome(list(statuses.values()))

    async def _send_to(self, record: JobRecord, driver: FaxDriver, job: FaxJob, uri: str,
                       statuses: dict[str, DestinationStatus], path: Path, document_format: str) -> None:
        """Send to one destination, retrying busy/no-answer per the job's policy."""
        status = statuses[uri]
        while status.transmission_status not in ("completed", "aborted"):
            if record.cancel_requested:
                raise PrintCanceled("canceled")
            status = status.model_copy(update={"transmission_status": "processing", "attempts": status.attempts + 1,
                                               "transmission_status_reasons": []})
            statuses[uri] = status
            self._set_destinations(record, statuses)
            await self._report_fax(record)

            def progress(pages: int, uri: str = uri) -> None:
                statuses[uri] = statuses[uri].model_copy(update={"images_completed": pages})

            try:
                result = await driver.send(job, uri, path, document_format, progress)
            except DriverError as exc:
                result = DialResult("failed", 0, exc.message)
            if result.outcome == "completed":
                status = status.model_copy(update={"transmission_status": "completed",
                                                   "images_completed": result.pages})
                record.impressions_completed += result.pages
            elif should_retry(result.outcome, status.attempts, job.settings.retries):
                status = status.model_copy(update={"transmission_status": "pending-retry",
                                                   "transmission_status_reasons": [result.outcome]})
            else:
                status = status.model_copy(update={"transmission_status": "aborted",
                                                   "transmission_status_reasons": [result.outcome]})
            log.info("job %d: %s -> %s (attempt %d)", record.job_id, uri, result.outcome, status.attempts)
            statuses[uri] = status
            self._set_destinations(record, statuses)
            await self._report_fax(record)
            if status.transmission_status == "pending-retry":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(record.wakeup.wait(), timeout=job.settings.retry_interval)

    def _fax_canceled(self, record: JobRecord, statuses: dict[str, DestinationStatus]) -> Outcome:
        for uri, status in statuses.items():
            if status.transmission_status not in ("completed", "aborted"):
                statuses[uri] = status.model_copy(update={"transmission_status": "canceled"})
        self._set_destinations(record, statuses)
        return JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None

    def _set_destinations(self, record: JobRecord, statuses: dict[str, DestinationStatus]) -> None:
        record.destination_statuses = list(statuses.values())
        self.book.save(record)

    async def _report_fax(self, record: JobRecord) -> None:
        """job-status processing with the destination-statuses so far."""
        async with record.lock:
            if record.phase is Phase.ENDING or self.book.get(record.job_id) is not record:
                return
            record.state, record.reasons = JobState.PROCESSING, (JOB_TRANSMITTING,)
            try:
                await self._exchange(  # type: ignore[attr-defined]
                    record, lambda v: JobStatus(job_id=record.job_id, version=v, state=JobState.PROCESSING,
                                                reasons=[JOB_TRANSMITTING],
                                                impressions_completed=record.impressions_completed,
                                                destination_statuses=record.destination_statuses),
                    final=False, persistent=False)
            except RequestTimeout as exc:
                log.warning("job %d: %s; going on", record.job_id, exc)

    @staticmethod
    def final_destinations(record: JobRecord, state: JobState) -> list[DestinationStatus] | None:
        """The destination-statuses of a final job-status: unfinished ones end with the job."""
        if record.kind != "faxout" or not record.destination_statuses:
            return None
        end = "canceled" if state is JobState.CANCELED else "aborted"
        return [s if s.transmission_status in ("completed", "aborted", "canceled")
                else s.model_copy(update={"transmission_status": end}) for s in record.destination_statuses]
