"""The database: the truth of the service (SQLAlchemy 2 async; SQLite or PostgreSQL by URL).

Nothing here is SQLite-specific: JSON columns, integer keys, no raw SQL. Concurrent writers
(several service replicas) are kept apart by optimistic concurrency on ``jobs.version``. The
tables are created and changed only by the Alembic revisions in cloud_service/migrations: a
change to a model here comes with a new revision there (tests/test_migrations.py compares).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Engine, create_engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broker.private import create_private, private_dir
from cloud_service import migrations

#: ``meta.schema_version`` (older releases check it and refuse a larger number). 2: users,
#: sharing, registration, enrollment, certificates, policies, quotas, credits. 3: documents.pages.
#: 4: user_defaults. 5: the schema is managed by Alembic from here on (cloud_service/migrations),
#: and this number no longer changes.
SCHEMA_VERSION = 5


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DeviceRow(Base):
    """A device as the service knows it: identity, liveness, last hello."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    software: Mapped[str | None] = mapped_column(String(255))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float | None] = mapped_column(Float)
    #: The connection id of the latest "online" presence (see schemas.messages.Presence).
    session: Mapped[str | None] = mapped_column(String(64))
    #: The id of the last status request the device answered (a status request on demand).
    status_re: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    #: Registration (schema 2; NULL for devices that were only ever given a broker password).
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    registered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deregistered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: How the device last proved who it is: "certificate" after enrollment, else NULL (password).
    auth: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ServiceRow(Base):
    """One print/scan/fax service of a device, with what the device last reported."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("kind", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    state_reasons: Mapped[list[str]] = mapped_column(JSON)
    state_message: Mapped[str | None] = mapped_column(Text)
    info: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    make_and_model: Mapped[str | None] = mapped_column(Text)
    capabilities: Mapped[dict] = mapped_column(JSON)
    #: The device's supplies (schemas.supplies.Supply as JSON); NULL until it reports any.
    supplies: Mapped[list[dict] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_device_state", "device_id", "state"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(45), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    service_name: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(24))
    state_reasons: Mapped[list[str]] = mapped_column(JSON)
    state_message: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    claimed: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    started: Mapped[bool] = mapped_column(Boolean, default=False)
    impressions_completed: Mapped[int] = mapped_column(Integer, default=0)
    ticket: Mapped[dict] = mapped_column(JSON)
    #: Ids of the last device messages applied (duplicate detection), newest last.
    applied_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The device's own timestamp (``ts``) of the acknowledge-job that claimed the job: a
    #: Hello older than the claim (a late or resent one) says nothing about the job.
    claim_ts: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)
    # Schema 2: accounting and retention, fixed when the job is created.
    #: Price of one impression when the job was submitted (credits); NULL: free.
    price: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Impressions the job is expected to make (copies x pages), counted against quotas
    #: until the device reports the real number.
    impressions_estimated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Document retention: "discard-after-processing", "after-duration" or "keep".
    retention_documents: Mapped[str | None] = mapped_column(String(32), nullable=True)
    retention_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: How long the job itself (history) is kept after it ended; NULL: forever.
    history_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    documents_discarded_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DocumentRow(Base):
    __tablename__ = "documents"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(24))
    impressions_completed: Mapped[int] = mapped_column(Integer, default=0)
    #: Schema 3: pages counted while the bytes were stored (schemas.model.pages.PageCounter), so
    #: quotas and prices never read a document twice; NULL for documents stored before.
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The copy the device is given when it does not take ``format`` (cloud_service.transform):
    #: its format, object key, size, SHA-256, pages and the transform's cost; NULL: none made.
    transformed: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class JobEventRow(Base):
    """Every state change of a job: the history clients see and tests assert on."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(24))
    state_reasons: Mapped[list[str]] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text)


class JobDestinationsRow(Base):
    """The latest ``destination-statuses`` of a fax job (one row per job, a JSON list)."""

    __tablename__ = "job_destinations"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    statuses: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)
    #: The job version the statuses were reported with (newest report wins).
    version: Mapped[int] = mapped_column(Integer)


class TokenRow(Base):
    """An API token, stored as its SHA-256: the token itself is shown once and never kept."""

    __tablename__ = "tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    # Schema 2.
    label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class UserRow(Base):
    """A person or a service account. Roles: admin, owner (may register devices), user."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: "person" or "service-account" (a program; may submit jobs like a person).
    kind: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class EnrollmentCodeRow(Base):
    """A one-time enrollment code, stored as its SHA-256 like tokens."""

    __tablename__ = "enrollment_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DeviceCertificateRow(Base):
    """Every client certificate the CA issued to a device; revoked ones go into the CRL."""

    __tablename__ = "device_certificates"
    serial: Mapped[str] = mapped_column(String(48), primary_key=True)  # hex
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    issued_at: Mapped[float] = mapped_column(Float)
    not_after: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ShareRow(Base):
    """A service of a device shared with a user, a group or everyone.

    ``service_name`` "*" shares every service of the device; ``principal`` is "*" for everyone.
    Keyed by device id and service name (not services.id) so a share can exist before the
    device first reports its services, and survives re-enrollment.
    """

    __tablename__ = "shares"
    __table_args__ = (UniqueConstraint("device_id", "service_name", "principal_kind", "principal"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    service_name: Mapped[str] = mapped_column(String(64))
    #: "user", "group" or "everyone".
    principal_kind: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)


class ServicePolicyRow(Base):
    """Per-service price and retention defaults, set by the device's owner or an admin."""

    __tablename__ = "service_policies"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    price_per_impression: Mapped[int | None] = mapped_column(Integer, nullable=True)
    document_retention: Mapped[str | None] = mapped_column(String(32), nullable=True)
    document_retention_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    history_retention_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(255))


