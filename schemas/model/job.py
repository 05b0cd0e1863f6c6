"""The Job object of PWG 5108.01 as a pure state machine (no I/O, like h11 for HTTP).

``Job.apply(event)`` returns the next Job or raises InvalidTransition; it never mutates.
Every change bumps ``version`` so device reports can be checked for staleness
(optimistic concurrency, as AWS IoT Jobs' expectedVersion). Terminal states are final.

Transitions (RFC 8011 5.3.7, PWG 5108.01 7.2.2):

    pending-held --close--> pending(job-fetchable) --accept--> pending(claimed)
    pending(fetchable) / pending-held(incoming) --hold--> pending-held(job-hold-until-specified)
    pending-held(job-hold-until-specified) --release-hold--> pending(job-fetchable)
    pending(fetchable) --reject--> aborted
    pending(claimed) --device--> processing <--> processing-stopped
    processing / processing-stopped / pending(claimed) --device--> completed | aborted | canceled
    any non-terminal --cancel--> canceled at once if no device holds it,
                                 else processing-to-stop-point until the device confirms
    processing --suspend (its device went offline)--> processing-stopped
    any non-terminal --abort (system: timeout, device rejects, ...)--> aborted

A job's documents are part of it (``Job.documents``): the holding device's document report is
the ``DocumentReport`` event, which moves one document (schemas.model.document) and bumps the
job's version without changing the job's state; when the job ends, its unfinished documents
end with it. Whether a device's report is applied at all (duplicate, stale, ...) is judged by
schemas.model.reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemas.enums import DocumentState, JobState, Reason
from schemas.model.document import (
    Document,
    InvalidDocumentTransition,
    document_state_for_job_end,
    document_transition,
)

S = JobState


class InvalidTransition(Exception):
    """The event is not allowed in the job's current state."""

    def __init__(self, job: Job, event: object, why: str) -> None:
        super().__init__(f"{type(event).__name__} not allowed in state {job.state}: {why}")
        self.state = job.state
        self.why = why


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Close:
    """All documents are in: the job becomes fetchable (Close-Job / Send-Document last).

    ``message`` says what the service did to the documents first (a transform and its cost)."""

    message: str | None = None


@dataclass(frozen=True)
class Accept:
    """The assigned device claimed the job (Acknowledge-Job, accepted)."""


@dataclass(frozen=True)
class Reject:
    """The device refused the job at fetch (Acknowledge-Job with a fetch-status-code)."""

    reason: str = Reason.UNSUPPORTED_ATTRIBUTES
    message: str | None = None


@dataclass(frozen=True)
class DeviceReport:
    """Update-Job-Status from the device that holds the job."""

    state: JobState
    reasons: tuple[str, ...] = ()
    message: str | None = None
    impressions_completed: int = 0


@dataclass(frozen=True)
class DocumentReport:
    """Update-Document-Status from the device that holds the job: one document moves."""

    number: int
    state: DocumentState
    impressions_completed: int = 0


@dataclass(frozen=True)
class Cancel:
    """Cancel-Job from a client or an operator."""

    reason: str = Reason.JOB_CANCELED_BY_USER
    message: str | None = None


@dataclass(frozen=True)
class Abort:
    """The service gives up on the job (timeouts, device gone, fetch failed...)."""

    reason: str = Reason.ABORTED_BY_SYSTEM
    message: str | None = None


@dataclass(frozen=True)
class Release:
    """A claim is given back (step timeout before printing started): fetchable again."""

    message: str | None = None


@dataclass(frozen=True)
class Hold:
    """Hold-Job (or job-hold-until at submit): the job waits, unfetchable, until released.

    A job still taking its documents keeps taking them and is held once closed; a job a
    device has claimed is past holding (RFC 8011 4.3.5: only pending jobs can be held).
    """

    message: str | None = None


@dataclass(frozen=True)
class ReleaseHold:
    """Release-Job: a held job becomes fetchable again (or, still incoming, will be when closed)."""

    message: str | None = None


