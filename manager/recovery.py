"""The restart policy: what becomes of each job the journal kept (docs/reliability.md).

- not claimed yet: forgotten; the service offers it again or takes the claim back;
- final state decided but not confirmed: the final job-status is sent again;
- claimed only to report again the end this device gave it before (a restored database): that
  final state is sent, the job never printed;
- a document was being printed (or a scan or fax was at work): the job ends aborted with
  the impressions done, never done again in full (the device may have output part of it);
- every document done: completed;
- claimed, nothing on paper yet (queued, or between documents): the job goes on with the
  documents not yet done.

``plan`` only decides; the runner carries the decision out.
"""

from __future__ import annotations

from dataclasses import dataclass

from manager.flows.base import COMPLETED, Outcome
from manager.jobbook import JobRecord, Phase
from schemas.enums import JobState, Reason


@dataclass(frozen=True)
class Forget:
    """Not claimed: drop the record without remembering the job."""


@dataclass(frozen=True)
class Finish:
    """Send this final job-status and let the job go."""

    outcome: Outcome
    why: str


@dataclass(frozen=True)
class Resume:
    """Put the job back in the queue; it goes on with the documents not yet done."""


Plan = Forget | Finish | Resume


def plan(record: JobRecord) -> Plan:
    """What to do with one journaled job after a restart."""
    if not record.claimed:
        return Forget()
    if record.phase is Phase.ENDING:
        return Finish((record.state, record.reasons, record.message), f"resending its final state {record.state}")
    if record.replay is not None:
        return Finish(replay_outcome(record.replay, record.on_paper),
                      f"reporting again the final state {record.replay} it had before the database was restored")
    if record.printing_document is not None:
        message = (f"the Manager restarted while printing document {record.printing_document} after "
                   f"{record.impressions_completed} impression(s); not printed again to avoid duplicates")
        return Finish((JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), message), message)
    if set(range(1, record.document_count + 1)) <= record.documents_done:
        return Finish(COMPLETED, "all documents were printed")
    return Resume()


def replay_outcome(state: JobState, on_paper: bool) -> Outcome:
    """The final job-status that ends a restored copy of a job this device already let go."""
    if state is JobState.COMPLETED:
        return (state, (), "printed by this device before the service's database was restored; not printed again")
    if state is JobState.CANCELED:
        return (state, (), "canceled at this device before the service's database was restored")
    what = "partly output" if on_paper else "ended"
    return (JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,),
            f"{what} by this device before the service's database was restored; not printed again")
