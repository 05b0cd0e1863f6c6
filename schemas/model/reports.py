"""The judgement of a device's report: apply it, or answer it without applying it.

One pure function, ``judge(job, applied_ids, message)``, decides for every job-changing
message a device sends (acknowledge-job, document-status, job-status) whether it becomes an
``Event`` on the job or a ``Verdict`` (the reply code and text the device gets instead):

- ``duplicate`` (ok): the message id was applied already (a retry after a lost reply), or a
  terminal report repeats the state the job already ended in;
- ``stale``: the report is based on a version of the job that is no longer current (someone,
  say a cancel, changed it meanwhile): the device adopts the current state and decides again;
- ``invalid-transition``: the job is not claimed, so no device may report on it;
- ``not-found``: no such document; ``bad-request``: scan output reported complete whose bytes
  are not the bytes the service stored.

The service calls it inside its optimistic transaction (cloud_service.store.JobStore.transition),
on the very row it then writes ``WHERE version = ...``: if anything changes the job between the
judgement and the write, the write fails, the row is read again and judged again. Whether an
event is allowed in the job's state is the job's own rule (``Job.apply``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.enums import DocumentState, Reason
from schemas.messages import AcknowledgeJob, DocumentStatus, JobStatus
from schemas.model.document import InvalidDocumentTransition, document_transition
from schemas.model.job import Accept, DeviceReport, DocumentReport, Event, Job, Reject

Report = AcknowledgeJob | DocumentStatus | JobStatus


@dataclass(frozen=True)
class Verdict:
    """A report answered without being applied: the reply's code, text and ok flag."""

    code: str
    message: str
    ok: bool = False


DUPLICATE = Verdict("duplicate", "already applied", ok=True)
STALE = Verdict("stale", "the job changed; see state")


def judge(job: Job, applied_ids: Sequence[str], message: Report) -> Event | Verdict:
    """The event ``message`` makes on ``job``, or the verdict that answers it instead."""
    if message.id in applied_ids:
        return DUPLICATE
    match message:
        case AcknowledgeJob():
            if message.version != job.version:
                return STALE
            if message.accept:
                return Accept()
            return Reject(message.reason or Reason.UNSUPPORTED_ATTRIBUTES,
                          message.message or "the device rejected the job")
        case DocumentStatus():
            if not job.claimed:
                return Verdict("invalid-transition", "the job is not claimed")
            if message.version != job.version:
                return STALE
            doc = job.document(message.document_number)
            if doc is None:
                return Verdict("not-found", "no such document")
            try:
                document_transition(doc.state, message.state)
            except InvalidDocumentTransition as exc:
                return Verdict("invalid-transition", str(exc))
            if doc.output and message.state is DocumentState.COMPLETED and (
                    doc.sha256 is None
                    or (message.sha256 or doc.sha256, message.size if message.size is not None else doc.size)
                    != (doc.sha256, doc.size)):
                # Output is complete only once the bytes the device made are the bytes stored.
                return Verdict("bad-request", f"output document {doc.number}: not uploaded, or size/sha256 "
                                              "differ from what the service stored")
            return DocumentReport(message.document_number, message.state, message.impressions_completed)
        case JobStatus():
            if message.version != job.version:
                if job.terminal and message.state == job.state:
                    # A terminal report that matches the current terminal state is harmless.
                    return Verdict("duplicate", "already ended", ok=True)
                return STALE
            return DeviceReport(message.state, tuple(message.reasons), message.message,
                                message.impressions_completed)
    raise TypeError(f"not a report: {type(message).__name__}")
