"""The ``cloudimaging`` verbs, run in-process through ``main(argv)`` against the real
service, broker and Manager with simulated printers (tests/support/live.py)."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import client.cli as cli
import client.cli_common as cli_common
from client.api import CloudImagingClient
from schemas.api import JobInfo
from schemas.enums import JobState
from tests.support.live import LiveStack

pytestmark = pytest.mark.timeout(120)

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(live: LiveStack, user_token: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> Run:
    """``run(*argv) -> (exit code, stdout, stderr)``, configured by environment as this test's user."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLOUDIMAGING_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CLOUDIMAGING_URL", live.url)
    monkeypatch.setenv("CLOUDIMAGING_TOKEN", user_token)
    monkeypatch.setenv("CLOUDIMAGING_CA", str(live.ca))

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7\nhello\n")
    return path


def lines(pages: int) -> bytes:
    return b"".join(b"line %d\n" % n for n in range(60 * pages))


def only_job(user_client: CloudImagingClient) -> JobInfo:
    [job] = user_client.jobs(all=True)
    return job


def job_id_from(out: str) -> int:
    """The id in ``request id is office-42 (1 file(s))``."""
    first = out.splitlines()[0]
    assert first.startswith("request id is "), out
    return int(first.split()[3].rsplit("-", 1)[1])


def no_line_repeats(out: str) -> bool:
    rows = out.splitlines()
    return all(a != b for a, b in itertools.pairwise(rows))


# ------------------------------------------------------------------------------ printers


def test_printers_table(run: Run) -> None:
    code, out, err = run("printers")
    assert code == 0 and err == ""
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["NAME", "STATE", "REASONS", "ONLINE"]
    assert [r.split()[:4] for r in rows if r.startswith("office")] == [["office", "idle", "none", "online"]]
    assert [r.split()[:2] for r in rows if r.startswith("parked")] == [["parked", "stopped"]]


def test_printers_long_and_named(run: Run) -> None:
    code, out, _ = run("printers", "-l", "office")
    assert code == 0
    assert "print service office is idle, online." in out
    assert "sides: one-sided, two-sided-long-edge (default one-sided)" in out
    assert "parked" not in out


def test_printers_json_before_or_after_the_verb(run: Run) -> None:
    for argv in (("printers", "--json"), ("--json", "printers")):
        code, out, err = run(*argv)
        assert code == 0 and err == ""
        assert {"office", "slow", "rejecting", "parked"} <= {s["name"] for s in json.loads(out)["services"]}


def test_no_services_of_a_kind(run: Run) -> None:
    code, out, err = run("printers", "--kind", "faxout")
    assert (code, out) == (0, "")
    assert "no faxout services" in err


def test_unknown_printer_is_an_error(run: Run) -> None:
    code, out, err = run("printers", "nope")
    assert (code, out) == (1, "")
    assert err == "cloudimaging: error: no print service named 'nope'\n"


# ------------------------------------------------------------------------------ print


def test_print_like_lp(run: Run, user_client: CloudImagingClient, doc: Path, tmp_path: Path) -> None:
    code, out, err = run(
        "print", str(doc), "-p", "parked", "-n", "2", "-t", "Q3",
        "-o", "sides=two-sided-long-edge", "-o", "page-ranges=1-3,5", "-o", "finishings=4,5",
        "-o", "print-quality=5", "-o", "orientation-requested=4", "-o", "number-up=2",
        "-o", "media=iso_a4_210x297mm", "-o", "print-color-mode=color",
    )  # fmt: skip
    job = only_job(user_client)
    assert (code, out, err) == (0, f"request id is parked-{job.id} (1 file(s)) on printer parked\n", "")
    assert job.service == "parked"
    assert (job.documents[0].name, job.documents[0].format) == ("report.pdf", "application/pdf")
    assert job.ticket == {
        "job-name": "Q3",
        "copies": 2,
        "sides": "two-sided-long-edge",
        "media": "iso_a4_210x297mm",
        "print-color-mode": "color",
        "print-quality": 5,
        "orientation-requested": 4,
        "page-ranges": [[1, 3], [5, 5]],
        "number-up": 2,
        "finishings": [4, 5],
    }
    user_client.download(job.id, 1, tmp_path / "back.pdf")
    assert (tmp_path / "back.pdf").read_bytes() == doc.read_bytes()


