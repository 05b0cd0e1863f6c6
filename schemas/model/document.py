"""The Document object (PWG 5100.5, INFRA's processing-stopped) as pure rules.

A job's documents are part of the job's model (``Job.documents``): a device's document report
is one more event on the job (``schemas.model.job.DocumentReport``), applied and versioned with
the job in one transaction, and when a job ends its unfinished documents end with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.enums import DocumentState

D = DocumentState

_MOVES: dict[DocumentState, frozenset[DocumentState]] = {
    D.PENDING: frozenset({D.PENDING, D.PROCESSING, D.PROCESSING_STOPPED, D.COMPLETED, D.ABORTED,
                          D.CANCELED}),
    D.PROCESSING: frozenset({D.PROCESSING, D.PROCESSING_STOPPED, D.COMPLETED, D.ABORTED, D.CANCELED}),
    D.PROCESSING_STOPPED: frozenset({D.PROCESSING, D.PROCESSING_STOPPED, D.COMPLETED, D.ABORTED,
                                     D.CANCELED}),
}


class InvalidDocumentTransition(Exception):
    pass


@dataclass(frozen=True)
class Document:
    """One document of a job as the model sees it.

    ``output`` marks a document the device makes (scan output): it may complete only once the
    bytes the device reports are the bytes the service stored (``size``/``sha256``).
    """

    number: int
    state: DocumentState = D.PENDING
    impressions_completed: int = 0
    output: bool = False
    size: int | None = None
    sha256: str | None = None


def document_transition(current: DocumentState, new: DocumentState) -> DocumentState:
    """Return ``new`` if a device may move a document from ``current`` to it."""
    if new not in _MOVES.get(current, frozenset()):
        raise InvalidDocumentTransition(f"document cannot go from {current} to {new}")
    return new


def document_state_for_job_end(current: DocumentState, job_state: str) -> DocumentState:
    """When a job ends, its unfinished documents end the same way (canceled or aborted)."""
    if current.terminal:
        return current
    if job_state == "completed":
        return D.COMPLETED
    return D.CANCELED if job_state == "canceled" else D.ABORTED
