"""Retention rules: how long a job's document bytes and its history are kept.

Pure: plain values in, plain values out. The service's sweeper (cloud_service.retention) and
its job views apply these rules to rows; nothing here knows about tables or configuration files.

- documents: ``discard-after-processing`` (deleted at the first sweep after the job ended),
  ``after-duration`` (``document_seconds`` after it ended) or ``keep``;
- history: the job itself is deleted ``history_seconds`` after it ended, never sooner than
  ``MIN_HISTORY_SECONDS`` (so no presigned URL outlives its job), or kept when that is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DOCUMENT_POLICIES = ("discard-after-processing", "after-duration", "keep")
#: Upload URLs live up to an hour; no job row goes sooner.
MIN_HISTORY_SECONDS = 3600.0


@dataclass(frozen=True)
class Retention:
    """One level of retention policy; None fields defer to the level below."""

    documents: str | None
    document_seconds: float | None
    history_seconds: float | None


def resolve(defaults: Retention, policy: Retention | None, choice: dict[str, Any] | None) -> Retention:
    """The job's retention from its own choice, else its service's policy, else the defaults."""
    choice = choice or {}
    documents = choice.get("documents") or (policy.documents if policy else None) or defaults.documents
    seconds = (choice.get("document_seconds") or (policy.document_seconds if policy else None)
               or defaults.document_seconds)
    if "history_seconds" in choice and choice["history_seconds"] is not None:
        history = choice["history_seconds"]
    elif policy is not None and policy.history_seconds is not None:
        history = policy.history_seconds
    else:
        history = defaults.history_seconds
    return Retention(documents, seconds if documents == "after-duration" else None, history)


def describe(stored: Retention | None, defaults: Retention, ended: float | None,
             discarded_at: float | None) -> dict[str, Any]:
    """The policy as a job's details show it, with when each deletion is due.

    ``stored`` is what the job was given at submission (None for jobs from before retention
    existed: they follow the defaults).
    """
    rules = stored if stored is not None and stored.documents else defaults
    documents = rules.documents
    seconds = rules.document_seconds
    history = rules.history_seconds
    docs_due = None
    if ended is not None:
        if documents == "discard-after-processing":
            docs_due = ended
        elif documents == "after-duration" and seconds is not None:
            docs_due = ended + seconds
    job_due = ended + max(history, MIN_HISTORY_SECONDS) if ended is not None and history is not None else None
    return {"documents": documents, "document_seconds": seconds if documents == "after-duration" else None,
            "history_seconds": history, "documents_discarded_at": discarded_at,
            "documents_delete_after": docs_due, "job_delete_after": job_due}
