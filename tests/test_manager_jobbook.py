"""JobRecord's phase transitions and the restart policy that reads them (manager.recovery)."""

from __future__ import annotations

import pytest

from manager import recovery
from manager.jobbook import JobRecord, Phase, PhaseError
from schemas.enums import JobState
from schemas.messages import DocumentAccess
from schemas.tickets import PrintJobTicket


def access(number: int) -> DocumentAccess:
    return DocumentAccess(document_number=number, url=f"https://x/{number}", expires_at=0.0, size=1,
                          sha256="0" * 64, document_format="application/pdf")


def claimed(documents: int = 2) -> JobRecord:
    record = JobRecord(1)
    record.fetched("print", PrintJobTicket(), documents, "office")
    record.claim([access(n) for n in range(1, documents + 1)])
    return record


def test_the_whole_way_through() -> None:
    record = JobRecord(1)
    record.fetched("print", PrintJobTicket(copies=2), 0, "office")
    assert record.document_count == 1 and record.phase is Phase.FETCHING
    record.acknowledge(in_flight=True)
    assert record.acknowledging
    record.acknowledge(in_flight=False)
    record.claim([access(1), access(2)])
    assert record.claimed and record.phase is Phase.QUEUED and record.document_count == 2
    record.start_work()
    record.report(JobState.PROCESSING, ("job-printing",))
    for number in (1, 2):
        record.start_document(number)
        record.progress(3 * number)
        record.finish_document(number)
    assert record.documents_done == {1, 2} and record.printing_document is None
    record.end(JobState.COMPLETED, ("job-completed-successfully",), None)
    assert record.phase is Phase.ENDING and record.state is JobState.COMPLETED
    record.end(JobState.COMPLETED, ("job-completed-successfully",), None)  # resent after a restart


def test_illegal_moves_raise() -> None:
    record = JobRecord(1)
    with pytest.raises(PhaseError):
        record.start_work()  # not claimed
    with pytest.raises(PhaseError):
        record.end(JobState.ABORTED, (), None)  # FETCHING cannot end: it is forgotten instead
    record = claimed()
    with pytest.raises(PhaseError):
        record.fetched("print", PrintJobTicket(), 1, "office")
    with pytest.raises(PhaseError):
        record.acknowledge(in_flight=True)
    with pytest.raises(PhaseError):
        record.claim([])
    with pytest.raises(PhaseError):
        record.start_document(1)  # not at work yet
    record.start_work()
    record.start_document(1)
    with pytest.raises(PhaseError):
        record.start_document(2)  # one document at a time
    with pytest.raises(PhaseError):
        record.finish_document(2)
    with pytest.raises(PhaseError):
        record.resume()  # paper may be out: a restart must not resume it
    record.finish_document(1)
    with pytest.raises(PhaseError):
        record.start_document(1)  # never printed twice
    record.end(JobState.CANCELED, (), None)
    for move in (record.start_work, record.resume, lambda: record.report(JobState.PROCESSING, ())):
        with pytest.raises(PhaseError):
            move()


def test_cancel_is_requested_once_and_never_after_the_end() -> None:
    record = claimed()
    assert record.request_cancel() and record.cancel_requested
    assert not record.request_cancel()
    ended = claimed()
    ended.end(JobState.COMPLETED, (), None)
    assert not ended.request_cancel() and not ended.cancel_requested


def test_progress_never_goes_down_and_versions_only_grow() -> None:
    record = claimed()
    record.progress(5)
    record.progress(3)
    record.adopt_version(4)
    record.adopt_version(2)
    assert record.impressions_completed == 5 and record.version == 4


def test_restart_policy() -> None:
    assert isinstance(recovery.plan(JobRecord(1)), recovery.Forget)
    queued = claimed()
    assert isinstance(recovery.plan(queued), recovery.Resume)
    between = claimed()
    between.start_work()
    between.start_document(1)
    between.finish_document(1)
    assert isinstance(recovery.plan(between), recovery.Resume)
    between.resume()
    assert between.phase is Phase.QUEUED and between.documents_done == {1}
    cut = claimed()
    cut.start_work()
    cut.start_document(2)
    cut.progress(7)
    decision = recovery.plan(cut)
    assert isinstance(decision, recovery.Finish)
    assert decision.outcome[0] is JobState.ABORTED and "document 2 after 7 impression(s)" in str(decision.outcome[2])
    done = claimed(1)
    done.start_work()
    done.start_document(1)
    done.finish_document(1)
    decision = recovery.plan(done)
    assert isinstance(decision, recovery.Finish) and decision.outcome[0] is JobState.COMPLETED
    ending = claimed()
    ending.end(JobState.CANCELED, ("job-canceled-by-user",), "by alice")
    decision = recovery.plan(ending)
    assert isinstance(decision, recovery.Finish)
    assert decision.outcome == (JobState.CANCELED, ("job-canceled-by-user",), "by alice")
