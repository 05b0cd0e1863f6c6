"""Configuration of the Cloud Service: one pydantic model, from a JSON file or built in code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServiceConfig(BaseModel):
    """Everything the service needs; defaults suit the embedded single-machine stack."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path(".cloudimaging")
    #: SQLAlchemy async URL; default: SQLite in the data directory. PostgreSQL:
    #: ``postgresql+asyncpg://user@host/db``.
    database_url: str | None = None
    broker_url: str = "mqtts://127.0.0.1:8883"
    broker_username: str = "cloud-service"
    broker_password: str = ""
    #: PEM CA used to verify the broker and presented to clients for verifying us.
    ca_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8443
    #: Base URL of this service as devices and clients reach it (presigned URLs use it);
    #: default ``https://{http_host}:{port}``.
    public_url: str | None = None
    #: Largest document accepted (bytes).
    max_document_bytes: int = 256 * 1024 * 1024
    #: Lifetime of presigned URLs (seconds); short, minted when a device claims a job.
    url_ttl: float = 300.0
    #: Devices waiting for a reply: how long a fetch-job reply's URLs etc. stay valid.
    keepalive: int = 30
    #: How often SSE streams re-read the job from the database (covers other replicas).
    event_poll_interval: float = 2.0
    #: Fetch of document_uri: allow plain http and private hosts (tests only).
    allow_insecure_document_uri: bool = False
    log_level: str = "INFO"

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

    def base_url(self, port: int | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host if ":" not in self.http_host else f"[{self.http_host}]"
        return f"https://{host}:{port or self.http_port}"

