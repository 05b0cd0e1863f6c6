"""The Document object's states (PWG 5100.5, INFRA's processing-stopped) as pure rules."""

from __future__ import annotations

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
