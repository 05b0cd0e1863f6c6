"""The ``cloudimaging`` verbs, run in-process through ``main(argv)`` against the in-memory API."""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import client.cli as cli
import client.cli_common as cli_common
from client.api import CloudImagingClient
from client.config import ClientConfig
from schemas.enums import JobState
from tests.support.fakeapi import BASE, TOKEN, FakeService, job_dict

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture
def run(fake: FakeService, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    """``run(*argv) -> (exit code, stdout, stderr)``, configured by environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("CLOUDIMAGING_CA", "CLOUDIMAGING_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CLOUDIMAGING_URL", BASE)
    monkeypatch.setenv("CLOUDIMAGING_TOKEN", TOKEN)

    def factory(config: ClientConfig) -> CloudImagingClient:
        return CloudImagingClient(config.url, config.token, config.ca, transport=fake.transport(), sleep=fake_sleep)

    def fake_sleep(_seconds: float) -> None:
        pass

    monkeypatch.setattr(cli_common, "client_factory", factory)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7\nhello\n")
    return path


def created_ticket(fake: FakeService) -> dict:
    return json.loads(fake.calls("POST", "/api/v1/jobs")[0].content)


# ------------------------------------------------------------------------------ printers


def test_printers_table(run: Run) -> None:
    code, out, err = run("printers")
    assert code == 0 and err == ""
    assert out.splitlines()[0].split()[:4] == ["NAME", "STATE", "REASONS", "ONLINE"]
    assert out.splitlines()[1].split()[:5] == ["office", "idle", "none", "online", "0"]


def test_printers_long_and_named(run: Run) -> None:
    code, out, _ = run("printers", "-l", "office")
    assert code == 0
    assert "print service office is idle, online." in out
    assert "sides: one-sided, two-sided-long-edge (default one-sided)" in out


def test_printers_json_before_or_after_the_verb(run: Run) -> None:
    for argv in (("printers", "--json"), ("--json", "printers")):
        code, out, err = run(*argv)
        assert code == 0 and err == ""
        assert [s["name"] for s in json.loads(out)["services"]] == ["office"]


def test_no_services_of_a_kind(run: Run) -> None:
    code, out, err = run("printers", "--kind", "scan")
    assert (code, out) == (0, "")
    assert "no scan services" in err


def test_unknown_printer_is_an_error(run: Run) -> None:
    code, out, err = run("printers", "nope")
    assert (code, out) == (1, "")
    assert err == "cloudimaging: error: no print service named 'nope'\n"


# ------------------------------------------------------------------------------ print


def test_print_like_lp(run: Run, fake: FakeService, doc: Path) -> None:
    code, out, err = run(
        "print", str(doc), "-p", "office", "-n", "2", "-t", "Q3",
        "-o", "sides=two-sided-long-edge", "-o", "page-ranges=1-3,5", "-o", "finishings=4,5",
        "-o", "print-quality=5", "-o", "orientation-requested=4", "-o", "number-up=2",
        "-o", "media=iso_a4_210x297mm", "-o", "print-color-mode=color",
    )  # fmt: skip
    assert (code, out, err) == (0, "request id is office-1 (1 file(s))\n", "")
    body = created_ticket(fake)
    assert body["service"] == "office"
    assert body["document_name"] == "report.pdf"
    assert body["document_format"] == "application/pdf"
    assert body["ticket"] == {
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
    assert fake.uploads[1] == doc.read_bytes()


def test_bad_option_is_refused_before_any_request(run: Run, fake: FakeService, doc: Path) -> None:
    code, out, err = run("print", str(doc), "-o", "page-ranges=3-1")
    assert (code, out) == (2, "")
    assert err.startswith("cloudimaging: error: page-ranges:") and err.count("\n") == 1
    assert fake.requests == []


def test_bad_option_is_refused_even_without_configuration(run: Run, doc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDIMAGING_URL")
    code, _, err = run("print", str(doc), "-o", "copies=many")
    assert code == 2 and "copies" in err


def test_unsupported_value_shows_the_attribute_and_what_is_supported(run: Run, fake: FakeService, doc: Path) -> None:
    code, out, err = run("print", str(doc), "-o", "sides=two-sided-short-edge")
    assert (code, out) == (1, "")
    assert err.startswith("cloudimaging: error: sides=two-sided-short-edge is not supported")
    assert "one-sided, two-sided-long-edge" in err
    assert not fake.calls("PUT", "/objects/")


def test_format_flag_overrides_detection(run: Run, fake: FakeService, doc: Path) -> None:
    assert run("print", str(doc), "--format", "text/plain")[0] == 0
    assert created_ticket(fake)["document_format"] == "text/plain"


def test_print_json_is_the_job_and_nothing_else(run: Run, doc: Path) -> None:
    code, out, err = run("print", "--json", str(doc))
    assert code == 0 and err == ""
    job = json.loads(out)
    assert job["id"] == 1 and job["state"] == "pending"


def test_print_from_stdin(run: Run, fake: FakeService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"plain words\n")))
    assert run("print", "-")[0] == 0
    assert created_ticket(fake)["document_format"] == "text/plain"
    assert created_ticket(fake)["document_name"] == "(stdin)"
    assert fake.uploads[1] == b"plain words\n"


def test_print_by_reference(run: Run, fake: FakeService) -> None:
    code, out, _ = run("print", "https://files.example/a.pdf")
    assert code == 0 and out.startswith("request id is office-1")
    assert created_ticket(fake)["document_uri"] == "https://files.example/a.pdf"


def test_missing_file(run: Run, fake: FakeService, tmp_path: Path) -> None:
    code, _, err = run("print", str(tmp_path / "absent.pdf"))
    assert code == 1 and "absent.pdf: no such file" in err
    assert fake.requests == []


def test_no_progress_output_when_stderr_is_not_a_terminal(run: Run, doc: Path) -> None:
    _, _, err = run("print", str(doc))
    assert err == ""


@pytest.mark.parametrize(
    ("final", "reasons", "code"),
    [
        ("completed", ["job-completed-successfully"], 0),
        ("aborted", ["aborted-by-system"], 1),
        ("canceled", ["job-canceled-at-device"], 2),
    ],
)
def test_print_wait_exit_code_follows_the_job(
    run: Run, fake: FakeService, doc: Path, final: str, reasons: list[str], code: int
) -> None:
    fake.timelines[1] = [("processing", ["job-printing"], 1), (final, reasons, 1)]
    rc, out, _ = run("print", str(doc), "--wait")
    assert rc == code
    assert out.splitlines() == [
        "request id is office-1 (1 file(s))",
        "office-1: pending (job-queued), 0 impression(s)",
        "office-1: processing (job-printing), 1 impression(s)",
        f"office-1: {final} ({','.join(reasons)}), 1 impression(s)",
    ]


def test_print_wait_json_prints_only_the_final_job(run: Run, fake: FakeService, doc: Path) -> None:
    fake.timelines[1] = [("completed", ["job-completed-successfully"], 2)]
    code, out, _ = run("print", str(doc), "--wait", "--json")
    assert code == 0
    assert json.loads(out)["state"] == "completed"


def test_ctrl_c_while_waiting_stops_waiting_without_canceling(
    run: Run, fake: FakeService, doc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.events_status = 503  # so the client polls, and sleeps

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda c: CloudImagingClient(c.url, c.token, transport=fake.transport(), sleep=interrupt),
    )
    code, out, err = run("print", str(doc), "--wait")
    assert code == 130
    assert out.startswith("request id is office-1")
    assert "stopped waiting; job office-1 was not canceled" in err
    assert not fake.calls("POST", "/cancel")
    assert fake.jobs[1]["state"] == "pending"


# ------------------------------------------------------------------------------ jobs, status, cancel


def test_jobs_and_all(run: Run, fake: FakeService) -> None:
    fake.jobs = {1: job_dict(1), 2: job_dict(2, state="completed", state_reasons=[])}
    code, out, _ = run("jobs")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "1"]
    _, out, _ = run("jobs", "--all")
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "1", "2"]
    _, out, _ = run("jobs", "-a", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == [1, 2]


def test_no_jobs_prints_nothing(run: Run) -> None:
    assert run("jobs") == (0, "", "")


def test_status_accepts_lp_request_ids(run: Run, fake: FakeService) -> None:
    fake.jobs[42] = job_dict(42)
    fake.advance(42, "processing", ["job-printing"], 1)
    code, out, _ = run("status", "office-42")
    assert code == 0
    assert out.splitlines()[0] == "job office-42 is processing"
    assert "History:" in out
    code, out, _ = run("status", "42", "--json")
    assert json.loads(out)["history"][0]["state"] == "processing"


def test_status_wait(run: Run, fake: FakeService) -> None:
    fake.jobs[3] = job_dict(3, state="processing", state_reasons=["job-printing"])
    fake.timelines[3] = [("aborted", ["aborted-by-system"], 0)]
    code, out, _ = run("status", "3", "--wait")
    assert code == 1
    assert out.splitlines()[-1] == "office-3: aborted (aborted-by-system), 0 impression(s)"


def test_cancel_messages_and_exit_codes(run: Run, fake: FakeService) -> None:
    fake.jobs = {
        1: job_dict(1),
        2: job_dict(2, state="processing", state_reasons=["job-printing"]),
        3: job_dict(3, state="completed", state_reasons=[]),
    }
    assert run("cancel", "1") == (0, "job office-1 canceled\n", "")
    code, out, _ = run("cancel", "office-2")
    assert (code, out) == (0, "job office-2 is being canceled; waiting for the printer to stop\n")
    code, out, err = run("cancel", "3")
    assert (code, out) == (1, "")
    assert err == "cloudimaging: error: job 3 is already completed\n"
    code, _, err = run("cancel", "99")
    assert code == 1 and "99" in err


def test_cancel_several_goes_on_after_a_failure(run: Run, fake: FakeService) -> None:
    fake.jobs = {1: job_dict(1), 2: job_dict(2)}
    code, out, err = run("cancel", "1", "77", "2", "--json")
    assert code == 1
    assert [j["id"] for j in json.loads(out)["jobs"]] == [1, 2]
    assert "77" in err


def test_cancel_json_single(run: Run, fake: FakeService) -> None:
    fake.jobs = {1: job_dict(1)}
    code, out, _ = run("--json", "cancel", "1")
    assert code == 0 and json.loads(out)["state"] == "canceled"


# ------------------------------------------------------------------------------ errors and usage


def test_not_configured(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDIMAGING_URL")
    monkeypatch.delenv("CLOUDIMAGING_TOKEN")
    code, out, err = run("jobs")
    assert (code, out) == (1, "")
    assert err == "cloudimaging: error: no service configured: run `cloudimaging up` or pass --url/--token\n"


def test_flags_override_environment(run: Run, fake: FakeService) -> None:
    code, _, err = run("jobs", "--token", "wrong")
    assert code == 1 and "invalid or revoked token" in err
    assert fake.requests[-1].headers["authorization"] == "Bearer wrong"


def test_client_json_is_found_from_a_subdirectory(
    run: Run, fake: FakeService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDIMAGING_URL")
    monkeypatch.delenv("CLOUDIMAGING_TOKEN")
    (tmp_path / ".cloudimaging").mkdir()
    (tmp_path / ".cloudimaging" / "client.json").write_text(json.dumps({"url": BASE, "token": TOKEN}))
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "dir")
    assert run("printers")[0] == 0


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


def test_wait_does_not_repeat_a_line_when_only_the_version_moved(run: Run, fake: FakeService, doc: Path) -> None:
    fake.timelines[1] = [("pending", ["job-queued"], 0), ("completed", ["job-completed-successfully"], 1)]
    code, out, _ = run("print", str(doc), "--wait")
    assert code == 0
    assert out.splitlines()[1:] == [
        "office-1: pending (job-queued), 0 impression(s)",
        "office-1: completed (job-completed-successfully), 1 impression(s)",
    ]


def test_bad_format_is_a_usage_error(run: Run, fake: FakeService, doc: Path) -> None:
    code, _, err = run("print", str(doc), "--format", "pdf")
    assert code == 2 and "document-format" in err
    assert fake.requests == []


def test_directory_is_not_a_document(run: Run, tmp_path: Path) -> None:
    code, _, err = run("print", str(tmp_path))
    assert code == 1 and "not a regular file" in err
