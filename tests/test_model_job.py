"""The job state machine: examples of each rule, and properties over random event sequences."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.enums import DocumentState, JobState, Reason
from schemas.model.document import Document
from schemas.model.job import (
    Abort,
    Accept,
    Cancel,
    Close,
    DeviceReport,
    DocumentReport,
    Hold,
    InvalidTransition,
    Job,
    Reject,
    Release,
    ReleaseHold,
    Suspend,
)

S = JobState


def claimed() -> Job:
    return Job.created(with_documents=True).apply(Accept())


def test_new_job_with_documents_is_fetchable() -> None:
    job = Job.created(with_documents=True)
    assert job.state is S.PENDING and job.fetchable and job.reasons == (Reason.JOB_FETCHABLE,)


def test_job_without_documents_waits_then_closes() -> None:
    job = Job.created(with_documents=False)
    assert job.state is S.PENDING_HELD and Reason.JOB_INCOMING in job.reasons and not job.fetchable
    assert job.apply(Close()).fetchable


def test_happy_path_versions_increase() -> None:
    job = claimed()
    job2 = job.apply(DeviceReport(S.PROCESSING))
    job3 = job2.apply(DeviceReport(S.COMPLETED, impressions_completed=4))
    assert [job.version, job2.version, job3.version] == [2, 3, 4]
    assert job3.state is S.COMPLETED and job3.reasons == (Reason.JOB_COMPLETED_SUCCESSFULLY,)
    assert job3.impressions_completed == 4


def test_accept_requires_fetchable() -> None:
    with pytest.raises(InvalidTransition):
        claimed().apply(Accept())
    with pytest.raises(InvalidTransition):
        Job.created(with_documents=False).apply(Accept())


def test_reject_aborts_with_device_reason() -> None:
    job = Job.created(True).apply(Reject("unsupported-document-format", "no PDF here"))
    assert job.state is S.ABORTED
    assert job.reasons == (Reason.ABORTED_BY_SYSTEM, "unsupported-document-format")
    assert job.message == "no PDF here"


def test_cancel_unclaimed_is_immediate() -> None:
    assert Job.created(True).apply(Cancel()).state is S.CANCELED
    assert Job.created(False).apply(Cancel()).state is S.CANCELED


def test_cancel_claimed_waits_for_device() -> None:
    job = claimed().apply(DeviceReport(S.PROCESSING)).apply(Cancel())
    assert job.state is S.PROCESSING and job.cancel_requested
    assert Reason.PROCESSING_TO_STOP_POINT in job.reasons
    assert job.apply(Cancel()) is job  # a second cancel changes nothing
    done = job.apply(DeviceReport(S.CANCELED))
    assert done.state is S.CANCELED and Reason.JOB_CANCELED_AT_DEVICE not in done.reasons


def test_device_cancel_without_request_is_marked() -> None:
    job = claimed().apply(DeviceReport(S.CANCELED))
    assert Reason.JOB_CANCELED_AT_DEVICE in job.reasons


def test_stopped_and_resumed() -> None:
    job = claimed().apply(DeviceReport(S.PROCESSING))
    stopped = job.apply(DeviceReport(S.PROCESSING_STOPPED, ("media-jam",)))
    assert stopped.state is S.PROCESSING_STOPPED and stopped.reasons == ("media-jam",)
    assert stopped.apply(DeviceReport(S.PROCESSING)).state is S.PROCESSING


def test_report_requires_claim_and_monotonic_impressions() -> None:
    with pytest.raises(InvalidTransition):
        Job.created(True).apply(DeviceReport(S.PROCESSING))
    job = claimed().apply(DeviceReport(S.PROCESSING, impressions_completed=3))
    with pytest.raises(InvalidTransition):
        job.apply(DeviceReport(S.PROCESSING, impressions_completed=2))


def test_device_cannot_move_back_to_pending() -> None:
    job = claimed().apply(DeviceReport(S.PROCESSING))
    with pytest.raises(InvalidTransition):
        job.apply(DeviceReport(S.PENDING))
    with pytest.raises(InvalidTransition):
        job.apply(DeviceReport(S.PENDING_HELD))


def test_identical_report_changes_nothing() -> None:
    job = claimed().apply(DeviceReport(S.PROCESSING, impressions_completed=1))
    assert job.apply(DeviceReport(S.PROCESSING, impressions_completed=1)) is job


def test_release_only_unstarted_claims() -> None:
    job = claimed()
    released = job.apply(Release())
    assert released.fetchable and not released.claimed
    with pytest.raises(InvalidTransition):
        job.apply(DeviceReport(S.PROCESSING)).apply(Release())


def test_suspend_while_device_away_then_resume() -> None:
    job = claimed().apply(DeviceReport(S.PROCESSING))
    away = job.apply(Suspend(message="device offline"))
    assert away.state is S.PROCESSING_STOPPED and away.reasons == (Reason.PRINTER_STOPPED,)
    assert away.apply(DeviceReport(S.PROCESSING)).state is S.PROCESSING
    with pytest.raises(InvalidTransition):
        claimed().apply(Suspend())  # not started: released or aborted by the step rules instead


def test_hold_and_release() -> None:
    # A fetchable job is held (no device may take it) and released (fetchable again).
    held = Job.created(with_documents=True).apply(Hold())
    assert held.state is S.PENDING_HELD and held.held and not held.fetchable
    assert held.reasons == (Reason.JOB_HOLD_UNTIL_SPECIFIED,) and held.apply(Hold()) == held
    with pytest.raises(InvalidTransition):
        held.apply(Accept())
    assert held.apply(ReleaseHold()).fetchable
    # Held while its documents come in (job-hold-until at submit): held once closed.
    incoming = Job.created(with_documents=False).apply(Hold())
    assert incoming.state is S.PENDING_HELD and Reason.JOB_INCOMING in incoming.reasons and incoming.held
    closed = incoming.apply(Close())
    assert closed.held and Reason.JOB_INCOMING not in closed.reasons
    with pytest.raises(InvalidTransition):
        closed.apply(Close())
    # ... or released before it closed: fetchable at close.
    assert incoming.apply(ReleaseHold()).apply(Close()).fetchable
    # A claimed job is past holding; a job not held cannot be released; a held job can be canceled.
    with pytest.raises(InvalidTransition):
        claimed().apply(Hold())
    with pytest.raises(InvalidTransition):
        Job.created(with_documents=True).apply(ReleaseHold())
    assert held.apply(Cancel()).state is S.CANCELED


@pytest.mark.parametrize("final", [S.COMPLETED, S.ABORTED, S.CANCELED])
def test_terminal_states_are_final(final: JobState) -> None:
    job = claimed().apply(DeviceReport(final))
    for event in (Close(), Accept(), Reject(), DeviceReport(S.PROCESSING), Cancel(), Abort(), Release(), Suspend(),
                  Hold(), ReleaseHold()):
        with pytest.raises(InvalidTransition):
            job.apply(event)


def test_document_report_moves_one_document_and_the_version() -> None:
    job = replace(claimed(), documents=(Document(1), Document(2)))
    moved = job.apply(DocumentReport(1, DocumentState.PROCESSING, 2))
    assert moved.version == job.version + 1 and moved.state is job.state and moved.reasons == job.reasons
    assert moved.document(1) == Document(1, DocumentState.PROCESSING, 2) and moved.document(2) == Document(2)
    # impressions never go down; a completed document stays completed
    done = moved.apply(DocumentReport(1, DocumentState.COMPLETED, 1))
    assert done.document(1).impressions_completed == 2
    with pytest.raises(InvalidTransition, match="document cannot go"):
        done.apply(DocumentReport(1, DocumentState.PROCESSING))
    with pytest.raises(InvalidTransition, match="no document 3"):
        done.apply(DocumentReport(3, DocumentState.PROCESSING))
    with pytest.raises(InvalidTransition, match="not claimed"):
        replace(Job.created(True), documents=(Document(1),)).apply(DocumentReport(1, DocumentState.PROCESSING))


def test_documents_end_with_their_job() -> None:
    job = replace(claimed(), documents=(Document(1, DocumentState.COMPLETED), Document(2, DocumentState.PROCESSING),
                                        Document(3)))
    canceled = job.apply(Cancel()).apply(DeviceReport(S.CANCELED))
    assert [d.state for d in canceled.documents] == [DocumentState.COMPLETED, DocumentState.CANCELED,
                                                     DocumentState.CANCELED]
    aborted = job.apply(Abort())
    assert [d.state for d in aborted.documents] == [DocumentState.COMPLETED, DocumentState.ABORTED,
                                                    DocumentState.ABORTED]
    completed = job.apply(DeviceReport(S.COMPLETED))
    assert all(d.state is DocumentState.COMPLETED for d in completed.documents)


# ----------------------------------------------------------------------------- properties

DOCUMENT_MOVES = {(a, b) for a in (DocumentState.PENDING, DocumentState.PROCESSING, DocumentState.PROCESSING_STOPPED)
                  for b in DocumentState if not (b is DocumentState.PENDING and a is not DocumentState.PENDING)}

events = st.one_of(
    st.builds(DocumentReport, number=st.integers(1, 3), state=st.sampled_from(list(DocumentState)),
              impressions_completed=st.integers(0, 20)),
    st.just(Close()), st.just(Accept()), st.builds(Reject), st.builds(Cancel), st.builds(Abort),
    st.builds(Release), st.builds(Suspend), st.builds(Hold), st.builds(ReleaseHold),
    st.builds(DeviceReport, state=st.sampled_from(list(JobState)),
              reasons=st.lists(st.sampled_from(["media-jam", "media-empty", "none"]), max_size=2).map(tuple),
              impressions_completed=st.integers(0, 20)),
)

#: Every (from, to) pair a job may take; anything else is a bug.
LEGAL = {
    (S.PENDING_HELD, S.PENDING), (S.PENDING_HELD, S.CANCELED), (S.PENDING_HELD, S.ABORTED),
    (S.PENDING_HELD, S.PENDING_HELD), (S.PENDING, S.PENDING_HELD),
    (S.PENDING, S.PENDING), (S.PENDING, S.PROCESSING), (S.PENDING, S.PROCESSING_STOPPED),
    (S.PENDING, S.COMPLETED), (S.PENDING, S.ABORTED), (S.PENDING, S.CANCELED),
    (S.PROCESSING, S.PROCESSING), (S.PROCESSING, S.PROCESSING_STOPPED), (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.ABORTED), (S.PROCESSING, S.CANCELED),
    (S.PROCESSING_STOPPED, S.PROCESSING_STOPPED), (S.PROCESSING_STOPPED, S.PROCESSING),
    (S.PROCESSING_STOPPED, S.COMPLETED), (S.PROCESSING_STOPPED, S.ABORTED),
    (S.PROCESSING_STOPPED, S.CANCELED),
}


@settings(max_examples=400, deadline=None)
@given(start_with_documents=st.booleans(), sequence=st.lists(events, max_size=25))
def test_no_sequence_breaks_the_rules(start_with_documents: bool, sequence: list) -> None:
    job = replace(Job.created(start_with_documents), documents=(Document(1), Document(2)))
    for event in sequence:
        was_terminal = job.terminal
        try:
            nxt = job.apply(event)
        except InvalidTransition:
            continue
        assert not was_terminal, "a terminal job accepted an event"
        assert (job.state, nxt.state) in LEGAL, f"{job.state} -> {nxt.state} by {event}"
        assert nxt.version in (job.version, job.version + 1)
        assert nxt.impressions_completed >= job.impressions_completed
        if nxt.state is not S.PENDING:
            assert not nxt.fetchable
        if job.started:
            assert nxt.started, "a started job became unstarted"
            assert not nxt.fetchable, "a started job became fetchable again (would print twice)"
        if nxt.version != job.version:
            assert nxt.reasons, "every state carries at least one reason"
        for old, new in zip(job.documents, nxt.documents, strict=True):
            assert old.state == new.state or (old.state, new.state) in DOCUMENT_MOVES or nxt.terminal, \
                f"document {old.number}: {old.state} -> {new.state} by {event}"
            assert new.impressions_completed >= old.impressions_completed
        if isinstance(event, DocumentReport):
            assert (nxt.state, nxt.reasons) == (job.state, job.reasons), "a document report moved the job"
            assert job.claimed, "a document moved on a job no device holds"
        if nxt.terminal:
            assert all(d.state.terminal for d in nxt.documents), "a job ended with a document still open"
        job = nxt


@settings(max_examples=200, deadline=None)
@given(sequence=st.lists(events, max_size=25))
def test_cancel_always_ends_an_unclaimed_job(sequence: list) -> None:
    job = Job.created(True)
    for event in sequence:
        with contextlib.suppress(InvalidTransition):
            job = job.apply(event)
    if not job.terminal and not job.claimed:
        assert job.apply(Cancel()).state is S.CANCELED
    if not job.terminal and job.claimed:
        assert job.apply(Cancel()).cancel_requested
