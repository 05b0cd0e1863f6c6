"""The jobs a Manager holds, and the ones it finished recently.

JobBook is the one place job records change hands, so the durable journal
(manager/journal.py, SQLite) plugs in by overriding ``save`` and ``forget`` and by loading
records at start; the runner never keeps job state anywhere else. "Finished recently" is what makes duplicated or
late doorbells harmless: a job id in it is never claimed again. Job ids are those of one
service database (``instance``): when the service reports another, ``rebase`` closes the old
database's jobs out and starts a fresh memory. Within one database the same id may still name
two jobs (a backup restored restarts the id sequence), so each finished id is kept with the
job's ``job-uuid`` (``uuid``): the runner tells a restored copy of a job it finished (same
uuid: its final state is reported again) from a new job (printed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from schemas.enums import JobState
from schemas.messages import DocumentAccess, HeldJob
from schemas.tickets import DestinationStatus, FaxOutJobTicket, PrintJobTicket, ScanJobTicket


class Phase(StrEnum):
    """Where a job is in the Manager's own flow (finer than the PWG job state).

    FETCHING -> QUEUED (claimed) -> PRINTING (the device is at work) -> ENDING; a queued
    job may end without printing (canceled), ENDING may be entered again (the final report
    resent after a restart), and a restart puts a job that is between documents back in
    QUEUED. Any other move is a bug and raises PhaseError.
    """

    FETCHING = "fetching"  # fetch-job sent; not claimed yet
    QUEUED = "queued"  # accepted (claimed); waiting for the printer
    PRINTING = "printing"
    ENDING = "ending"  # ended locally; the final job-status is not confirmed yet


class PhaseError(RuntimeError):
    """A JobRecord was asked for a move its phase does not allow."""


_MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.FETCHING: frozenset({Phase.QUEUED}),
    Phase.QUEUED: frozenset({Phase.PRINTING, Phase.ENDING}),
    Phase.PRINTING: frozenset({Phase.QUEUED, Phase.ENDING}),
    Phase.ENDING: frozenset({Phase.ENDING}),
}


@dataclass(eq=False)
class JobRecord:
    """One job held by the Manager: what the cloud told it and how far printing got."""

    job_id: int
    version: int = 0
    state: JobState = JobState.PENDING
    reasons: tuple[str, ...] = ()
    phase: Phase = Phase.FETCHING
    service: str | None = None
    #: The service kind (print, scan, faxout): which flow runs the job.
    kind: str = "print"
    ticket: PrintJobTicket | ScanJobTicket | FaxOutJobTicket | None = None
    document_count: int = 1
    documents: dict[int, DocumentAccess] = field(default_factory=dict)
    impressions_completed: int = 0
    claimed: bool = False
    #: An acknowledge-job (accept) is on its way: the job may be claimed already.
    acknowledging: bool = False
    cancel_requested: bool = False
    #: Documents the driver has finished: never printed again, even after a restart.
    documents_done: set[int] = field(default_factory=set)
    #: The document the driver is printing right now (None between documents): after a
    #: crash, a job with one is known to be partly printed (see docs/reliability.md).
    printing_document: int | None = None
    #: The final job-status message (phase ENDING), resent after a restart.
    message: str | None = None
    #: FaxOut: each destination's outcome so far (journaled: never dialled again once sent).
    destination_statuses: list[DestinationStatus] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    #: The job's job-uuid at the service (fetch-job): which job of that id this is.
    uuid: str | None = None
    #: The final state this device already gave the job, being reported again to a restored
    #: database that offers the job anew: the job is claimed only to end it, never printed.
    replay: JobState | None = None
    # Runtime only (never journaled): the task running the job, the lock that keeps its
    # reports one at a time, the flag that stops its download thread, and the event that
    # wakes a job waiting for the printer when it is canceled or dropped.
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    # ------------------------------------------------------------------ transitions
    # The job-state fields change only here, so the phase order has one home (as
    # Job.apply has on the service). The caller journals the record (JobBook.save).

    def _move(self, phase: Phase) -> None:
        if phase not in _MOVES[self.phase]:
            raise PhaseError(f"job {self.job_id}: cannot go from {self.phase} to {phase}")
        self.phase = phase

    def adopt_version(self, version: int | None) -> None:
        """Take the cloud's version; versions only grow, so an older one is ignored."""
        if version is not None and version > self.version:
            self.version = version

    def fetched(self, kind: str, ticket: PrintJobTicket | ScanJobTicket | FaxOutJobTicket, document_count: int,
                service: str | None, uuid: str | None = None) -> None:
        """What fetch-job told: the job's kind, ticket, document count, service and uuid."""
        if self.phase is not Phase.FETCHING:
            raise PhaseError(f"job {self.job_id}: fetched while {self.phase}")
        self.kind, self.ticket, self.service = kind, ticket, service
        self.document_count = max(1, document_count)
        self.uuid = uuid

    def rewind_version(self, version: int) -> None:
        """Take a lower version from the service: its database was restored from a backup
        (versions grow within one history only)."""
        self.version = version

    @property
    def on_paper(self) -> bool:
        """Something of the job may have been output (a document started or done, impressions)."""
        return self.printing_document is not None or bool(self.documents_done) or self.impressions_completed > 0

    def acknowledge(self, in_flight: bool) -> None:
        """An acknowledge-job (accept) leaves or was answered; while in flight Hello lists the job."""
        if self.phase is not Phase.FETCHING:
            raise PhaseError(f"job {self.job_id}: acknowledged while {self.phase}")
        self.acknowledging = in_flight

    def claim(self, documents: Iterable[DocumentAccess]) -> None:
        """The service let this device claim the job; ``documents`` are its download URLs."""
        self._move(Phase.QUEUED)
        self.claimed = True
        self.documents = {d.document_number: d for d in documents}
        self.document_count = max(self.document_count, len(self.documents))

    def start_work(self) -> None:
        """The device starts on the job (it holds the service's slot)."""
        self._move(Phase.PRINTING)

    def start_document(self, number: int) -> None:
        """From here on output may appear: a restart ends the job rather than redo this document."""
        if self.phase is not Phase.PRINTING or self.printing_document is not None or number in self.documents_done:
            raise PhaseError(f"job {self.job_id}: cannot start document {number} "
                             f"({self.phase}, printing {self.printing_document}, done {sorted(self.documents_done)})")
        self.printing_document = number

    def finish_document(self, number: int) -> None:
        """The driver finished ``number``: it is never done again, even after a restart."""
        if self.printing_document != number:
            raise PhaseError(f"job {self.job_id}: document {number} finished while printing {self.printing_document}")
        self.documents_done.add(number)
        self.printing_document = None

    def progress(self, impressions: int) -> None:
        """The job's impressions so far; they never go down."""
        self.impressions_completed = max(self.impressions_completed, impressions)

    def refresh_document(self, access: DocumentAccess) -> None:
        """A fresh download URL for one document."""
        self.documents[access.document_number] = access

    def set_destinations(self, statuses: Iterable[DestinationStatus]) -> None:
        """FaxOut: each destination's outcome so far."""
        self.destination_statuses = list(statuses)

    def report(self, state: JobState, reasons: tuple[str, ...]) -> None:
        """The state last reported while the job runs (listed in Hello)."""
        if self.phase is Phase.ENDING:
            raise PhaseError(f"job {self.job_id}: reported {state} after it ended")
        self.state, self.reasons = state, reasons

    def request_cancel(self) -> bool:
        """Mark the job to be canceled; False when it is ending or already being canceled."""
        if self.phase is Phase.ENDING or self.cancel_requested:
            return False
        self.cancel_requested = True
        return True

    def end(self, state: JobState, reasons: tuple[str, ...], message: str | None) -> None:
        """The job ended locally; its final job-status is what remains to be confirmed."""
        self._move(Phase.ENDING)
        self.state, self.reasons, self.message = state, reasons, message

    def resume(self) -> None:
        """After a restart, a claimed job with nothing on paper goes back to the queue."""
        if self.printing_document is not None:
            raise PhaseError(f"job {self.job_id}: cannot resume while document {self.printing_document} printed")
        if self.phase is not Phase.QUEUED:
            self._move(Phase.QUEUED)

    # ------------------------------------------------------------------ views

    def held(self) -> HeldJob:
        return HeldJob(
            job_id=self.job_id, version=self.version, state=self.state, impressions_completed=self.impressions_completed
        )


