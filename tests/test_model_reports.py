"""The judgement of device reports (schemas.model.reports): examples of each verdict and
properties over random jobs and reports."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.enums import DocumentState, JobState, Reason
from schemas.messages import AcknowledgeJob, DocumentStatus, JobStatus
from schemas.model.document import Document
from schemas.model.job import Accept, Cancel, DeviceReport, DocumentReport, Job, Reject
from schemas.model.reports import Verdict, judge

S = JobState
D = DocumentState
SHA = "ab" * 32


def fetchable() -> Job:
    return replace(Job.created(with_documents=True), documents=(Document(1), Document(2)))


def claimed() -> Job:
    return fetchable().apply(Accept())


def test_acknowledge_accept_reject_and_stale() -> None:
    job = fetchable()
    assert judge(job, [], AcknowledgeJob(job_id=1, version=job.version, accept=True)) == Accept()
    refused = judge(job, [], AcknowledgeJob(job_id=1, version=job.version, accept=False,
                                            reason="document-format-not-supported", message="no PDF"))
    assert refused == Reject("document-format-not-supported", "no PDF")
    assert judge(job, [], AcknowledgeJob(job_id=1, version=job.version, accept=False)) == Reject(
        Reason.UNSUPPORTED_ATTRIBUTES, "the device rejected the job")
    stale = judge(job, [], AcknowledgeJob(job_id=1, version=job.version - 1, accept=True))
    assert stale == Verdict("stale", "the job changed; see state")


def test_duplicate_comes_first() -> None:
    job = claimed()
    msg = JobStatus(job_id=1, version=0, state=S.PROCESSING)  # stale too: duplicate wins
    assert judge(job, ["x", msg.id], msg) == Verdict("duplicate", "already applied", ok=True)


def test_job_status() -> None:
    job = claimed()
    msg = JobStatus(job_id=1, version=job.version, state=S.PROCESSING, reasons=["media-jam"], message="jam",
                    impressions_completed=3)
    assert judge(job, [], msg) == DeviceReport(S.PROCESSING, ("media-jam",), "jam", 3)
    assert judge(job, [], msg.model_copy(update={"version": job.version + 1})).code == "stale"
    ended = job.apply(DeviceReport(S.COMPLETED))
    late = JobStatus(job_id=1, version=job.version, state=S.COMPLETED)
    assert judge(ended, [], late) == Verdict("duplicate", "already ended", ok=True)
    assert judge(ended, [], late.model_copy(update={"state": S.ABORTED})).code == "stale"


def test_document_status() -> None:
    job = claimed()
    msg = DocumentStatus(job_id=1, document_number=2, version=job.version, state=D.PROCESSING,
                         impressions_completed=1)
    assert judge(job, [], msg) == DocumentReport(2, D.PROCESSING, 1)
    assert judge(fetchable(), [], msg.model_copy(update={"version": fetchable().version})) == Verdict(
        "invalid-transition", "the job is not claimed")
    assert judge(job, [], msg.model_copy(update={"version": 0})).code == "stale"
    assert judge(job, [], msg.model_copy(update={"document_number": 3})) == Verdict("not-found", "no such document")
    done = replace(job, documents=(Document(1, D.COMPLETED),))
    back = judge(done, [], msg.model_copy(update={"document_number": 1}))
    assert isinstance(back, Verdict) and back.code == "invalid-transition"


def test_output_completes_only_with_the_stored_bytes() -> None:
    job = replace(claimed(), documents=(Document(1, output=True),))
    report = DocumentStatus(job_id=1, document_number=1, version=job.version, state=D.COMPLETED, size=10, sha256=SHA)
    assert judge(job, [], report).code == "bad-request"  # nothing uploaded yet
    stored = replace(job, documents=(Document(1, output=True, size=10, sha256=SHA),))
    assert judge(stored, [], report) == DocumentReport(1, D.COMPLETED, 0)
    assert judge(stored, [], report.model_copy(update={"size": 11})).code == "bad-request"
    assert judge(stored, [], report.model_copy(update={"sha256": "cd" * 32})).code == "bad-request"
    # an input document (print) has no such rule
    assert judge(claimed(), [], report) == DocumentReport(1, D.COMPLETED, 0)


# ----------------------------------------------------------------------------- properties

jobs = st.sampled_from([fetchable(), claimed(), claimed().apply(DeviceReport(S.PROCESSING)),
                        claimed().apply(Cancel()), claimed().apply(DeviceReport(S.COMPLETED)),
                        fetchable().apply(Cancel())])
reports = st.one_of(
    st.builds(AcknowledgeJob, job_id=st.just(1), version=st.integers(0, 6), accept=st.booleans()),
    st.builds(JobStatus, job_id=st.just(1), version=st.integers(0, 6), state=st.sampled_from(list(S))),
    st.builds(DocumentStatus, job_id=st.just(1), document_number=st.integers(1, 3), version=st.integers(0, 6),
              state=st.sampled_from(list(D))),
)


@settings(max_examples=500, deadline=None)
@given(job=jobs, message=reports, applied=st.booleans())
def test_only_current_new_reports_become_events(job: Job, message: object, applied: bool) -> None:
    outcome = judge(job, [message.id] if applied else [], message)  # type: ignore[attr-defined]
    if applied:
        assert outcome == Verdict("duplicate", "already applied", ok=True)
    elif message.version != job.version:  # type: ignore[attr-defined]
        assert isinstance(outcome, Verdict) and outcome.code in ("stale", "duplicate", "invalid-transition")
        assert outcome.code != "duplicate" or (job.terminal and message.state == job.state)  # type: ignore[attr-defined]
    if isinstance(outcome, Verdict):
        assert outcome.ok == (outcome.code == "duplicate")
    else:
        assert message.version == job.version  # type: ignore[attr-defined]


@pytest.mark.parametrize("state", [D.PROCESSING, D.COMPLETED, D.ABORTED])
def test_a_judged_document_report_is_a_legal_event(state: DocumentState) -> None:
    job = claimed()
    event = judge(job, [], DocumentStatus(job_id=1, document_number=1, version=job.version, state=state))
    assert isinstance(event, DocumentReport)
    assert job.apply(event).document(1).state is state
