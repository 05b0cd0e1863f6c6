"""Tables and detail views, terminal-safety of server text, and the progress bar."""

from __future__ import annotations

import io

from client.progress import ProgressBar
from client.render import (
    capability_lines,
    clean,
    format_age,
    format_time,
    human_size,
    job_status,
    jobs_table,
    service_long,
    services_table,
    state_line,
    table,
)
from schemas.api import JobInfo, ServiceInfo
from tests.support.apidicts import job_dict, service_dict

NOW = 1_700_000_000.0


def test_table_aligns_columns_and_does_not_pad_the_last() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["z", "long value"]]) == "A    BB\nxxx  y\nz    long value"


def test_services_table() -> None:
    services = [
        ServiceInfo.model_validate(service_dict("office", queued_jobs=2)),
        ServiceInfo.model_validate(
            service_dict(
                "lobby",
                state="stopped",
                state_reasons=["offline-report", "media-empty"],
                online=False,
                last_seen=NOW - 3 * 3600,
                make_and_model=None,
            )
        ),
    ]
    assert services_table(services, now=NOW).splitlines() == [
        "NAME    STATE    REASONS                     ONLINE       JOBS  MAKE AND MODEL",
        "office  idle     none                        online       2     Acme LaserWriter 9000",
        "lobby   stopped  offline-report,media-empty  seen 3h ago  0     -",
    ]


def test_never_seen_device() -> None:
    service = ServiceInfo.model_validate(service_dict(online=False, last_seen=None))
    assert "never seen" in services_table([service], now=NOW)


def test_long_form_pairs_supported_with_default() -> None:
    text = service_long(ServiceInfo.model_validate(service_dict()), now=NOW)
    assert text.startswith("print service office is idle, online.")
    assert "\tLocation: 2nd floor" in text
    assert "\t\tcopies: 1-99 (default 1)" in text
    assert "\t\tsides: one-sided, two-sided-long-edge (default one-sided)" in text
    assert "\t\tpage-ranges: true" in text
    assert "Supplies" not in text
    with_supplies = service_dict(supplies=[{"name": "Black Toner", "type": "toner", "level": 72, "low_level": 10},
                                           {"name": "Waste Box", "type": "waste-toner", "level": -3}])
    text = service_long(ServiceInfo.model_validate(with_supplies), now=NOW)
    assert ("\tSupplies:\n\t\tBlack Toner (toner): 72% (low at 10%)\n"
            "\t\tWaste Box (waste-toner): some remaining\n") in text


def test_capability_lines_keep_unpaired_attributes() -> None:
    assert capability_lines({"color-supported": True, "printer-resolution-default": "600dpi"}) == [
        "color: true",
        "printer-resolution-default: 600dpi",
    ]


def test_jobs_table() -> None:
    jobs = [
        JobInfo.model_validate(job_dict(7)),
        JobInfo.model_validate(job_dict(12, "lobby", state="processing", state_reasons=["job-printing"])),
    ]
    lines = jobs_table(jobs).splitlines()
    assert lines[0].split() == ["ID", "PRINTER", "OWNER", "STATE", "REASONS", "SIZE", "CREATED"]
    assert lines[1].split()[:6] == ["7", "office", "alice", "pending", "job-queued", "2.0K"]
    assert lines[2].split()[:6] == ["12", "lobby", "alice", "processing", "job-printing", "2.0K"]
    assert lines[1].endswith(format_time(1_700_000_000.0))


def test_status_shows_ticket_documents_and_history() -> None:
    job = JobInfo.model_validate(
        job_dict(
            3,
            state="completed",
            state_reasons=["job-completed-successfully"],
            completed_at=NOW + 60,
            ticket={"sides": "two-sided-long-edge", "page-ranges": [[1, 3], [5, 5]]},
            history=[
                {"at": NOW, "version": 1, "state": "pending", "state_reasons": ["job-queued"], "message": None},
                {"at": NOW + 60, "version": 4, "state": "completed", "state_reasons": [], "message": "done"},
            ],
        )
    )
    text = job_status(job)
    assert text.splitlines()[0] == "job office-3 is completed"
    assert "\t\tpage-ranges=1-3,5-5" in text
    assert "\t\tsides=two-sided-long-edge" in text
    assert "\t\t1: doc.pdf application/pdf 2.0K pending (0 impression(s))" in text
    assert f"\t\t{format_time(NOW + 60)}  completed (none) - done" in text


def test_state_line() -> None:
    job = JobInfo.model_validate(
        job_dict(
            5, state="processing", state_reasons=["job-printing"], impressions_completed=3, state_message="page 3 of 10"
        )
    )
    assert state_line(job) == "office-5: processing (job-printing), 3 impression(s) - page 3 of 10"


def test_server_text_cannot_inject_terminal_escapes() -> None:
    assert clean("evil\x1b]0;pwned\x07name\u2028") == "evil?]0;pwned?name?"
    service = ServiceInfo.model_validate(service_dict(make_and_model="Acme\x1b[2J"))
    assert "\x1b" not in services_table([service], now=NOW)


def test_sizes_and_ages() -> None:
    assert [human_size(n) for n in (None, 0, 1023, 1536, 5 * 1024**2)] == ["-", "0B", "1023B", "1.5K", "5.0M"]
    assert [format_age(s) for s in (-5, 45, 600, 7200, 3 * 86400)] == ["0s", "45s", "10m", "2h", "3d"]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_tty() -> None:
    assert ProgressBar.for_stream(io.StringIO(), "x") is None
    assert isinstance(ProgressBar.for_stream(FakeTty(), "x"), ProgressBar)


def test_progress_bar_draws_throttled_and_ends_its_line() -> None:
    clock = iter([0.0, 0.01, 0.5, 0.51]).__next__
    stream = FakeTty()
    bar = ProgressBar(stream, "uploading a.pdf", width=10, clock=clock)
    bar(0, 2048)  # drawn
    bar(512, 2048)  # 10 ms later: skipped
    bar(1024, 2048)  # drawn
    bar(2048, 2048)  # the end is always drawn, then a newline
    bar(2048, 2048)  # after the end: nothing
    out = stream.getvalue()
    assert out.count("\r") == 3
    assert "\ruploading a.pdf   50% [#####     ] 1.0K/2.0K" in out
    assert out.endswith("\ruploading a.pdf  100% [##########] 2.0K/2.0K\n")


def test_progress_bar_finish_after_interruption_ends_the_line_once() -> None:
    stream = FakeTty()
    bar = ProgressBar(stream, "x", clock=lambda: 0.0)
    bar(1, 10)
    bar.finish()
    bar.finish()
    assert stream.getvalue().count("\n") == 1
