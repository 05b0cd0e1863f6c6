"""Where the CLI finds url, token and CA: flags, environment, client.json discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.config import NOTHING_CONFIGURED, ConfigError, check_url, find_config_file, load_config


def write(path: Path, **values: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(cwd, home) that hold no configuration yet."""
    cwd, home = tmp_path / "work" / "a" / "b", tmp_path / "home"
    cwd.mkdir(parents=True)
    home.mkdir()
    return cwd, home


def test_nothing_found_is_a_clear_error(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    with pytest.raises(ConfigError) as info:
        load_config(env={}, cwd=cwd, home=home)
    assert str(info.value) == NOTHING_CONFIGURED
    assert "cloudimaging up" in str(info.value)


def test_environment_alone(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    config = load_config(env={"CLOUDIMAGING_URL": "https://h:1/", "CLOUDIMAGING_TOKEN": "t"}, cwd=cwd, home=home)
    assert (config.url, config.token, config.ca) == ("https://h:1", "t", None)


def test_data_dir_in_a_parent_directory_is_found(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    ca = cwd.parents[1] / ".cloudimaging" / "pki" / "ca.pem"
    ca.parent.mkdir(parents=True)
    ca.write_text("pem")
    path = write(
        cwd.parents[1] / ".cloudimaging" / "client.json", url="https://127.0.0.1:8443", token="tok", ca="pki/ca.pem"
    )
    assert find_config_file({}, cwd, home) == path
    config = load_config(env={}, cwd=cwd, home=home)
    assert config.url == "https://127.0.0.1:8443"
    assert config.token == "tok"
    assert config.ca == str(ca)  # relative to the file's directory
    assert config.source == str(path)


def test_nearest_data_dir_wins(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    write(cwd.parents[1] / ".cloudimaging" / "client.json", url="https://far:1", token="far")
    write(cwd / ".cloudimaging" / "client.json", url="https://near:1", token="near")
    assert load_config(env={}, cwd=cwd, home=home).token == "near"


def test_home_config_is_the_last_resort(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    write(home / ".config" / "cloudimaging" / "client.json", url="https://home:1", token="h")
    assert load_config(env={}, cwd=cwd, home=home).url == "https://home:1"
    xdg = home / "xdg"
    write(xdg / "cloudimaging" / "client.json", url="https://xdg:1", token="x")
    assert load_config(env={"XDG_CONFIG_HOME": str(xdg)}, cwd=cwd, home=home).url == "https://xdg:1"


def test_cloudimaging_config_env_points_at_a_file(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    cwd, home = dirs
    write(cwd / ".cloudimaging" / "client.json", url="https://local:1", token="local")
    other = write(tmp_path / "elsewhere.json", url="https://other:1", token="other")
    assert load_config(env={"CLOUDIMAGING_CONFIG": str(other)}, cwd=cwd, home=home).token == "other"
    with pytest.raises(ConfigError, match="CLOUDIMAGING_CONFIG"):
        load_config(env={"CLOUDIMAGING_CONFIG": str(tmp_path / "missing.json")}, cwd=cwd, home=home)


def test_precedence_flags_over_env_over_file(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    write(cwd / ".cloudimaging" / "client.json", url="https://svc:1", token="file")
    env = {"CLOUDIMAGING_TOKEN": "env"}
    assert load_config(env=env, cwd=cwd, home=home).token == "env"
    assert load_config(token="flag", env=env, cwd=cwd, home=home).token == "flag"
    assert load_config(env={}, cwd=cwd, home=home).token == "file"


def test_file_token_is_not_sent_to_another_url(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    write(cwd / ".cloudimaging" / "client.json", url="https://svc:1", token="secret")
    with pytest.raises(ConfigError, match="no token for https://evil:1"):
        load_config(url="https://evil:1", env={}, cwd=cwd, home=home)
    # the same service, spelled with a trailing slash, still gets it
    assert load_config(url="https://svc:1/", env={}, cwd=cwd, home=home).token == "secret"


def test_ca_flag_must_exist(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    cwd, home = dirs
    with pytest.raises(ConfigError, match=r"CA file .* not found"):
        load_config(url="https://h:1", token="t", ca=str(tmp_path / "nope.pem"), env={}, cwd=cwd, home=home)


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"url": 5, "token": "t"}'])
def test_broken_file_is_reported_with_its_path(dirs: tuple[Path, Path], content: str) -> None:
    cwd, home = dirs
    path = cwd / ".cloudimaging" / "client.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(env={}, cwd=cwd, home=home)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://print.example.com", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://print.example.com", False),
        ("ftp://x", False),
        ("127.0.0.1:8443", False),
    ],
)
def test_token_only_over_https_or_loopback(url: str, ok: bool) -> None:
    if ok:
        assert check_url(url) == url
    else:
        with pytest.raises(ConfigError):
            check_url(url)
