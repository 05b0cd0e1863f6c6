"""Where the CLI finds the service's URL, a bearer token and the CA to trust, with no flags.

Order, highest first: flags (--url, --token, --ca), then environment (CLOUDIMAGING_URL,
CLOUDIMAGING_TOKEN, CLOUDIMAGING_CA), then one ``client.json`` file ``{"url", "token", "ca"}``
looked up at $CLOUDIMAGING_CONFIG, else ``.cloudimaging/client.json`` in the current directory
or the nearest parent that has one (``cloudimaging up`` writes it there), else
``$XDG_CONFIG_HOME/cloudimaging/client.json`` (``~/.config`` by default).

A file's token and CA belong to that file's URL: when a flag or the environment points at
another URL they are not used, so a token is never sent to a service it was not issued for.
A relative ``ca`` in a file is resolved against the file's directory.

The file may also hold local default services, ``"defaults": {"print": "office"}``, set by
``cloudimaging default PRINTER`` as ``lpoptions -d`` sets CUPS's: like the token, they belong to
the file's URL. :func:`set_local_default` writes them, keeping every other key of the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from client.errors import ConfigError

ENV_URL = "CLOUDIMAGING_URL"
ENV_TOKEN = "CLOUDIMAGING_TOKEN"
ENV_CA = "CLOUDIMAGING_CA"
ENV_CONFIG = "CLOUDIMAGING_CONFIG"
DATA_DIR = ".cloudimaging"
FILE_NAME = "client.json"

NOTHING_CONFIGURED = "no service configured: run `cloudimaging up` or pass --url/--token"
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class ClientConfig:
    """A resolved configuration; ``source`` says where it came from, for error messages."""

    url: str
    token: str
    ca: str | None = None
    source: str = "flags"
    #: Local default service per kind (``{"print": "office"}``) from the file of this URL.
    defaults: Mapping[str, str] = field(default_factory=dict)
    #: The client.json that applies to this URL (where ``cloudimaging default`` writes), if any.
    path: Path | None = None


@dataclass(frozen=True)
class _FileConfig:
    path: Path
    url: str | None
    token: str | None
    ca: str | None
    defaults: Mapping[str, str] = field(default_factory=dict)


def _user_config_path(env: Mapping[str, str], home: str | os.PathLike[str] | None) -> Path:
    """``$XDG_CONFIG_HOME/cloudimaging/client.json`` (``~/.config`` by default)."""
    base = env.get("XDG_CONFIG_HOME")
    config_home = Path(base) if base else Path(home if home is not None else Path.home()) / ".config"
    return config_home / "cloudimaging" / FILE_NAME


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


def find_config_file(
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The client.json that applies, or None. $CLOUDIMAGING_CONFIG must exist if set."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_CONFIG)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_CONFIG} points to {path}, which is not a file")
        return path
    start = Path(cwd) if cwd is not None else Path.cwd()
    for directory in (start, *start.parents):
        candidate = directory / DATA_DIR / FILE_NAME
        if candidate.is_file():
            return candidate
    candidate = _user_config_path(env, home)
    return candidate if candidate.is_file() else None


def _read_file(path: Path) -> _FileConfig:
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object with url, token and ca")
    values: dict[str, str | None] = {}
    for key in ("url", "token", "ca"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
        values[key] = value or None
    ca = values["ca"]
    if ca is not None:
        ca = str(path.parent / Path(ca).expanduser())  # an absolute ca stays absolute
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or not all(isinstance(v, str) for v in defaults.values()):
        raise ConfigError(f"{path}: defaults must map a service kind to a service name")
    return _FileConfig(path, values["url"], values["token"], ca, dict(defaults))


def _same_service(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def check_url(url: str) -> str:
    """Refuse URLs that would leak the bearer token: only https, or http on loopback."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"service URL {url!r} must look like https://host:port")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigError(f"refusing to send the token over plain http to {parts.hostname}: use https")
    return url


def load_config(
    url: str | None = None,
    token: str | None = None,
    ca: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> ClientConfig:
    """Resolve url, token and CA from flags, environment and client.json (see module doc)."""
    env = os.environ if env is None else env
    chosen_url = url or env.get(ENV_URL) or None
    chosen_token = token or env.get(ENV_TOKEN) or None
    chosen_ca = ca or env.get(ENV_CA) or None
    source = "flags" if url else (ENV_URL if chosen_url else "")
    defaults: Mapping[str, str] = {}
    file_path: Path | None = None

    complete = chosen_url is not None and chosen_token is not None and chosen_ca is not None
    try:
        path = find_config_file(env, cwd, home)
        found = _read_file(path) if path is not None else None
    except ConfigError:
        if not complete:
            raise
        found = None  # flags and environment say it all; a broken file only loses its defaults
    if found is not None:
        path = found.path
        if chosen_url is None and found.url:
            chosen_url, source = found.url, str(path)
        if found.url and chosen_url and _same_service(chosen_url, found.url):
            chosen_token = chosen_token or found.token
            chosen_ca = chosen_ca or found.ca
            source = source or str(path)
            defaults, file_path = found.defaults, path

    if chosen_url is None:
        raise ConfigError(NOTHING_CONFIGURED)
    if chosen_token is None:
        raise ConfigError(f"no token for {chosen_url}: pass --token or set {ENV_TOKEN}")
    if chosen_ca is not None:
        chosen_ca = str(Path(chosen_ca).expanduser())
        if not Path(chosen_ca).is_file():
            raise ConfigError(f"CA file {chosen_ca} not found")
    return ClientConfig(check_url(chosen_url), chosen_token, chosen_ca, source or "flags", defaults, file_path)


def set_local_default(
    config: ClientConfig,
    kind: str,
    name: str | None,
    *,
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Store (or, with ``name`` None, forget) the local default ``kind`` service for
    ``config.url``; returns the file written.

    It goes into the client.json of that URL; when there is none (URL and token from flags or
    the environment), into ``$XDG_CONFIG_HOME/cloudimaging/client.json`` with the URL and no
    token, so no secret is written by this command. Every other key of the file is kept.
    """
    env = os.environ if env is None else env
    path = config.path
    if path is None:
        path = _user_config_path(env, home)
    raw: dict[str, object] = {}
    if path.is_file():
        loaded = _load_json(path)
        if isinstance(loaded, dict):
            raw = loaded
    if raw.get("url") and not _same_service(str(raw["url"]), config.url):
        raise ConfigError(f"{path} is for {raw['url']}, not {config.url}: set CLOUDIMAGING_CONFIG to another file")
    raw.setdefault("url", config.url)
    defaults = dict(raw.get("defaults") or {})  # type: ignore[call-overload]
    if name is None:
        defaults.pop(kind, None)
    else:
        defaults[kind] = name
    raw["defaults"] = defaults
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold a token
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(raw, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None
    return path
