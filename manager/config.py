"""The Manager's configuration file (JSON, or TOML when the name ends in ``.toml``).

One file describes one device: how it reaches the broker and which services (print now,
scan and fax later) it offers, each with its driver and capabilities. Relative paths in the
file are taken relative to the file's directory, so a config and its CA can travel together.
"""

from __future__ import annotations

import copy
import json
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from schemas import topics
from schemas.tickets import FaxOutCapabilities, PrintCapabilities, ScanCapabilities

SOFTWARE = "cloudimaging-manager/0.1.0"

ServiceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says which field and why."""


class PrintServiceConfig(BaseModel):
    """One print service of the device and the driver that does the printing."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["print"] = "print"
    name: ServiceName
    #: ``ipp`` forwards to a local IPP printer (options: uri, ..., manager/drivers/ipp.py).
    driver: Literal["file", "simulated", "ipp"]
    #: Options of the driver (see docs/manager.md); each driver validates its own.
    driver_options: dict[str, Any] = {}
    capabilities: PrintCapabilities = PrintCapabilities()
    info: str | None = None
    location: str | None = None
    make_and_model: str | None = None


class ScanServiceConfig(BaseModel):
    """One scan service (PWG 5100.17) and its scanner driver (manager/drivers/scanner.py)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scan"]
    name: ServiceName
    driver: Literal["simulated-scanner"] = "simulated-scanner"
    driver_options: dict[str, Any] = {}
    capabilities: ScanCapabilities = ScanCapabilities()
    info: str | None = None
    location: str | None = None
    make_and_model: str | None = None


class FaxServiceConfig(BaseModel):
    """One FaxOut service (PWG 5100.15) and its modem driver (manager/drivers/fax.py)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["faxout"]
    name: ServiceName
    driver: Literal["simulated-modem"] = "simulated-modem"
    driver_options: dict[str, Any] = {}
    capabilities: FaxOutCapabilities = FaxOutCapabilities()
    info: str | None = None
    location: str | None = None
    make_and_model: str | None = None


def _service_kind(value: Any) -> str:
    """``kind`` of a service entry; print when absent (configs written before scan and fax)."""
    return str(value.get("kind", "print") if isinstance(value, dict) else getattr(value, "kind", "print"))


#: A service of the device, discriminated by ``kind`` (print when absent).
ServiceConfig = Annotated[
    Annotated[PrintServiceConfig, Tag("print")]
    | Annotated[ScanServiceConfig, Tag("scan")]
    | Annotated[FaxServiceConfig, Tag("faxout")],
    Discriminator(_service_kind),
]


class ManagerConfig(BaseModel):
    """Everything one Manager needs: identity, broker, trust, local state and services."""

    model_config = ConfigDict(extra="forbid")

    device_id: str
    broker_url: str = "mqtts://127.0.0.1:8883"
    #: Broker username; the device id when not given (the broker's ACL keys on it).
    username: str | None = None
    password: str | None = None
    #: A file holding the password, so the config itself can be world-readable.
    password_file: Path | None = None
    #: PEM CA bundle trusted for the broker and the presigned document URLs; system CAs if absent.
    ca_file: Path | None = None
    #: The device's client certificate and key (PEM) from ``cloudimaging manager enroll``: the
    #: broker then knows the device by its certificate (mTLS) and no password is needed.
    cert_file: Path | None = None
    key_file: Path | None = None
    state_dir: Path = Path(".cloudimaging/manager")
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    #: Seconds to wait for a reply before sending the same request again.
    request_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    #: Sends of a request (while connected) before giving up; acknowledgements and final
    #: job reports are sent until answered, whatever this says.
    request_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    #: Accept plain http:// document URLs (tests and labs only).
    allow_http_documents: bool = False
    software: str = SOFTWARE
    services: Annotated[list[ServiceConfig], Field(min_length=1, max_length=8)]

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not topics.valid_device_id(value):
            raise ValueError("device_id must be lowercase letters, digits and '-' (at most 64)")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtts", "mqtt") or not parts.hostname:
            raise ValueError("broker_url must look like mqtts://host:port")
        _ = parts.port  # raises ValueError for a bad port
        return value

    @model_validator(mode="after")
    def _fill(self) -> ManagerConfig:
        if self.username is None:
            self.username = self.device_id
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            raise ValueError("service names must be unique within a device")
        return self

    @property
    def broker_host(self) -> str:
        return urlsplit(self.broker_url).hostname or ""

    @property
    def broker_tls(self) -> bool:
        return urlsplit(self.broker_url).scheme == "mqtts"

    @property
    def broker_port(self) -> int:
        parts = urlsplit(self.broker_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    def read_password(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for the broker and the document URLs: verify against ca_file."""
        cafile = str(self.ca_file) if self.ca_file else None
        try:
            context = ssl.create_default_context(cafile=cafile)
        except OSError as exc:  # ssl's errors name no file: say which one, as every CLI error must
            raise ConfigError(f"ca_file {cafile}: {_why(exc)}") from None
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except OSError as exc:
                raise ConfigError(f"cert_file {self.cert_file} / key_file {self.key_file}: {_why(exc)}") from None
        return context

    def service(self, name: str) -> PrintServiceConfig | ScanServiceConfig | FaxServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)


def _why(exc: OSError) -> str:
    """An OSError's reason in words; ssl's own errors (also OSErrors) mean the PEM is unusable."""
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return exc.strerror or str(exc)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("ca_file", "state_dir", "password_file", "cert_file", "key_file"):
        if isinstance(raw.get(key), str) and not Path(raw[key]).is_absolute():
            raw[key] = str(base / raw[key])
    for service in raw.get("services") or []:
        options = service.get("driver_options") if isinstance(service, dict) else None
        if isinstance(options, dict):
            for key in ("output_dir", "ca_file"):
                if isinstance(options.get(key), str) and not Path(options[key]).is_absolute():
                    options[key] = str(base / options[key])
    return raw


def parse_config(raw: dict[str, Any], base: Path | None = None) -> ManagerConfig:
    """Validate a config mapping; relative paths are resolved against ``base``."""
    if base is not None:
        raw = _resolve_paths(copy.deepcopy(raw), base)
    try:
        return ManagerConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid manager config: {exc}") from None


def load_config(path: str | Path) -> ManagerConfig:
    """Read and validate a config file; raises ConfigError with the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return parse_config(raw, path.resolve().parent)
