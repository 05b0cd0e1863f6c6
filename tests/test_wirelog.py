"""The Manager's wire log: one stable line per message (operators grep them), made only when
it is written."""

from __future__ import annotations

import logging

import pytest

from manager import wirelog
from manager.wirelog import describe, log_in, log_out
from schemas.enums import JobState, ServiceState
from schemas.messages import (
    Attributes,
    Bye,
    HeldJob,
    Hello,
    JobFetchable,
    JobStatus,
    Presence,
    PrintServiceAttributes,
    Reply,
    StopJob,
    Sync,
)

ID = "9f2c" * 8


def test_lines_name_type_job_version_state_and_ids() -> None:
    assert describe(JobStatus(id=ID, job_id=12, version=3, state=JobState.PROCESSING)) == \
        f"job-status job=12 v=3 state=processing id={ID}"
    assert describe(Reply(id="a1" * 16, re=ID, ok=True, code="ok", job_id=12, version=4)) == \
        f"reply job=12 v=4 code=ok re={ID} id={'a1' * 16}"
    assert describe(JobFetchable(id=ID, job_id=7)) == f"job-fetchable job=7 id={ID}"
    assert describe(Bye(id=ID)) == f"bye reason=shutdown id={ID}"
    assert describe(Presence(state="online", session="s1")) == "presence state=online"


def test_lines_list_the_jobs_of_hello_and_sync_and_the_services_of_attributes() -> None:
    hello = Hello(id=ID, software="m 1", jobs=[HeldJob(job_id=3, version=2, state=JobState.PROCESSING)])
    assert describe(hello) == f"hello jobs=[3] id={ID}"
    sync = Sync(id=ID, re="b2" * 16, fetchable=[4, 5], unknown=[9],
                stop=[StopJob(job_id=6, version=1, state=JobState.CANCELED)])
    assert describe(sync) == f"sync fetchable=[4, 5] stop=[6] unknown=[9] re={'b2' * 16} id={ID}"
    attributes = Attributes(id=ID, services=[
        PrintServiceAttributes(name="office"),
        PrintServiceAttributes(name="lobby", state=ServiceState.STOPPED, state_reasons=["media-empty"])])
    assert describe(attributes) == f"attributes office=idle lobby=stopped/media-empty id={ID}"


def test_a_line_is_made_only_when_it_is_written(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    made: list[str] = []

    def counting(message: object) -> str:
        made.append(type(message).__name__)
        return "line"

    monkeypatch.setattr(wirelog, "describe", counting)
    message = JobFetchable(job_id=7)
    with caplog.at_level(logging.WARNING, logger="cloudimaging.manager.wire"):
        log_out(message)
        log_in(message)
    assert made == [] and not caplog.records
    with caplog.at_level(logging.INFO, logger="cloudimaging.manager.wire"):
        log_out(message)
        log_in(message)
    assert made == ["JobFetchable", "JobFetchable"]
    assert [r.getMessage() for r in caplog.records] == ["-> line", "<- line"]