@dataclass(frozen=True)
class Finished:
    """What the Manager remembers of a job it let go: enough to end a restored copy of it."""

    #: The final state it reported (None: dropped without one, e.g. the cloud did not know it).
    state: JobState | None
    #: The job's job-uuid (None: unknown, e.g. an older service or journal).
    uuid: str | None = None
    impressions: int = 0
    #: Something of it was output before it was let go.
    on_paper: bool = False


@dataclass(frozen=True)
class JobView:
    """A read-only copy of a JobRecord for code outside the runner (tests, status pages)."""

    job_id: int
    version: int
    state: JobState
    reasons: tuple[str, ...]
    phase: Phase
    service: str | None
    impressions_completed: int
    cancel_requested: bool

    @classmethod
    def of(cls, record: JobRecord) -> JobView:
        return cls(
            record.job_id,
            record.version,
            record.state,
            record.reasons,
            record.phase,
            record.service,
            record.impressions_completed,
            record.cancel_requested,
        )


class JobBook:
    """Held jobs by id, plus a bounded memory of finished ones."""

    def __init__(self, recent_limit: int = 10_000, recent_seconds: float = 24 * 3600) -> None:
        #: The service database these job ids belong to (Sync.instance); None until a service
        #: that sends one answered.
        self.instance: str | None = None
        self._jobs: dict[int, JobRecord] = {}
        self._recent: OrderedDict[int, tuple[Finished, float]] = OrderedDict()
        self._recent_limit = recent_limit
        self._recent_seconds = recent_seconds

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._jobs

    def get(self, job_id: int) -> JobRecord | None:
        return self._jobs.get(job_id)

    def records(self) -> list[JobRecord]:
        return list(self._jobs.values())

    def held(self) -> list[JobRecord]:
        """The jobs a Hello reports (Update-Active-Jobs): claimed, or being claimed right now.

        A job whose acknowledge-job is in flight is listed too: the service may have claimed
        it for this device already, and a claimed job missing from Hello is taken back.
        """
        return sorted((r for r in self._jobs.values() if r.claimed or r.acknowledging), key=lambda r: r.job_id)

    def seen(self, job_id: int) -> bool:
        """Held now or finished recently: a doorbell for it must be ignored."""
        self._expire()
        return job_id in self._jobs or job_id in self._recent

    def finished(self, job_id: int) -> Finished | None:
        """What is remembered of a finished job, or None when it is not one."""
        self._expire()
        entry = self._recent.get(job_id)
        return entry[0] if entry else None

    def finished_state(self, job_id: int) -> JobState | None:
        entry = self.finished(job_id)
        return entry.state if entry else None

    def recent(self) -> dict[int, JobState | None]:
        self._expire()
        return {job_id: entry.state for job_id, (entry, _) in self._recent.items()}

    def add(self, record: JobRecord) -> None:
        self._jobs[record.job_id] = record
        self.save(record)

    def save(self, record: JobRecord) -> None:
        """Persist a changed record. In memory nothing to do; a journal overrides this."""

    def load(self) -> list[JobRecord]:
        """Records that survived a restart (a journal's); the in-memory book has none."""
        return []

    def set_instance(self, instance: str) -> None:
        """Record the database the book's job ids belong to (first time: nothing else changes)."""
        self.instance = instance

    def rebase(self, instance: str) -> list[JobRecord]:
        """The service now runs on another database: its job ids are fresh. Every held record
        is taken out of the book (returned, for the caller to stop and log) and the memory of
        finished ids is cleared, so job 1 of the new database is not mistaken for job 1 of
        the old one."""
        closed = self.records()
        self._jobs.clear()
        self._recent.clear()
        self.instance = instance
        return closed

    def forget(self, job_id: int, state: JobState | None = None, remember: bool = True,
               finished: Finished | None = None) -> None:
        """Remove a job; with ``remember`` its id is kept (with ``finished``, what is known of
        its end) so it is never claimed again."""
        self._jobs.pop(job_id, None)
        if remember:
            entry = finished if finished is not None else Finished(state)
            self._recent[job_id] = (entry, time.monotonic())
            self._recent.move_to_end(job_id)
            while len(self._recent) > self._recent_limit:
                self._recent.popitem(last=False)

    def unfinish(self, job_id: int) -> None:
        """A new job took the id of a finished one (a restored database): forget the old one."""
        self._recent.pop(job_id, None)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._recent_seconds
        while self._recent:
            job_id, (_, at) = next(iter(self._recent.items()))
            if at >= cutoff:
                break
            del self._recent[job_id]
