"""Configuration of the Cloud Service: one pydantic model, from a JSON file, the environment or
built in code.

Every field ``name`` is also ``CLOUDIMAGING_NAME`` in the environment (containers are configured
that way), and its value may come from a file named by ``CLOUDIMAGING_NAME_FILE`` (Docker and
Kubernetes secrets are mounted as files). The environment wins over the file, the file over the
defaults. ``env_table()`` renders the one table of docs/operations.md from this model, so the
document cannot drift from the code (a test compares them).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_PREFIX = "CLOUDIMAGING_"
#: Fields whose values are credentials: the table says so, and they are never printed.
SECRET_FIELDS = frozenset({"broker_password", "database_url", "s3_access_key_id", "s3_secret_access_key"})


class ConfigError(ValueError):
    """The environment or the file names a value the model cannot take."""


class ServiceConfig(BaseModel):
    """Everything the service needs; defaults suit the embedded single-machine stack."""

    model_config = ConfigDict(extra="forbid")

    #: Where the SQLite database, local objects, logs and generated keys live.
    data_dir: Path = Path(".cloudimaging")
    #: SQLAlchemy async URL; default: SQLite in the data directory. PostgreSQL:
    #: ``postgresql+asyncpg://user@host/db``.
    database_url: str | None = None
    #: Connections to PostgreSQL each replica keeps open for its transactions and reads, at
    #: most (a request finding all in use waits for one). Kept open rather than made per burst:
    #: a new connection costs a server process, its handshake and the driver's prepared
    #: statements again. Two thirds of them (rounded down) are held for the single-statement
    #: reads and changes of the hot path, the rest serve transactions and the console's reads.
    #: Unused on SQLite.
    database_pool_size: int = Field(default=15, ge=1)
    #: The MQTT broker (TLS only): ``mqtts://host:port``.
    broker_url: str = "mqtts://127.0.0.1:8883"
    #: The service's user name at the broker.
    broker_username: str = "cloud-service"
    #: The service's password at the broker.
    broker_password: str = ""
    #: PEM CA used to verify the broker and presented to clients for verifying us.
    ca_file: Path | None = None
    #: PEM certificate of the HTTPS server; default: one made in DATA/pki.
    tls_cert: Path | None = None
    #: PEM private key of ``tls_cert``.
    tls_key: Path | None = None
    #: Address the HTTPS server binds.
    http_host: str = "127.0.0.1"
    #: Port of the HTTPS server (0: any free port).
    http_port: int = 8443
    #: Base URL of this service as devices and clients reach it (presigned URLs use it);
    #: default ``https://{http_host}:{port}``.
    public_url: str | None = None
    #: Largest document accepted (bytes).
    max_document_bytes: int = 256 * 1024 * 1024
    #: Lifetime of presigned URLs (seconds); short, minted when a device claims a job.
    url_ttl: float = 300.0
    #: MQTT keepalive of the service's broker connection (seconds).
    keepalive: int = 30
    #: How often SSE streams re-read the job from the database (covers other replicas).
    event_poll_interval: float = 2.0
    #: Fetch of document_uri: allow plain http and private hosts (tests only).
    allow_insecure_document_uri: bool = False
    #: Python logging level of the service's log.
    log_level: str = "INFO"

    # -- object store (docs/operations.md, "Object store") --------------------------------------
    #: "local": files under DATA/objects, served by the service with its own signed URLs
    #: (replicas must share that directory); "s3": an S3 bucket, URLs presigned by S3 itself.
    object_store: Literal["local", "s3"] = "local"
    #: S3 endpoint (https in production); default: AWS's endpoint for ``s3_region``.
    s3_endpoint_url: str | None = None
    #: The bucket that holds documents (required with ``object_store`` "s3").
    s3_bucket: str | None = None
    #: The bucket's region.
    s3_region: str = "us-east-1"
    #: S3 access key; default: the AWS credential chain (instance role, AWS_* variables).
    s3_access_key_id: str | None = None
    #: S3 secret key (with ``s3_access_key_id``).
    s3_secret_access_key: str | None = None
    #: Create the bucket at start-up if it is missing (tests and local clusters).
    s3_create_bucket: bool = False
    #: Multipart part size for uploads to S3 (bytes, at least 5 MiB); memory per upload.
    s3_part_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)

    # -- devices (docs/security.md, "Hardening: devices") --------------------------------------
    #: Messages of one device waiting to be handled; beyond this its newest are dropped (it
    #: resends or resyncs); other devices are never affected.
    device_queue_limit: int = Field(default=256, ge=1)
    #: Services (of all kinds) one device may register; an attributes message that would go
    #: beyond is refused whole with ``too-many-services``.
    max_services_per_device: int = Field(default=16, ge=1)

    # -- registration, enrollment and revocation (docs/security.md) --------------------------
    #: Directory of the CA that signs device certificates (ca.pem, ca.key) and of its CRL
    #: (crl.pem, which the broker reads); default: ca_file's directory if ca.key is there,
    #: else DATA/pki. Several replicas must share it.
    pki_dir: Path | None = None
    #: Lifetime of a one-time enrollment code (seconds).
    enrollment_ttl: float = 900.0
    #: The broker URL devices are given at enrollment (Mosquitto: its mTLS listener);
    #: default broker_url.
    device_broker_url: str | None = None
    #: The broker's password file: a revoked device's password is removed from it.
    broker_password_file: Path | None = None
    #: Run after the CRL or the password file changed, e.g. ["systemctl", "reload", "mosquitto"].
    broker_reload_command: list[str] | None = None
    #: "embedded" closes a revoked device's connection by itself (it watches the CRL);
    #: "mosquitto": the service also takes the connection over to close it (see security.md).
    broker_kind: Literal["embedded", "mosquitto", "other"] = "embedded"
    #: How long a revocation waits to see the device go offline.
    revoke_wait: float = 5.0

    # -- retention (PWG Cloud Imaging Model requirement 15) -----------------------------------------
    #: How often the retention sweeper runs (seconds).
    sweep_interval: float = 30.0
    #: Defaults when neither the service's policy nor the job chooses.
    document_retention: Literal["discard-after-processing", "after-duration", "keep"] = "after-duration"
    #: How long documents are kept under "after-duration" (seconds).
    document_retention_seconds: float = 86400.0
    #: Jobs (their history) are deleted this long after they ended; None keeps them.
    history_retention_seconds: float | None = None
    # ---- reliability (docs/reliability.md) ----
    #: How often the supervisor looks for offline devices and stuck claims (seconds).
    supervise_interval: float = 5.0
    #: A device offline this long has its processing jobs moved to processing-stopped.
    offline_grace: float = 60.0
    #: A device offline this long has its claimed jobs aborted.
    offline_abort_after: float = 3600.0
    #: A claim with no report for this long (device online, job not processing-stopped) is
    #: released if printing never started, else aborted (AWS IoT Jobs' step timeout).
    step_timeout: float = 600.0
    #: A job fetchable this long for an online device gets its doorbell rung again.
    redeliver_after: float = 30.0
    #: How long a status request waits for the device's answer before calling it unreachable.
    status_timeout: float = 10.0

    # -- connections (docs/security.md: connections, files and audit) ----------------------------
    #: HTTPS connections open at once, TLS handshakes included; default: this process's
    #: connection budget (the open-files limit less a reserve; half of it under ``up``).
    max_connections: int | None = None
    #: The TLS handshake of a new connection must finish within this many seconds.
    tls_handshake_timeout: float = 10.0
    #: A request's head (request line and headers) must be complete within this many seconds of
    #: the connection, or of the previous response (slow or idle clients are closed).
    header_timeout: float = 10.0
    #: An idle keep-alive connection is closed after this many seconds.
    keep_alive_timeout: float = 5.0
    #: The HTTP/1.1 parser: ``httptools`` (C, llhttp) or ``h11`` (pure Python); ``auto`` takes
    #: httptools when it is installed. Both behave the same to clients; httptools costs less CPU.
    http_parser: Literal["auto", "httptools", "h11"] = "auto"
    #: The event loop of ``cloudimaging service``: ``uvloop`` (libuv, with TLS in C) or Python's
    #: ``asyncio``; ``auto`` takes uvloop when it is installed.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    # -- MQTT at scale (docs/brokers.md, "Several replicas") --------------------------------------
    #: The service's MQTT client id; None: ``cloud-service-<host>-<random>``, unique per process
    #: (two connections with one id knock each other off). A stable id resumes its session.
    mqtt_client_id: str | None = None
    #: None: plain subscriptions over MQTT 3.1.1 (one replica; the embedded broker). A name: MQTT 5
    #: shared subscriptions ``$share/<name>/ci/v1/dev/+/up`` and ``.../presence``, so each device
    #: message reaches one replica of the group.
    mqtt_shared_group: str | None = Field(default=None, pattern=r"^[^/+#]+$")
    #: MQTT 5 session expiry (seconds) of a stable ``mqtt_client_id``: messages in flight to a
    #: replica that comes back within it are redelivered. A generated id always starts clean.
    mqtt_session_expiry: int = Field(default=0, ge=0)
    #: A job still waiting for its document (pending-held, job-incoming) this long after its
    #: last change is aborted (IPP's multiple-operation-time-out): the upload died with its
    #: client or with the replica that was receiving it.
    incoming_timeout: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> ServiceConfig:
        if self.object_store == "s3" and not self.s3_bucket:
            raise ValueError("object_store is s3: set s3_bucket (CLOUDIMAGING_S3_BUCKET)")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'service.db').resolve()}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def ca_dir(self) -> Path:
        """Where the device CA (and its CRL) lives; see ``pki_dir``."""
        if self.pki_dir is not None:
            return self.pki_dir
        if self.ca_file is not None and (self.ca_file.parent / "ca.key").exists():
            return self.ca_file.parent
        return self.data_dir / "pki"

    @classmethod
    def load(cls, path: Path) -> ServiceConfig:
        return cls.model_validate(json.loads(path.read_text()))

    @classmethod
    def from_sources(cls, path: Path | None = None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """Defaults, then the JSON file (if any), then ``CLOUDIMAGING_*`` from the environment."""
        values: dict[str, Any] = json.loads(path.read_text()) if path is not None else {}
        values.update(env_values(os.environ if environ is None else environ))
        return cls.model_validate(values)

    def base_url(self, port: int | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host if ":" not in self.http_host else f"[{self.http_host}]"
        return f"https://{host}:{port or self.http_port}"



# -- the environment ----------------------------------------------------------------------------


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def env_file_name(field: str) -> str:
    """The variable naming a file that holds the value. ``X_FILE`` unless that is already the
    name of another field (``broker_password_file`` is Mosquitto's password file): then
    ``X_SECRET_FILE``."""
    if f"{field}_file" in ServiceConfig.model_fields:
        return env_name(field) + "_SECRET_FILE"
    return env_name(field) + "_FILE"


def _is_structured(annotation: Any) -> bool:
    """Lists and mappings are given as JSON in the environment."""
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) in (list, dict) or arg in (list, dict):
            return True
    return False


def _allows_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation)


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields set in ``environ``: raw strings (pydantic converts them), JSON for lists, and
    the empty string as None where None is allowed. Setting a field both ways is an error."""
    values: dict[str, Any] = {}
    for field, info in ServiceConfig.model_fields.items():
        direct, by_file = env_name(field), env_file_name(field)
        if direct in environ and by_file in environ:
            raise ConfigError(f"{direct} and {by_file} are both set; set one")
        if direct in environ:
            raw = environ[direct]
        elif by_file in environ:
            try:
                raw = Path(environ[by_file]).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{by_file}: cannot read {environ[by_file]}: {exc.strerror}") from None
        else:
            continue
        if raw == "" and _allows_none(info.annotation):
            values[field] = None
        elif _is_structured(info.annotation):
            try:
                values[field] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{direct} must be JSON ({exc})") from None
        else:
            values[field] = raw
    return values


def field_docs() -> dict[str, str]:
    """The ``#:`` comment above each field, read from this module's source (one place to write
    what a field means: the code, which the table is made from)."""
    source = textwrap.dedent(inspect.getsource(ServiceConfig))
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            row = node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#:"):
                comment.insert(0, lines[row].strip()[2:].strip())
                row -= 1
            docs[node.target.id] = " ".join(comment)
    return docs


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(arg) for arg in typing.get_args(annotation))
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    for noise in ("typing.", "pathlib.", "<class '", "'>"):
        text = text.replace(noise, "")
    return text


def _default(field: str) -> str:
    info = ServiceConfig.model_fields[field]
    if info.default is None:
        return "(none)"
    if isinstance(info.default, Path):
        return f"`{info.default}`"
    if isinstance(info.default, str):
        return f"`{info.default}`" if info.default else '`""`'
    return f"`{json.dumps(info.default)}`"


def env_table() -> str:
    """The Markdown table of every setting: variable, the file variable, type, default, meaning."""
    docs = field_docs()
    rows = ["| variable (JSON field) | type | default | meaning |", "|---|---|---|---|"]
    for field, info in ServiceConfig.model_fields.items():
        meaning = docs.get(field, "").replace("|", "\\|")
        if field in SECRET_FIELDS:
            meaning = ("**Secret**: prefer `" + env_file_name(field) + "`. " + meaning).strip()
        kind = _type_name(info.annotation).replace("|", "\\|")
        if _is_structured(info.annotation):
            kind += " (JSON)"
        rows.append(f"| `{env_name(field)}` (`{field}`) | {kind} | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"