def test_bad_option_is_refused_before_any_request(run: Run, user_client: CloudImagingClient, doc: Path) -> None:
    code, out, err = run("print", str(doc), "-o", "page-ranges=3-1")
    assert (code, out) == (2, "")
    assert err.startswith("cloudimaging: error: page-ranges:") and err.count("\n") == 1
    assert user_client.jobs(all=True) == []


def test_bad_option_is_refused_even_without_configuration(run: Run, doc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDIMAGING_URL")
    code, _, err = run("print", str(doc), "-o", "copies=many")
    assert code == 2 and "copies" in err


def test_unsupported_value_shows_the_attribute_and_what_is_supported(
    run: Run, user_client: CloudImagingClient, doc: Path
) -> None:
    code, out, err = run("print", str(doc), "-p", "office", "-o", "sides=two-sided-short-edge")
    assert (code, out) == (1, "")
    assert err.startswith("cloudimaging: error: sides=two-sided-short-edge is not supported")
    assert "one-sided, two-sided-long-edge" in err
    assert user_client.jobs(all=True) == []  # refused at create: no upload


def test_format_flag_overrides_detection(run: Run, user_client: CloudImagingClient, doc: Path) -> None:
    assert run("print", str(doc), "-p", "parked", "--format", "text/plain")[0] == 0
    assert only_job(user_client).documents[0].format == "text/plain"


def test_print_json_is_the_job_and_nothing_else(run: Run, user_client: CloudImagingClient, doc: Path) -> None:
    code, out, err = run("print", "--json", str(doc), "-p", "parked")
    assert code == 0 and err == ""
    job = json.loads(out)
    assert job["id"] == only_job(user_client).id and job["state"] == "pending"


def test_print_from_stdin(run: Run, user_client: CloudImagingClient, monkeypatch: pytest.MonkeyPatch,
                          tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"plain words\n")))
    assert run("print", "-", "-p", "parked")[0] == 0
    job = only_job(user_client)
    assert (job.documents[0].format, job.documents[0].name) == ("text/plain", "(stdin)")
    user_client.download(job.id, 1, tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_bytes() == b"plain words\n"


def test_print_by_reference(run: Run) -> None:
    """A URL is sent for the service to fetch (here one it refuses), not read as a file."""
    code, out, err = run("print", "https://127.0.0.1:1/a.pdf", "-p", "parked")
    assert (code, out) == (1, "")
    assert "document-uri" in err and "no such file" not in err


def test_missing_file(run: Run, user_client: CloudImagingClient, tmp_path: Path) -> None:
    code, _, err = run("print", str(tmp_path / "absent.pdf"))
    assert code == 1 and "absent.pdf: no such file" in err
    assert user_client.jobs(all=True) == []


def test_no_progress_output_when_stderr_is_not_a_terminal(run: Run, doc: Path) -> None:
    _, _, err = run("print", str(doc), "-p", "parked")
    assert err == ""


@pytest.mark.parametrize(("printer", "final", "code"), [("office", "completed", 0), ("rejecting", "aborted", 1)])
def test_print_wait_exit_code_follows_the_job(run: Run, doc: Path, printer: str, final: str, code: int) -> None:
    rc, out, _ = run("print", str(doc), "-p", printer, "--wait")
    assert rc == code
    job_id = job_id_from(out)
    rows = out.splitlines()
    assert all(row.startswith(f"{printer}-{job_id}: ") for row in rows[1:])  # the current state first
    assert rows[-1].startswith(f"{printer}-{job_id}: {final} (")
    assert no_line_repeats(out)  # a new version that looks the same prints no line


def test_print_wait_on_a_canceled_job_exits_2(run: Run, user_client: CloudImagingClient, tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_bytes(lines(100))

    def cancel_once_printing() -> None:
        while not user_client.jobs() or user_client.jobs()[0].state != JobState.PROCESSING:
            time.sleep(0.05)
        user_client.cancel(user_client.jobs()[0].id)

    canceler = threading.Thread(target=cancel_once_printing, daemon=True)
    canceler.start()
    code, out, _ = run("print", str(tmp_path / "long.txt"), "-p", "slow", "--wait")
    canceler.join(10)
    assert code == 2
    assert out.splitlines()[-1].startswith(f"slow-{job_id_from(out)}: canceled (")


def test_print_wait_json_prints_only_the_final_job(run: Run, doc: Path) -> None:
    code, out, _ = run("print", str(doc), "-p", "office", "--wait", "--json")
    assert code == 0
    assert json.loads(out)["state"] == "completed"


def test_ctrl_c_while_waiting_stops_waiting_without_canceling(
    run: Run, user_client: CloudImagingClient, tmp_path: Path
) -> None:
    (tmp_path / "long.txt").write_bytes(lines(100))

    def ctrl_c_once_printing() -> None:  # a page in, the command is surely following the job
        while not user_client.jobs() or user_client.jobs()[0].impressions_completed < 1:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=ctrl_c_once_printing, daemon=True)
    interrupter.start()
    code, out, err = run("print", str(tmp_path / "long.txt"), "-p", "slow", "--wait")
    interrupter.join(10)
    job = only_job(user_client)
    assert code == 130
    assert out.startswith(f"request id is slow-{job.id}")
    assert f"stopped waiting; job slow-{job.id} was not canceled" in err
    assert job.state == JobState.PROCESSING and "processing-to-stop-point" not in job.state_reasons
    user_client.cancel(job.id)


# ------------------------------------------------------------------------------ jobs, status, cancel


def test_jobs_and_all(run: Run, user_client: CloudImagingClient) -> None:
    done = user_client.submit(b"%PDF-1.4 done", service="office")
    user_client.wait(done.id)
    queued = user_client.submit(b"waiting", service="parked")
    code, out, _ = run("jobs")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["ID", str(queued.id)]
    _, out, _ = run("jobs", "--all")
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == sorted([str(queued.id), str(done.id)])
    _, out, _ = run("jobs", "-a", "--json")
    assert sorted(j["id"] for j in json.loads(out)["jobs"]) == sorted([queued.id, done.id])


def test_no_jobs_prints_nothing(run: Run) -> None:
    assert run("jobs") == (0, "", "")


def test_status_accepts_lp_request_ids(run: Run, user_client: CloudImagingClient) -> None:
    job = user_client.submit(b"%PDF-1.4 status", service="office")
    user_client.wait(job.id)
    code, out, _ = run("status", f"office-{job.id}")
    assert code == 0
    assert out.splitlines()[0] == f"job office-{job.id} is completed"
    assert "History:" in out
    code, out, _ = run("status", str(job.id), "--json")
    history = json.loads(out)["history"]
    assert history[0]["state"] == "pending-held" and history[-1]["state"] == "completed"


def test_status_wait(run: Run, user_client: CloudImagingClient) -> None:
    job = user_client.submit(b"%PDF-1.4 refused", service="rejecting")
    code, out, _ = run("status", str(job.id), "--wait")
    assert code == 1
    assert out.splitlines()[-1].startswith(f"rejecting-{job.id}: aborted (aborted-by-system")


def test_cancel_messages_and_exit_codes(run: Run, user_client: CloudImagingClient) -> None:
    queued = user_client.submit(b"waiting", service="parked")
    printing = user_client.submit(lines(100), service="slow")
    done = user_client.submit(b"%PDF-1.4 done", service="office")
    user_client.wait(done.id)
    for info in user_client.events(printing.id):
        if info.state == JobState.PROCESSING:
            break
    assert run("cancel", str(queued.id)) == (0, f"job parked-{queued.id} canceled\n", "")
    code, out, _ = run("cancel", f"slow-{printing.id}")
    assert (code, out) == (0, f"job slow-{printing.id} is being canceled; waiting for the printer to stop\n")
    code, out, err = run("cancel", str(done.id))
    assert (code, out) == (1, "")
    assert err == f"cloudimaging: error: job {done.id} has already ended (completed)\n"
    code, _, err = run("cancel", "999999")
    assert code == 1 and "999999" in err


def test_cancel_several_goes_on_after_a_failure(run: Run, user_client: CloudImagingClient) -> None:
    first, second = (user_client.submit(b"waiting", service="parked") for _ in range(2))
    code, out, err = run("cancel", str(first.id), "999999", str(second.id), "--json")
    assert code == 1
    assert [j["id"] for j in json.loads(out)["jobs"]] == [first.id, second.id]
    assert "999999" in err


def test_cancel_json_single(run: Run, user_client: CloudImagingClient) -> None:
    job = user_client.submit(b"waiting", service="parked")
    code, out, _ = run("--json", "cancel", str(job.id))
    assert code == 0 and json.loads(out)["state"] == "canceled"


# ------------------------------------------------------------------------------ errors and usage


def test_not_configured(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDIMAGING_URL")
    monkeypatch.delenv("CLOUDIMAGING_TOKEN")
    code, out, err = run("jobs")
    assert (code, out) == (1, "")
    assert err == "cloudimaging: error: no service configured: run `cloudimaging up` or pass --url/--token\n"


def test_flags_override_environment(run: Run) -> None:
    code, _, err = run("jobs", "--token", "wrong")
    assert code == 1 and "invalid or revoked token" in err


def test_client_json_is_found_from_a_subdirectory(
    run: Run, live: LiveStack, user_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CLOUDIMAGING_URL", "CLOUDIMAGING_TOKEN", "CLOUDIMAGING_CA"):
        monkeypatch.delenv(name)
    (tmp_path / ".cloudimaging").mkdir()
    config = {"url": live.url, "token": user_token, "ca": str(live.ca)}
    (tmp_path / ".cloudimaging" / "client.json").write_text(json.dumps(config))
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "dir")
    code, out, _ = run("printers")
    assert code == 0 and "office" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["print"],
        ["print", "x.pdf", "-n", "0"],
        ["status", "not-a-job"],
        ["cancel"],
        ["jobs", "--kind", "teleport"],
    ],
)
def test_usage_errors_exit_2(run: Run, argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert err


def test_help_goes_to_stdout_and_exits_0(run: Run) -> None:
    code, out, _ = run("print", "--help")
    assert code == 0 and "-o NAME=VALUE" in out


def test_exit_code_mapping() -> None:
    assert cli_common.exit_code_for(JobState.COMPLETED) == 0
    assert cli_common.exit_code_for(JobState.ABORTED) == 1
    assert cli_common.exit_code_for(JobState.CANCELED) == 2
    assert cli_common.exit_code_for(JobState.PROCESSING) == 1


@pytest.mark.parametrize(("text", "job_id"), [("42", 42), ("office-42", 42), ("my-printer-7", 7)])
def test_job_refs(text: str, job_id: int) -> None:
    assert cli_common.parse_job_ref(text) == job_id


# ------------------------------------------------------------------------------ extensions


def test_plugin_verbs_are_added_and_an_absent_package_is_skipped(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    good = types.ModuleType("ext_good.cli")

    def add_parser(subparsers: object) -> None:
        p = subparsers.add_parser("hello")  # type: ignore[attr-defined]
        p.add_argument("--name", default="world")
        p.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)

    good.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ext_good.cli", good)
    monkeypatch.setattr(cli, "PLUGINS", ("ext_not_installed.cli", "ext_good.cli"))
    assert run("hello", "--name", "cloud") == (3, "hello cloud\n", "")
    assert run("printers")[0] == 0


def test_a_plugin_that_is_installed_but_broken_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "ext_broken"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("import ext_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGINS", ("ext_broken.cli",))
    with pytest.raises(ImportError, match=r"ext_broken\.cli.*ext_dependency_that_is_missing"):
        cli.main(["printers"])


def test_the_other_packages_verbs_are_there_when_installed(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0
    for verb in ("broker", "manager", "service", "up", "users", "scan", "fax"):
        assert verb in out, verb


def test_bad_format_is_a_usage_error(run: Run, user_client: CloudImagingClient, doc: Path) -> None:
    code, _, err = run("print", str(doc), "--format", "pdf")
    assert code == 2 and "document-format" in err
    assert user_client.jobs(all=True) == []


def test_directory_is_not_a_document(run: Run, tmp_path: Path) -> None:
    code, _, err = run("print", str(tmp_path))
    assert code == 1 and "not a regular file" in err
