"""Configuration of the Cloud Service: one pydantic model, from a JSON file or built in code."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict


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

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'service.db').resolve()}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @classmethod
    def load(cls, path: Path) -> ServiceConfig:
        return cls.model_validate(json.loads(path.read_text()))

    def base_url(self, port: int | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host if ":" not in self.http_host else f"[{self.http_host}]"
        return f"https://{host}:{port or self.http_port}"