@dataclass(frozen=True)
class Suspend:
    """The device holding a processing job went away: processing-stopped until it returns."""

    reason: str = Reason.PRINTER_STOPPED
    message: str | None = None


Event = (Close | Accept | Reject | DeviceReport | DocumentReport | Cancel | Abort | Release | Suspend | Hold
         | ReleaseHold)

#: States a device may report, from each state the job can be in while the device holds it.
_DEVICE_MOVES: dict[JobState, frozenset[JobState]] = {
    S.PENDING: frozenset({S.PENDING, S.PROCESSING, S.PROCESSING_STOPPED, S.COMPLETED, S.ABORTED, S.CANCELED}),
    S.PROCESSING: frozenset({S.PROCESSING, S.PROCESSING_STOPPED, S.COMPLETED, S.ABORTED, S.CANCELED}),
    S.PROCESSING_STOPPED: frozenset({S.PROCESSING, S.PROCESSING_STOPPED, S.COMPLETED, S.ABORTED,
                                     S.CANCELED}),
}


@dataclass(frozen=True)
class Job:
    """The model's view of one job: state, reasons, version, claim flags and its documents."""

    state: JobState = S.PENDING_HELD
    reasons: tuple[str, ...] = (Reason.JOB_INCOMING,)
    message: str | None = None
    version: int = 0
    claimed: bool = False
    cancel_requested: bool = False
    impressions_completed: int = 0
    #: True once a device reported processing: such a job is never handed out again in full.
    started: bool = False
    documents: tuple[Document, ...] = ()
    history: tuple[tuple[JobState, tuple[str, ...]], ...] = field(default=(), compare=False)

    @classmethod
    def created(cls, with_documents: bool) -> Job:
        """A new job: fetchable at once when its documents came with it."""
        job = cls()
        return job.apply(Close()) if with_documents else job

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def fetchable(self) -> bool:
        return self.state is S.PENDING and not self.claimed and Reason.JOB_FETCHABLE in self.reasons

    @property
    def held(self) -> bool:
        """Held by Hold-Job or job-hold-until (kept in the reasons, so the store needs no column)."""
        return self.state is S.PENDING_HELD and Reason.JOB_HOLD_UNTIL_SPECIFIED in self.reasons

    def document(self, number: int) -> Document | None:
        return next((d for d in self.documents if d.number == number), None)

    def _to(self, state: JobState, reasons: tuple[str, ...], message: str | None = None,
            **changes: object) -> Job:
        if state.terminal:
            changes["documents"] = tuple(replace(d, state=document_state_for_job_end(d.state, state.value))
                                         for d in self.documents)
        return replace(self, state=state, reasons=reasons, message=message, version=self.version + 1,
                       history=(*self.history, (state, reasons)), **changes)

    def apply(self, event: Event) -> Job:
        if self.terminal:
            raise InvalidTransition(self, event, "the job has ended")
        match event:
            case Close():
                if self.state is not S.PENDING_HELD or Reason.JOB_INCOMING not in self.reasons:
                    raise InvalidTransition(self, event, "the job is not waiting for documents")
                if self.held:
                    return self._to(S.PENDING_HELD, (Reason.JOB_HOLD_UNTIL_SPECIFIED,), event.message or self.message)
                return self._to(S.PENDING, (Reason.JOB_FETCHABLE,), event.message)
            case Hold(message=message):
                if self.held:
                    return self
                if self.state is S.PENDING_HELD:  # still incoming: held once closed
                    return self._to(S.PENDING_HELD, (*self.reasons, Reason.JOB_HOLD_UNTIL_SPECIFIED), message)
                if not self.fetchable:
                    raise InvalidTransition(self, event, "only a pending job no device has claimed can be held")
                return self._to(S.PENDING_HELD, (Reason.JOB_HOLD_UNTIL_SPECIFIED,), message)
            case ReleaseHold(message=message):
                if not self.held:
                    raise InvalidTransition(self, event, "the job is not held")
                if Reason.JOB_INCOMING in self.reasons:
                    reasons = tuple(r for r in self.reasons if r != Reason.JOB_HOLD_UNTIL_SPECIFIED)
                    return self._to(S.PENDING_HELD, reasons, message)
                return self._to(S.PENDING, (Reason.JOB_FETCHABLE,), message)
            case Accept():
                if not self.fetchable:
                    raise InvalidTransition(self, event, "the job is not fetchable")
                return self._to(S.PENDING, (Reason.JOB_QUEUED,), claimed=True)
            case Reject(reason=reason, message=message):
                if not self.fetchable:
                    raise InvalidTransition(self, event, "the job is not fetchable")
                return self._to(S.ABORTED, _unique((Reason.ABORTED_BY_SYSTEM, reason)), message)
            case Release(message=message):
                if not self.claimed or self.started or self.state is not S.PENDING:
                    raise InvalidTransition(self, event, "only an unstarted claim can be released")
                return self._to(S.PENDING, (Reason.JOB_FETCHABLE,), message, claimed=False)
            case DeviceReport():
                return self._report(event)
            case DocumentReport():
                return self._document_report(event)
            case Cancel(reason=reason, message=message):
                if not self.claimed:
                    return self._to(S.CANCELED, (reason,), message)
                if self.cancel_requested:
                    return self
                reasons = _unique((*self.reasons, Reason.PROCESSING_TO_STOP_POINT))
                return self._to(self.state, reasons, message, cancel_requested=True)
            case Suspend(reason=reason, message=message):
                if not self.claimed or self.state is not S.PROCESSING:
                    raise InvalidTransition(self, event, "only a processing job can be suspended")
                reasons = (reason, Reason.PROCESSING_TO_STOP_POINT) if self.cancel_requested else (reason,)
                return self._to(S.PROCESSING_STOPPED, reasons, message)
            case Abort(reason=reason, message=message):
                return self._to(S.ABORTED, _unique((reason,)), message)
        raise InvalidTransition(self, event, "unknown event")

    def _report(self, event: DeviceReport) -> Job:
        if not self.claimed:
            raise InvalidTransition(self, event, "no device holds the job")
        if event.state not in _DEVICE_MOVES.get(self.state, frozenset()):
            raise InvalidTransition(self, event, f"a device cannot move it to {event.state}")
        if event.impressions_completed < self.impressions_completed:
            raise InvalidTransition(self, event, "impressions-completed cannot go down")
        reasons = tuple(r for r in event.reasons if r != Reason.NONE)
        if self.cancel_requested and not event.state.terminal:
            reasons = _unique((*reasons, Reason.PROCESSING_TO_STOP_POINT))
        if event.state is S.CANCELED and not self.cancel_requested:
            reasons = _unique((*reasons, Reason.JOB_CANCELED_AT_DEVICE))
        if event.state is S.COMPLETED and not reasons:
            reasons = (Reason.JOB_COMPLETED_SUCCESSFULLY,)
        if not reasons:
            reasons = (Reason.NONE,)
        if (event.state, reasons, event.message, event.impressions_completed) == (
                self.state, self.reasons, self.message, self.impressions_completed):
            return self
        started = self.started or event.state is not S.PENDING
        return self._to(event.state, reasons, event.message,
                        impressions_completed=event.impressions_completed, started=started)


    def _document_report(self, event: DocumentReport) -> Job:
        """A document moves; the job's version moves with it (its state does not)."""
        if not self.claimed:
            raise InvalidTransition(self, event, "the job is not claimed")
        doc = self.document(event.number)
        if doc is None:
            raise InvalidTransition(self, event, f"no document {event.number}")
        try:
            state = document_transition(doc.state, event.state)
        except InvalidDocumentTransition as exc:
            raise InvalidTransition(self, event, str(exc)) from None
        moved = replace(doc, state=state, impressions_completed=max(doc.impressions_completed,
                                                                    event.impressions_completed))
        documents = tuple(moved if d.number == event.number else d for d in self.documents)
        return replace(self, version=self.version + 1, documents=documents)


def _unique(reasons: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r for r in reasons if r))
