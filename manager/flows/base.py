"""What every job flow shares: the Outcome it returns and the Manager's parts it uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from manager.channel import JobChannel
from manager.config import ManagerConfig
from manager.jobbook import JobBook, JobRecord
from manager.services import ServiceRuntime
from manager.transfer import DownloadError, IdleConnections, download
from schemas.enums import JobState, Reason
from schemas.messages import DocumentAccess

log = logging.getLogger("cloudimaging.manager")

#: How a job ended locally: (state, reasons, message), sent in its final job-status.
Outcome = tuple[JobState, tuple[str, ...], str | None]
COMPLETED: Outcome = (JobState.COMPLETED, (Reason.JOB_COMPLETED_SUCCESSFULLY,), None)
CANCELED: Outcome = (JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None)

#: A presigned URL this close to expiry is replaced before use.
URL_MARGIN_SECONDS = 5.0
#: While the device works, report the growing impressions-completed at most this often, so
#: clients watching a long job see progress (and the cloud knows how far a job got).
PROGRESS_REPORT_SECONDS = 2.0


class Flow(Protocol):
    """One kind's job flow."""

    async def run(self, record: JobRecord, service: ServiceRuntime, channel: JobChannel) -> Outcome:
        """Do the claimed job on the device (its slot is held); how it ended."""
        ...


@dataclass
class FlowContext:
    """The parts of the Manager a flow uses: the journal, the spool, TLS, and two callbacks."""

    config: ManagerConfig
    book: JobBook
    spool: Path
    ssl: ssl.SSLContext
    #: Publishes the services' Attributes if they changed (a service became busy or idle).
    publish_attributes: Callable[[], None]
    #: Runs a coroutine beside the job (progress reports must not hold the driver up).
    spawn: Callable[[Coroutine[Any, Any, None]], object]
    #: Document connections kept from one download to the next (closed at shutdown).
    connections: IdleConnections = field(default_factory=IdleConnections)

    def progress_reporter(self, record: JobRecord,
                          report: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        """A callback that sends ``report()`` at most every PROGRESS_REPORT_SECONDS."""
        last = time.monotonic()

        def tick() -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_REPORT_SECONDS and not record.cancel_requested:
                last = now
                self.spawn(report())

        return tick

    async def download(self, record: JobRecord, number: int, channel: JobChannel) -> tuple[Path, DocumentAccess]:
        """Fetch one document into the spool; on failure get a fresh URL and try once more."""
        access = record.documents.get(number)
        if access is None or access.expires_at < time.time() + URL_MARGIN_SECONDS:
            access = await channel.fetch_document(number)
        dest = self.spool / f"job-{record.job_id}-doc-{number}"
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(
                    download, access.url, dest, size=access.size, sha256=access.sha256, verify=self.ssl,
                    timeout=max(30.0, self.config.request_timeout), allow_http=self.config.allow_http_documents,
                    abort=record.stop, connections=self.connections)
                return dest, access
            except DownloadError as exc:
                if exc.kind in ("canceled", "refused") or attempt == 2:
                    raise
                log.warning("job %d doc %d: %s; asking for a fresh URL", record.job_id, number, exc.message)
            access = await channel.fetch_document(number)
        raise AssertionError("unreachable")

    async def at_work(self, record: JobRecord, service: ServiceRuntime,
                      work: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Run a scan or fax job as one unit of device work.

        The device is at work from the start: a restart while in it ends the job aborted
        rather than doing it twice (docs/reliability.md).
        """
        record.start_work()
        record.start_document(1)
        self.book.save(record)
        self.publish_attributes()
        try:
            outcome = await work()
        finally:
            with contextlib.suppress(Exception):
                await service.driver.end_job(record.job_id, JobState.PROCESSING)
        if outcome[0] is JobState.COMPLETED:
            record.finish_document(1)
            self.book.save(record)
        return outcome