class QuotaRow(Base):
    """At most ``impression_limit`` impressions for ``user`` ("*": each user) on one service,
    over the last ``period_days`` days (NULL: ever)."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("device_id", "service_name", "user"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    service_name: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(255))
    impression_limit: Mapped[int] = mapped_column(Integer)
    period_days: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(255))


class CreditRow(Base):
    """A credit (or, negative, a debit) to a user's balance: the ledger paid printing reads."""

    __tablename__ = "credits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    by: Mapped[str] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class UserDefaultRow(Base):
    """A user's default service of one kind, as ``lpoptions -d`` keeps a default printer: the
    service a new job goes to when it names none. Keyed by name, like shares, so it survives
    the device re-registering its services; a default that is no longer usable is refused by
    name, never silently replaced by another printer."""

    __tablename__ = "user_defaults"
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    service_name: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Float)


def _private_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 (in a 0700 directory, unless it is a shared sticky
    one such as /tmp) before SQLite does: SQLite makes it with the umask's mode and gives the
    -wal and -shm files the mode of the database."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    private_dir(path.parent)
    create_private(path)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # WAL + a busy timeout so HTTP and MQTT handlers don't trip over each other.
        # synchronous=NORMAL with WAL: a commit is not fsynced; the WAL is, at each checkpoint.
        # The database can never be corrupted this way, but a power cut (not a crash of the
        # process) may lose the last transactions (docs/reliability.md says what that means).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def read_json(text: str | bytes) -> Any:
    """JSON columns as read back: orjson (several times the standard library's speed; a job's
    ticket, reasons and message ids are decoded on every read of it), falling back to ``json``
    for what orjson refuses and the standard library wrote (``NaN``, ``Infinity``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def write_json(value: Any) -> str:
    """JSON columns as written: orjson (a service's capabilities and a job's ticket
    are written on every change of them), falling back to ``json`` for what orjson refuses
    (keys that are not strings, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


#: A pooled connection idle longer than this (seconds) is pinged before it is used again.
PING_IDLE_AFTER = 2.0


#: PostgreSQL connections a replica keeps open by default (``database_pool_size``).
POOL_SIZE = 15


def make_engine(url: str, pool_size: int = POOL_SIZE) -> AsyncEngine:
    """The engine of ``url``. On PostgreSQL its pool keeps all ``pool_size`` connections open
    once made and never makes more (no overflow): SQLAlchemy's default of 5 kept plus 10 made
    and closed per burst had a fleet of 16 devices with 32 submitting clients open a connection
    every 80 ms (about 130 in a 10 s run), each a new server process, its startup handshake and
    the driver's statements prepared again. A request finding every connection in use waits for one
    (``pool_timeout``), as it did past the old 15."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_async_engine(url, pool_pre_ping=True, json_deserializer=read_json)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    engine = create_async_engine(url, json_serializer=write_json, json_deserializer=read_json, pool_size=pool_size,
                                 max_overflow=0)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only if it sat idle for ``PING_IDLE_AFTER``.

    SQLAlchemy's ``pool_pre_ping`` checks every one on every checkout: on PostgreSQL through
    asyncpg that is three round trips (BEGIN, a query, ROLLBACK) before each transaction of one
    to four statements, most of a device message's database cost. A connection used a moment
    ago is as good as the ping would say; one found dead (the server restarted) is discarded and
    replaced before use, as with the pre-ping. A server that goes away within that moment fails
    the one transaction that next uses such a connection (the pool is then refreshed): a device
    resends its message, a client gets an error and nothing is half written.
    """
    pool, dialect = engine.sync_engine.pool, engine.sync_engine.dialect

    @event.listens_for(pool, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_IDLE_AFTER:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection is gone") from exc
        if not alive:
            raise DisconnectionError("the pooled connection is gone")


def make_thread_engine(engine: AsyncEngine) -> Engine | None:
    """For a SQLite file: a plain (``sqlite3``) engine on the same database, for
    cloud_service.store to run whole transactions on a thread of its own; None otherwise.

    aiosqlite hands every statement to its thread and the answer back to the event loop, a
    round trip that costs more than SQLite's own work; one hop per transaction instead keeps
    a device message to two thread switches. PostgreSQL's driver needs no thread.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") \
            or url.database.startswith("file:"):
        return None
    # Used by the store's one database thread (closed by whichever thread disposes of it); a
    # local file needs no ping before each transaction.
    thread_engine = create_engine(url.set(drivername="sqlite+pysqlite"),
                                  connect_args={"check_same_thread": False}, json_serializer=write_json,
                                  json_deserializer=read_json)
    _sqlite_pragmas(thread_engine)
    return thread_engine


#: The advisory lock key that serializes migrations on PostgreSQL ("cloudimaging-schema"): two
#: replicas starting together must not both create the tables.
MIGRATION_LOCK = 0x636C6F7564696D67


async def create_schema(engine: AsyncEngine) -> str:
    """Bring the database to the newest schema (Alembic, cloud_service/migrations); returns the
    revision. Refuses a database written by newer software. On PostgreSQL a transaction-scoped
    advisory lock makes concurrent starts take turns: the second finds the work done."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        return await conn.run_sync(migrations.upgrade, Base.metadata)


async def schema_revision(engine: AsyncEngine) -> tuple[str | None, str]:
    """The database's revision (None: not created yet) and the newest this software knows."""
    async with engine.connect() as conn:
        return await conn.run_sync(migrations.current), migrations.head()
