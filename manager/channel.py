"""JobChannel: one job's requests and reports, and what the Manager makes of the replies.

Reports for one job go one at a time (``JobRecord.lock``) and always carry the job version
from the last reply. This module is the only reader of ``Reply.code`` for a job:

- ``ok``, ``duplicate``: done (a duplicate is the answer to a resent message the service had
  applied already); the reply's version is adopted;
- ``stale``: the job changed at the service; its version is adopted, and then the job is gone
  (terminal state), or being canceled (a non-final report becomes a local cancel), or the
  report is sent again with the new version (at most ``MAX_STALE_ROUNDS`` times);
- ``not-found``, ``not-yours``, ``not-fetchable``: the job is not ours any more (JobGone);
- any other refusal drops that one report and the job goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from manager.jobbook import JobBook, JobRecord, Phase
from manager.requests import Requester, RequestTimeout
from manager.transfer import DownloadError
from manager.wirelog import describe
from schemas.enums import DocumentState, JobState, Reason
from schemas.messages import (
    DocumentAccess,
    DocumentStatus,
    FetchDocument,
    FetchJob,
    JobStatus,
    Message,
    Reply,
    RequestUpload,
)
from schemas.tickets import DestinationStatus

log = logging.getLogger("cloudimaging.manager")

#: Stale replies followed in a row for one report before giving the report up.
MAX_STALE_ROUNDS = 8
_DROP_CODES = frozenset({"not-found", "not-yours", "not-fetchable"})


class JobGone(Exception):
    """The cloud says the job is over or not ours: drop it locally, report nothing more."""

    def __init__(self, state: JobState | None, why: str) -> None:
        super().__init__(why)
        self.state = state


@dataclass(frozen=True)
class Upload:
    """Where to PUT one output document, or that the service has it already."""

    url: str | None
    already_stored: bool = False


class JobChannel:
    """The exchanges of one job with the service, over the device's Requester."""

    def __init__(self, record: JobRecord, requester: Requester, book: JobBook,
                 on_cancel: Callable[[JobRecord], None]) -> None:
        self.record = record
        self._requester = requester
        self._book = book
        #: Called when a stale reply says the job is being canceled at the service.
        self._on_cancel = on_cancel

    @property
    def held(self) -> bool:
        """The job is still this record in the book (not dropped or finished meanwhile)."""
        return self._book.get(self.record.job_id) is self.record

    # ------------------------------------------------------------------ claiming

    async def fetch(self) -> Reply | None:
        """fetch-job; the reply with the ticket, or None when refused. May raise RequestTimeout."""
        job_id = self.record.job_id
        reply = await self._requester.request(FetchJob(job_id=job_id))
        if reply.code == "duplicate" and reply.ticket is None:
            # A deduplicated answer without the ticket: fetching is read-only, so ask anew.
            reply = await self._requester.request(FetchJob(job_id=job_id))
        if reply.code != "ok" and not (reply.code == "duplicate" and reply.ticket is not None):
            log.info("job %d: fetch-job refused (%s)", job_id, reply.code)
            return None
        self.record.adopt_version(reply.version)
        return reply

    # ------------------------------------------------------------------ reports

    async def report_job(self, state: JobState, reasons: tuple[str, ...], message: str | None = None,
                         destinations: list[DestinationStatus] | None = None) -> None:
        """job-status while the job runs; a lost reply is not worth stopping for."""
        record = self.record
        async with record.lock:
            if record.phase is Phase.ENDING or not self.held:
                return
            record.report(state, reasons)
            self._book.save(record)
            try:
                await self.exchange(
                    lambda v: JobStatus(job_id=record.job_id, version=v, state=state, reasons=list(reasons),
                                        message=message, impressions_completed=record.impressions_completed,
                                        destination_statuses=destinations),
                    final=False, persistent=False)
            except RequestTimeout as exc:
                log.warning("job %d: %s; going on", record.job_id, exc)

    async def report_document(self, number: int, state: DocumentState, reasons: tuple[str, ...] = (),
                              message: str | None = None, impressions: int = 0) -> None:
        """document-status while the job runs; a lost reply is not worth stopping for."""
        record = self.record
        async with record.lock:
            if record.phase is Phase.ENDING or not self.held:
                return
            try:
                await self.exchange(
                    lambda v: DocumentStatus(job_id=record.job_id, document_number=number, version=v, state=state,
                                             reasons=list(reasons), message=message,
                                             impressions_completed=max(0, impressions)),
                    final=False, persistent=False)
            except RequestTimeout as exc:
                log.warning("job %d: %s; going on", record.job_id, exc)

    async def report_output(self, number: int, pages: int, size: int, sha256: str) -> bool:
        """document-status completed of an uploaded scan output (resent until answered)."""
        record = self.record
        async with record.lock:
            reply = await self.exchange(
                lambda v: DocumentStatus(job_id=record.job_id, document_number=number, version=v,
                                         state=DocumentState.COMPLETED, impressions_completed=pages,
                                         size=size, sha256=sha256),
                final=False, persistent=True)
        return reply is not None

    # ------------------------------------------------------------------ documents

    async def fetch_document(self, number: int) -> DocumentAccess:
        """A fresh download URL for one document; DownloadError when the service gives none."""
        record = self.record
        try:
            reply = await self.locked_exchange(
                lambda _v: FetchDocument(job_id=record.job_id, document_number=number),
                final=False, persistent=False)
        except RequestTimeout:
            reply = None
        access = None
        if reply is not None:
            access = next((d for d in reply.documents if d.document_number == number), None)
        if access is None:
            raise DownloadError("http", f"no URL for document {number} from the service")
        record.refresh_document(access)
        return access

    async def request_upload(self, number: int, document_format: str, name: str) -> Upload:
        """A presigned PUT URL for one scan output document."""
        record = self.record
        try:
            reply = await self.locked_exchange(
                lambda _v: RequestUpload(job_id=record.job_id, document_number=number,
                                         document_format=document_format, document_name=name),
                final=False, persistent=False)
        except RequestTimeout:
            reply = None
        if reply is not None and reply.code == "duplicate":
            return Upload(None, already_stored=True)  # completed already (a resent report was applied)
        if reply is None or not reply.uploads:
            return Upload(None)
        return Upload(reply.uploads[0].url)

    # ------------------------------------------------------------------ the exchange

    async def locked_exchange(self, build: Callable[[int], Message], *, final: bool,
                              persistent: bool) -> Reply | None:
        async with self.record.lock:
            return await self.exchange(build, final=final, persistent=persistent)

    async def exchange(self, build: Callable[[int], Message], *, final: bool, persistent: bool) -> Reply | None:
        """Send a job request/report and apply the reply code (caller holds record.lock).

        Returns the Reply on ok/duplicate, None if the report was refused and dropped.
        Raises JobGone when the job ended at the cloud or is not ours, RequestTimeout when
        a non-persistent request got no answer. ``final`` marks reports that end the job,
        which are resent with the new version even while a cancel is pending.
        """
        record = self.record
        for _ in range(MAX_STALE_ROUNDS):
            if not self.held:  # closed out meanwhile (another database): never report it
                raise JobGone(None, "the job is no longer held here")
            message = build(record.version)
            reply = await self._requester.request(message, attempts=None if persistent else 0)
            code = reply.code
            if code in ("ok", "duplicate"):
                record.adopt_version(reply.version)
                return reply
            if code == "stale":
                record.adopt_version(reply.version)
                if reply.state is not None and reply.state.terminal:
                    raise JobGone(reply.state, f"the job is already {reply.state} at the cloud")
                if not final and Reason.PROCESSING_TO_STOP_POINT in reply.reasons:
                    self._on_cancel(record)
                    return None
                sent = getattr(message, "version", None) or 0
                if reply.version is not None and reply.version < sent:
                    # The service's copy of the job is older than ours: its database was
                    # restored from a backup. Its version is the one to build on.
                    log.warning("job %d: the service's version went back (%d -> %d): database restored",
                                record.job_id, sent, reply.version)
                    record.rewind_version(reply.version)
                    continue
                if reply.version is None or sent >= reply.version:
                    log.warning("job %d: stale reply without a newer version; report dropped", record.job_id)
                    return None
                continue
            if code in _DROP_CODES:
                raise JobGone(None, f"{describe(message).split()[0]} refused: {code}")
            log.warning("job %d: %s refused with %s: %s; report dropped", record.job_id,
                        describe(message).split()[0], code, reply.message or "")
            return None
        log.warning("job %d: still stale after %d rounds; report dropped", record.job_id, MAX_STALE_ROUNDS)
        return None
