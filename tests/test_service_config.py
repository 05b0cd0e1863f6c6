"""Configuration by environment: every field has a CLOUDIMAGING_* variable, the environment
wins over the file, secrets come from files, and docs/operations.md carries the table made from
the model (so the two cannot drift)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_service.config import (
    SECRET_FIELDS,
    ConfigError,
    ServiceConfig,
    env_file_name,
    env_name,
    env_table,
    field_docs,
)

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- env-table:start -->", "<!-- env-table:end -->"


def test_every_field_has_a_variable_and_a_meaning() -> None:
    docs = field_docs()
    for field in ServiceConfig.model_fields:
        assert env_name(field) == "CLOUDIMAGING_" + field.upper()
        assert docs.get(field), f"{field} has no #: comment in cloud_service/config.py"
    names = [env_name(f) for f in ServiceConfig.model_fields] + [env_file_name(f) for f in ServiceConfig.model_fields]
    assert len(names) == len(set(names)), "two settings share a variable name"


def test_docs_table_is_the_models_table() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    assert START in text and END in text
    table = text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert table == env_table(), (
        "docs/operations.md's configuration table differs from the model; regenerate it with "
        "`cloudimaging service --show-config env`")


def test_environment_overrides_file_and_converts_types(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"http_port": 9000, "broker_url": "mqtts://file:1", "log_level": "DEBUG"}))
    env = {
        "CLOUDIMAGING_HTTP_PORT": "9443",
        "CLOUDIMAGING_DATABASE_URL": "postgresql+asyncpg://u@db/ci",
        "CLOUDIMAGING_ALLOW_INSECURE_DOCUMENT_URI": "true",
        "CLOUDIMAGING_HISTORY_RETENTION_SECONDS": "3600.5",
        "CLOUDIMAGING_BROKER_RELOAD_COMMAND": '["systemctl", "reload", "mosquitto"]',
        "CLOUDIMAGING_DATA_DIR": str(tmp_path / "d"),
        "CLOUDIMAGING_OBJECT_STORE": "s3",
        "CLOUDIMAGING_S3_BUCKET": "documents",
        "CLOUDIMAGING_PUBLIC_URL": "",  # empty: None
        "CLOUDIMAGING_URL": "https://client-side-variable/",  # the client's: not a service field
    }
    config = ServiceConfig.from_sources(path, env)
    assert config.http_port == 9443
    assert config.broker_url == "mqtts://file:1"
    assert config.log_level == "DEBUG"
    assert config.database_url == "postgresql+asyncpg://u@db/ci"
    assert config.allow_insecure_document_uri is True
    assert config.history_retention_seconds == 3600.5
    assert config.broker_reload_command == ["systemctl", "reload", "mosquitto"]
    assert config.data_dir == tmp_path / "d"
    assert config.object_store == "s3"
    assert config.public_url is None
    with pytest.raises(ValueError):
        ServiceConfig.from_sources(None, {"CLOUDIMAGING_OBJECT_STORE": "ftp"})
    with pytest.raises(ValueError, match="s3_bucket"):
        ServiceConfig.from_sources(None, {"CLOUDIMAGING_OBJECT_STORE": "s3"})
    with pytest.raises(ConfigError, match="JSON"):
        ServiceConfig.from_sources(None, {"CLOUDIMAGING_BROKER_RELOAD_COMMAND": "systemctl reload"})


def test_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t\n")
    # broker_password_file is a field of its own (Mosquitto's password file): the secret's
    # file variable steps aside to _SECRET_FILE, and the table says so.
    assert env_file_name("broker_password") == "CLOUDIMAGING_BROKER_PASSWORD_SECRET_FILE"
    assert env_file_name("s3_secret_access_key") == "CLOUDIMAGING_S3_SECRET_ACCESS_KEY_FILE"
    config = ServiceConfig.from_sources(None, {
        "CLOUDIMAGING_BROKER_PASSWORD_SECRET_FILE": str(secret),
        "CLOUDIMAGING_BROKER_PASSWORD_FILE": "/etc/mosquitto/passwd",
        "CLOUDIMAGING_S3_SECRET_ACCESS_KEY_FILE": str(secret),
    })
    assert config.broker_password == "s3cr3t"
    assert config.s3_secret_access_key == "s3cr3t"
    assert config.broker_password_file == Path("/etc/mosquitto/passwd")
    with pytest.raises(ConfigError, match="both set"):
        ServiceConfig.from_sources(None, {"CLOUDIMAGING_S3_SECRET_ACCESS_KEY": "x",
                                          "CLOUDIMAGING_S3_SECRET_ACCESS_KEY_FILE": str(secret)})
    with pytest.raises(ConfigError, match="cannot read"):
        ServiceConfig.from_sources(None, {"CLOUDIMAGING_S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "absent")})
    assert {"broker_password", "s3_secret_access_key"} <= SECRET_FIELDS


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDIMAGING_")}
    return subprocess.run([sys.executable, "-c", "from client.cli import main; raise SystemExit(main())",
                           "service", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_cli_prints_table_and_effective_config_without_a_file(tmp_path: Path) -> None:
    shown = _cli("--show-config", "env", env={})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == env_table()
    effective = _cli("--show-config", "effective", env={"CLOUDIMAGING_HTTP_PORT": "9555",
                                                        "CLOUDIMAGING_BROKER_PASSWORD": "hunter2",
                                                        "CLOUDIMAGING_DATA_DIR": str(tmp_path)})
    assert effective.returncode == 0, effective.stderr
    values = json.loads(effective.stdout)
    assert values["http_port"] == 9555
    assert values["broker_password"] == "(set)"
    assert "hunter2" not in effective.stdout
    bad = _cli("--show-config", "effective", env={"CLOUDIMAGING_HTTP_PORT": "many"})
    assert bad.returncode == 2 and "http_port" in bad.stdout


def test_settled_heap_is_frozen_and_cycles_made_later_are_still_collected() -> None:
    """After start-up the service freezes its heap for the collector and collects the youngest
    generation less often; the collector still runs: a cycle made afterwards goes. In a child
    process, so this test's own interpreter keeps its settings."""
    code = """
import gc, weakref
from cloud_service.cli import GC_YOUNG_THRESHOLD, settle_heap
import cloud_service.app  # a started service's modules
settle_heap()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
gc.collect()
assert gone() is None
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
