"""Loading the Manager's config file (JSON and TOML)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from manager.cli import add_parser
from manager.config import ConfigError, ManagerConfig, load_config, parse_config
from manager.drivers import DriverConfigError, FileDriver, SimulatedDriver, make_driver

EXAMPLE = {
    "device_id": "printer-1",
    "broker_url": "mqtts://127.0.0.1:18883",
    "password": "s3cret",
    "ca_file": "pki/ca.pem",
    "state_dir": "state",
    "services": [
        {
            "name": "office",
            "driver": "file",
            "driver_options": {"output_dir": "out"},
            "capabilities": {
                "document-format-supported": ["application/pdf", "text/plain"],
                "sides-supported": ["one-sided", "two-sided-long-edge"],
                "copies-supported": [1, 10],
            },
            "info": "2nd floor",
        }
    ],
}


def test_json_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    path.write_text(json.dumps(EXAMPLE))
    config = load_config(path)
    assert config.device_id == "printer-1"
    assert config.username == "printer-1"  # the device id by default
    assert config.keepalive == 30 and config.request_timeout == 10.0
    assert (config.broker_host, config.broker_port, config.broker_tls) == ("127.0.0.1", 18883, True)
    assert config.ca_file == tmp_path / "pki" / "ca.pem"
    assert config.state_dir == tmp_path / "state"
    service = config.services[0]
    assert service.driver_options["output_dir"] == str(tmp_path / "out")
    assert service.capabilities.copies_supported == (1, 10)
    assert "text/plain" in service.capabilities.document_format_supported
    assert config.service("office") is service and config.service("nope") is None


def test_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text(
        'device_id = "printer-2"\n'
        'broker_url = "mqtts://broker.example:8883"\n'
        'username = "someone"\n'
        'state_dir = "/var/lib/ci"\n'
        "keepalive = 60\n"
        "[[services]]\n"
        'name = "lab"\n'
        'driver = "simulated"\n'
        "[services.driver_options]\n"
        "pages_per_second = 100\n"
        "[services.capabilities]\n"
        '"print-color-mode-supported" = ["monochrome", "color"]\n'
    )
    config = load_config(path)
    assert config.username == "someone"
    assert config.state_dir == Path("/var/lib/ci")
    assert config.keepalive == 60
    assert config.services[0].capabilities.print_color_mode_supported == ["monochrome", "color"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"device_id": "Bad_ID"}, "device_id"),
        ({"broker_url": "http://x"}, "broker_url"),
        ({"keepalive": 1}, "keepalive"),
        ({"services": []}, "services"),
        ({"extra": 1}, "extra"),
        ({"services": [EXAMPLE["services"][0], EXAMPLE["services"][0]]}, "unique"),
        ({"services": [{"name": "x", "driver": "laser"}]}, "driver"),
        ({"services": [{"name": "x", "driver": "file", "capabilities": {"sides-default": "two"}}]}, "sides-default"),
    ],
)
def test_bad_configs_name_the_problem(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config({**EXAMPLE, **change})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("= 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad_toml)


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    raw = {**EXAMPLE, "password": None, "password_file": "pw"}
    config = parse_config(raw, tmp_path)
    assert config.read_password() == "from-file"


def test_driver_options_are_validated(tmp_path: Path) -> None:
    driver = make_driver("file", "office", {"output_dir": str(tmp_path / "o")}, tmp_path)
    assert isinstance(driver, FileDriver) and driver.output_dir == tmp_path / "o"
    sim = make_driver("simulated", "lab", {}, tmp_path)
    assert isinstance(sim, SimulatedDriver) and sim.output_dir == tmp_path / "output" / "lab"
    with pytest.raises(DriverConfigError, match="pages_per_second"):
        make_driver("simulated", "lab", {"pages_per_second": 0}, tmp_path)
    with pytest.raises(DriverConfigError, match="colour"):
        make_driver("file", "office", {"colour": True}, tmp_path)
    with pytest.raises(DriverConfigError, match="unknown driver"):
        make_driver("laser", "office", {}, tmp_path)


def test_model_is_usable_directly(tmp_path: Path) -> None:
    config = ManagerConfig(device_id="dev-1", state_dir=tmp_path, services=[{"name": "p", "driver": "file"}])  # type: ignore[list-item]
    assert config.username == "dev-1" and config.services[0].capabilities.copies_default == 1


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"device_id": "x"}')
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["manager", "--config", str(bad)])
    assert args.func(args) == 2
    assert "services" in capsys.readouterr().err
