"""A newcomer's first hour, the README and the docs followed literally: every step works as
written, every error names its file or its printer, nothing guesses a printer for the user,
no document tells them to paste the admin token where others can read it.

The CLI runs in-process (``client.cli.main``) against the real stack of tests/support/live.py
(broker, service, one Manager with several simulated printers), configured by environment or
by a client.json in a temporary directory, never by the developer's own files.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import client.cli as cli
from broker.pki import ensure_pki
from client.api import CloudImagingClient
from client.config import DATA_DIR
from client.errors import ApiError
from cloud_service.db import SCHEMA_VERSION, create_schema, make_engine
from manager.config import ConfigError, parse_config
from tests.support.live import LiveStack

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
PDF = b"%PDF-1.7\nfirst hour\n"

Run = Callable[..., tuple[int, str, str]]


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No client.json of the developer's, no environment of theirs."""
    monkeypatch.chdir(tmp_path)
    for name in ("CLOUDIMAGING_CONFIG", "CLOUDIMAGING_URL", "CLOUDIMAGING_TOKEN", "CLOUDIMAGING_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    """``main(*argv) -> (exit code, stdout, stderr)`` with nothing configured."""
    _isolate(monkeypatch, tmp_path)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def configure(live: LiveStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str) -> Path:
    """A client.json such as ``cloudimaging up`` writes, in ``tmp_path/.cloudimaging``."""
    path = tmp_path / DATA_DIR / "client.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": live.url, "token": token, "ca": str(live.ca)}))
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(PDF)
    return path


# ------------------------------------------------------------------ every error names its file


def test_enroll_with_a_missing_ca_names_the_file(main: Run, tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    code, out, err = main("manager", "enroll", "ABCD-EFGH", "--url", "https://127.0.0.1:9", "--ca", str(missing))
    assert code != 0 and out == ""
    assert str(missing) in err, err


def test_a_ca_that_is_not_pem_is_named(main: Run, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("this is not a certificate\n")
    code, _, err = main("printers", "--url", "https://127.0.0.1:9", "--token", "ci_x", "--ca", str(bad))
    assert code == 1
    assert str(bad) in err, err
    code, _, err = main("manager", "enroll", "ABCD-EFGH", "--url", "https://127.0.0.1:9", "--ca", str(bad))
    assert code != 0 and str(bad) in err, err


def test_the_manager_names_its_missing_ca_file(tmp_path: Path) -> None:
    config = parse_config({"device_id": "d-1", "ca_file": "nowhere/ca.pem",
                           "services": [{"name": "p", "driver": "file"}]}, tmp_path)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nowhere" / "ca.pem"))):
        config.ssl_context()


def test_the_readme_enroll_line_names_the_ca_that_up_writes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [line] = [row for row in readme.splitlines() if "manager enroll" in row]
    ca = line.split("--ca", 1)[1].split()[0]
    pki = ensure_pki(tmp_path / DATA_DIR / "pki")  # where `cloudimaging up` keeps its CA
    assert Path(ca) == pki.ca_cert.relative_to(tmp_path), line


# ------------------------------------------------------------------ default printers


def test_a_job_naming_no_service_is_not_sent_to_a_guess(user_client: CloudImagingClient) -> None:
    with pytest.raises(ApiError) as info:
        user_client.submit(PDF, document_name="guess.pdf")
    assert info.value.status == 409 and info.value.code == "service-required"
    assert {"office", "slow", "parked"} <= set(info.value.supported or [])
    assert user_client.jobs(all=True) == []


def test_the_users_default_on_the_service_takes_the_job(user_client: CloudImagingClient) -> None:
    assert user_client.default_service("print") is None
    assert user_client.set_default_service("print", "office") == "office"
    assert user_client.default_service("print") == "office"
    job = user_client.submit(PDF, document_name="default.pdf")
    assert job.service == "office"
    with pytest.raises(ApiError) as info:
        user_client.set_default_service("print", "no-such-printer")
    assert info.value.status == 404
    assert user_client.default_service("print") == "office"  # a refused default changes nothing
    assert user_client.set_default_service("print", None) is None
    with pytest.raises(ApiError) as info:
        user_client.submit(PDF, document_name="again.pdf")
    assert info.value.code == "service-required"


def test_cli_print_without_p_lists_printers_then_uses_the_local_default(
        live: LiveStack, user_token: str, main: Run, doc: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    path = configure(live, monkeypatch, tmp_path, user_token)
    code, out, err = main("print", str(doc))
    assert code == 1 and out == ""
    assert "office" in err and "slow" in err and "cloudimaging default" in err, err

    code, out, err = main("default", "office")
    assert code == 0, err
    assert json.loads(path.read_text())["defaults"] == {"print": "office"}
    assert json.loads(path.read_text())["token"] == user_token  # the rest of the file is kept

    code, out, err = main("print", str(doc))
    assert code == 0, err
    assert re.fullmatch(r"request id is office-\d+ \(1 file\(s\)\) on printer office \(your local default, in .*\)\n",
                        out), out

    code, out, _ = main("print", str(doc), "-p", "slow")
    assert code == 0 and "on printer slow\n" in out, out

    code, out, _ = main("default", "--json")
    assert json.loads(out)["used"]["service"] == "office"


def test_cli_default_on_the_service_and_refusals_name_the_printer(
        live: LiveStack, user_token: str, main: Run, doc: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    configure(live, monkeypatch, tmp_path, user_token)
    code, _, err = main("default", "office", "--on-service")
    assert code == 0, err
    code, out, err = main("print", str(doc))
    assert code == 0 and "on printer office (your default on the service)" in out, out
    # office does one-sided and long-edge only: the refusal says which printer refused
    code, out, err = main("print", str(doc), "-o", "sides=two-sided-short-edge")
    assert code == 1 and "printer office:" in err, err
    code, _, err = main("default", "no-such-printer")
    assert code == 1 and "no-such-printer" in err, err


async def test_a_schema_3_database_gains_the_defaults_table(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as conn:  # what schema 3 had: no defaults table, no Alembic
        conn.execute("DROP TABLE IF EXISTS user_defaults")
        conn.execute("DROP TABLE IF EXISTS alembic_version")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert "user_defaults" in tables
    assert int(version) == SCHEMA_VERSION >= 4


# ------------------------------------------------------------------ the rough edges


def test_listing_verbs_answer_json_objects(live: LiveStack, main: Run, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    configure(live, monkeypatch, tmp_path, live.token)
    for verb, key in (("users", "users"), ("devices", "devices"), ("tokens", "tokens")):
        code, out, err = main(verb, "--json")
        assert code == 0, err
        answer = json.loads(out)
        assert isinstance(answer, dict) and isinstance(answer[key], list), (verb, out)


@pytest.mark.parametrize(("option", "words"), [("print-quality=9", "draft (3), normal (4), high (5)"),
                                               ("copies=0", "copies: must be at least 1")])
def test_option_values_are_refused_in_plain_words(main: Run, doc: Path, option: str, words: str) -> None:
    code, out, err = main("print", str(doc), "-o", option)
    assert code == 2 and out == ""
    assert words in err and "Input should" not in err, err


def test_the_package_metadata_has_an_spdx_license() -> None:
    """setuptools warns about a license table on every build; an SPDX string needs >= 77."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "Apache-2.0"
    [setuptools] = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=(\d+).*", setuptools) and int(setuptools.split(">=")[1].split(".")[0]) >= 77


def test_ipp_docs_put_a_print_only_token_in_the_device_uri(live: LiveStack, main: Run,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = (ROOT / "docs" / "ipp.md").read_text(encoding="utf-8")
    assert '["token"]' not in text.replace('json.load(sys.stdin)["token"]', "")  # never client.json's token
    [user] = re.findall(r"^IPPUSER=(\S+)$", text, re.M)
    [made] = re.findall(r"cloudimaging (users add \$IPPUSER [^|]*)\|", text)
    configure(live, monkeypatch, tmp_path, live.token)  # the admin's client.json
    user = f"{user}-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:6]}"
    code, out, err = main(*made.replace("$IPPUSER", user).split())
    assert code == 0, err
    token = json.loads(out)["token"]
    with live.client(token=token) as account:
        with pytest.raises(ApiError) as info:
            account.request("GET", "/api/v1/users")
        assert info.value.status == 403  # it manages nothing
        job = account.submit(PDF, service="office", document_name="ipp.pdf")  # and it prints
        assert job.service == "office"


# ------------------------------------------------------------------ declaring a real printer


def _json_blocks(markdown: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", markdown, re.S)]


def test_manager_docs_declare_a_real_printer_that_reaches_the_listing(live: LiveStack, tmp_path: Path) -> None:
    text = (ROOT / "docs" / "manager.md").read_text(encoding="utf-8")
    assert "state/output/" in text  # where an enrolled device's file driver writes
    section = text.split("## A real printer", 1)[1].split("\n## ", 1)[0]
    blocks = _json_blocks(section)
    assert [b["driver"] for b in blocks] == ["file", "ipp"]
    for block in blocks:  # each is a valid service of a Manager config
        parse_config({"device_id": "doc-check", "services": [block]}, tmp_path)
    declared = dict(blocks[0], name="doc-laser", driver_options={"output_dir": str(tmp_path / "out")})
    live.call(live.stack.add_manager("doc-laser-device", services=[declared]))
    with live.client() as admin:
        listed = admin.service("print", "doc-laser").capabilities
    for attribute, value in blocks[0]["capabilities"].items():
        # The listing adds the formats the service transforms; the device's own are kept apart.
        key = "document-format-device-supported" if attribute == "document-format-supported" else attribute
        assert listed[key] == value, attribute
