"""Every MQTT message between a Manager and the Cloud Service, and their msgpack codec.

A message is a msgpack map: the envelope (``v``, ``type``, ``id``, ``ts``, optional ``re``)
plus the fields of its type. Device -> cloud messages travel on ``.../up``, cloud -> device
messages on ``.../down`` (schemas.topics). Correlation, expiry and versions are in the
payload, never in MQTT 5 properties, because the embedded broker speaks MQTT 3.1.1 only.

The counterpart in PWG 5100.18 (INFRA) of each message is named in its docstring and in
docs/protocol.md.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from schemas.enums import DocumentState, JobState, ServiceKind, ServiceState
from schemas.supplies import Supplies
from schemas.text import Keyword, MimeType, Name, Text
from schemas.tickets import (
    DestinationStatus,
    FaxOutCapabilities,
    FaxOutJobTicket,
    PrintCapabilities,
    PrintJobTicket,
    ScanCapabilities,
    ScanJobTicket,
    ticket_model,
)

PROTOCOL_VERSION = 1
#: Largest message either side accepts; bigger ones are refused unread (bytes go by URL).
MAX_MESSAGE_BYTES = 64 * 1024
MAX_JOBS_PER_HELLO = 2000

JobId = Annotated[int, Field(ge=1, le=2**53)]
Version = Annotated[int, Field(ge=0, le=2**53)]
MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Reasons = Annotated[list[Keyword], Field(max_length=32)]


#: A random prefix per process and a counter: unique like a UUID4 per message (64 random bits
#: name the process), without a system call for randomness on every message.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:
    """A forked child is another process: it must not repeat its parent's ids."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:16], itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_message_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


class Message(BaseModel):
    """The envelope shared by every message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION
    id: MessageId = Field(default_factory=new_message_id)
    ts: float = Field(default_factory=time.time)
    #: The id of the request this message answers, if any.
    re: MessageId | None = None


# ---------------------------------------------------------------------------- device -> cloud


class HeldJob(BaseModel):
    """One job a Manager holds, as it last knew it (an entry of Update-Active-Jobs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: JobId
    version: Version
    state: JobState
    impressions_completed: Annotated[int, Field(ge=0)] = 0


class Hello(Message):
    """Sent on every (re)connect. INFRA: Update-Active-Jobs (and implicit registration)."""

    type: Literal["hello"] = "hello"
    software: Name
    jobs: Annotated[list[HeldJob], Field(max_length=MAX_JOBS_PER_HELLO)] = Field(default_factory=list)


class PrintServiceAttributes(BaseModel):
    """One service of the device with its capabilities and state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[ServiceKind.PRINT] = ServiceKind.PRINT
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    info: Text | None = None
    location: Text | None = None
    make_and_model: Text | None = None
    state: ServiceState = ServiceState.IDLE
    state_reasons: Reasons = Field(default_factory=list)
    state_message: Text | None = None
    capabilities: PrintCapabilities = PrintCapabilities()
    #: The device's supplies (printer markers: toner, ink, waste bins) with their levels; empty
    #: when it reports none (and from Managers older than the field).
    supplies: Supplies = Field(default_factory=list)


class ScanServiceAttributes(PrintServiceAttributes):
    """A scan service (PWG 5100.17 capabilities)."""

    kind: Literal[ServiceKind.SCAN] = ServiceKind.SCAN  # type: ignore[assignment]
    capabilities: ScanCapabilities = ScanCapabilities()  # type: ignore[assignment]


class FaxOutServiceAttributes(PrintServiceAttributes):
    """A FaxOut service (PWG 5100.15 capabilities)."""

    kind: Literal[ServiceKind.FAXOUT] = ServiceKind.FAXOUT  # type: ignore[assignment]
    capabilities: FaxOutCapabilities = FaxOutCapabilities()  # type: ignore[assignment]


def _service_kind(value: Any) -> str:
    """The discriminator of a service entry; ``print`` when absent (older Managers)."""
    kind = value.get("kind", "print") if isinstance(value, dict) else getattr(value, "kind", "print")
    return str(kind.value if isinstance(kind, ServiceKind) else kind)


ServiceAttributes = Annotated[
    Annotated[PrintServiceAttributes, Tag("print")]
    | Annotated[ScanServiceAttributes, Tag("scan")]
    | Annotated[FaxOutServiceAttributes, Tag("faxout")],
    Discriminator(_service_kind),
]


class Attributes(Message):
    """The device's services, capabilities and states; on connect, on change and as the
    answer to a StatusRequest (then ``re`` names it). INFRA: Update-Output-Device-Attributes.
    """

    type: Literal["attributes"] = "attributes"
    services: Annotated[list[ServiceAttributes], Field(min_length=1, max_length=8)]


class FetchJob(Message):
    """Ask for a fetchable job's ticket. INFRA: Fetch-Job. Does not claim it."""

    type: Literal["fetch-job"] = "fetch-job"
    job_id: JobId


class AcknowledgeJob(Message):
    """Accept (claim) or reject a fetched job. INFRA: Acknowledge-Job with fetch-status-code.

    ``version`` is the job version from the fetch-job reply; accepting a job whose version
    moved on (canceled meanwhile) is refused as stale.
    """

    type: Literal["acknowledge-job"] = "acknowledge-job"
    job_id: JobId
    version: Version
    accept: bool
    reason: Keyword | None = None
    message: Text | None = None


class FetchDocument(Message):
    """Ask for a fresh presigned URL of one document of a claimed job. INFRA: Fetch-Document."""

    type: Literal["fetch-document"] = "fetch-document"
    job_id: JobId
    document_number: Annotated[int, Field(ge=1)] = 1


class DocumentStatus(Message):
    """INFRA: Update-Document-Status (and Acknowledge-Document when completed)."""

    type: Literal["document-status"] = "document-status"
    job_id: JobId
    document_number: Annotated[int, Field(ge=1)]
    version: Version
    state: DocumentState
    reasons: Reasons = Field(default_factory=list)
    message: Text | None = None
    impressions_completed: Annotated[int, Field(ge=0)] = 0
    #: Scan output: the uploaded document's size and SHA-256 as the device computed them; the
    #: service checks them against what it stored before accepting ``completed``.
    size: Annotated[int, Field(ge=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class RequestUpload(Message):
    """Scan output: ask for a presigned PUT URL for output document ``document_number``.

    Idempotent (asking again gives a fresh URL for the same document); no version change.
    Counterpart: none in INFRA (which has no scan); PWG 5100.17's push model, with the
    cloud's object store as the destination.
    """

    type: Literal["request-upload"] = "request-upload"
    job_id: JobId
    document_number: Annotated[int, Field(ge=1, le=1000)]
    document_format: MimeType
    document_name: Name | None = None


class JobStatus(Message):
    """INFRA: Update-Job-Status. ``version`` is the job version the report is based on."""

    type: Literal["job-status"] = "job-status"
    job_id: JobId
    version: Version
    state: JobState
    reasons: Reasons = Field(default_factory=list)
    message: Text | None = None
    impressions_completed: Annotated[int, Field(ge=0)] = 0
    #: FaxOut: the outcome per destination (PWG 5100.15 ``destination-statuses``).
    destination_statuses: Annotated[list[DestinationStatus], Field(max_length=32)] | None = None


class Bye(Message):
    """Orderly goodbye before disconnecting. INFRA: Deregister-Output-Device (session only)."""

    type: Literal["bye"] = "bye"
    reason: Keyword = "shutdown"


class Presence(BaseModel):
    """Payload on ``.../presence``: ``online`` on connect; ``offline`` is the Last Will."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION
    type: Literal["presence"] = "presence"
    state: Literal["online", "offline"]
    ts: float = Field(default_factory=time.time)
    #: Random id of the MQTT connection, the same in its "online" and its Last Will: an
    #: "offline" will of an older connection (published late, after a takeover) is ignored.
    session: Annotated[str, Field(max_length=64)] | None = None


UpMessage = Annotated[
    Hello | Attributes | FetchJob | AcknowledgeJob | FetchDocument | DocumentStatus | JobStatus | Bye
    | RequestUpload,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------------------- cloud -> device


class StopJob(BaseModel):
    """A held job the device must stop (canceled or aborted at the cloud meanwhile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: JobId
    version: Version
    state: JobState


#: A service database's instance id (see Sync).
Instance = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Sync(Message):
    """Answer to Hello. INFRA: Update-Active-Jobs response plus Get-Jobs which-jobs=fetchable.

    ``unknown`` lists held jobs the cloud does not know or that are not assigned to this
    device (the unsupported group of Update-Active-Jobs): the device drops them.

    ``instance`` names the service's database (a random id made with it): job ids are unique
    only within one database, so a device that sees it change closes out the jobs of the
    old one and starts a fresh memory of job ids (docs/protocol.md). Absent from older
    services.
    """

    type: Literal["sync"] = "sync"
    fetchable: list[JobId] = Field(default_factory=list)
    stop: list[StopJob] = Field(default_factory=list)
    unknown: list[JobId] = Field(default_factory=list)
    server_time: float = Field(default_factory=time.time)
    instance: Instance | None = None


class JobFetchable(Message):
    """Doorbell: there is a job for you. INFRA: the job-fetchable event.

    ``instance`` is the database the job id belongs to (as in Sync): a device that knows
    another one sends Hello again instead of judging the id against the wrong database.
    """

    type: Literal["job-fetchable"] = "job-fetchable"
    job_id: JobId
    instance: Instance | None = None


class JobCanceled(Message):
    """A job the device may hold was canceled. INFRA: job-state-changed to canceled."""

    type: Literal["job-canceled"] = "job-canceled"
    job_id: JobId
    version: Version


class StatusRequest(Message):
    """Report your status now (PWG Cloud Imaging Model requirement 11). Answered by Attributes with ``re`` set."""

    type: Literal["status-request"] = "status-request"


class Identify(Message):
    """Make yourself known to the user. INFRA: identify-printer-requested."""

    type: Literal["identify"] = "identify"
    actions: list[Keyword] = ["display"]
    message: Text | None = None


class DocumentAccess(BaseModel):
    """Where to download (print) one document: a presigned URL scoped to it and GET."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    document_number: Annotated[int, Field(ge=1)]
    url: Annotated[str, Field(max_length=2048)]
    expires_at: float
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    document_format: MimeType
    document_name: Name | None = None


class UploadAccess(BaseModel):
    """Where to upload (scan output) one document: a presigned URL scoped to it and PUT."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    document_number: Annotated[int, Field(ge=1)]
    url: Annotated[str, Field(max_length=2048)]
    expires_at: float
    document_format: MimeType


class Reply(Message):
    """The answer to a request (fetch-job, acknowledge-job, fetch-document, status reports).

    ``code`` is ``ok``, ``duplicate`` (already applied; ignored), or an error: ``stale``
    (your version is old; ``state``/``version`` give the current), ``not-found``,
    ``not-yours``, ``not-fetchable``, ``invalid-transition``, ``bad-request``, ``malformed``,
    ``unknown-type``, ``too-large``, ``unsupported-version``.
    """

    type: Literal["reply"] = "reply"
    ok: bool
    code: Keyword
    message: Text | None = None
    job_id: JobId | None = None
    state: JobState | None = None
    reasons: Reasons = Field(default_factory=list)
    version: Version | None = None
    service: Annotated[str, Field(max_length=64)] | None = None
    #: The job's service kind (fetch-job); absent means print, so ``ticket`` is a print ticket.
    kind: ServiceKind | None = None
    ticket: PrintJobTicket | ScanJobTicket | FaxOutJobTicket | None = None
    documents: list[DocumentAccess] = Field(default_factory=list)
    uploads: list[UploadAccess] = Field(default_factory=list)
    document_count: int | None = None
    #: fetch-job: the job's ``job-uuid`` (made at random with the job, kept in backups). A
    #: restored database offers a job the device finished again under the same id and uuid; a
    #: new job that reuses the id (the id sequence went back with the backup) has another uuid.
    job_uuid: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _ticket_by_kind(cls, data: Any) -> Any:
        """Parse ``ticket`` with the model of ``kind`` (tickets of all kinds may look alike)."""
        if isinstance(data, dict) and isinstance(data.get("ticket"), dict):
            data = {**data, "ticket": ticket_model(str(data.get("kind") or "print")).model_validate(data["ticket"])}
        return data


DownMessage = Annotated[
    Sync | JobFetchable | JobCanceled | StatusRequest | Identify | Reply,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------------------- codec


class ProtocolError(Exception):
    """A message that cannot be accepted; ``code`` is the Reply code to answer with."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


_UP = TypeAdapter(UpMessage)
_DOWN = TypeAdapter(DownMessage)
_KNOWN_UP = {"hello", "attributes", "fetch-job", "acknowledge-job", "fetch-document",
             "document-status", "job-status", "bye", "request-upload"}
_KNOWN_DOWN = {"sync", "job-fetchable", "job-canceled", "status-request", "identify", "reply"}


def encode(message: BaseModel) -> bytes:
    data = msgpack.packb(message.model_dump(mode="json", by_alias=True, exclude_none=True))
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too-large", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def _decode(data: bytes, adapter: TypeAdapter[Any], known: set[str]) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too-large", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed", f"invalid UTF-8 in message: {exc.reason}") from None
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError("malformed", f"not a msgpack message: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("malformed", "message is not a msgpack map")
    request_id = raw.get("id") if isinstance(raw.get("id"), str) and len(raw["id"]) <= 64 else None
    if raw.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("unsupported-version", f"protocol version {raw.get('v')!r} is not 1",
                            request_id)
    if raw.get("type") not in known:
        kind = str(raw.get("type"))[:40]
        raise ProtocolError("unknown-type", f"unknown message type {kind!r}", request_id)
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "message"
        raise ProtocolError("bad-request", f"{where}: {first['msg']}", request_id) from None


def decode_up(data: bytes) -> Hello | Attributes | FetchJob | AcknowledgeJob | FetchDocument | \
        DocumentStatus | JobStatus | Bye | RequestUpload:
    """Parse a device -> cloud message; raises ProtocolError with the reply code."""
    return _decode(data, _UP, _KNOWN_UP)


def decode_down(data: bytes) -> Sync | JobFetchable | JobCanceled | StatusRequest | Identify | Reply:
    """Parse a cloud -> device message; raises ProtocolError."""
    return _decode(data, _DOWN, _KNOWN_DOWN)


def decode_presence(data: bytes) -> Presence:
    if len(data) > 1024:
        raise ProtocolError("too-large", "presence message too large")
    try:
        return Presence.model_validate(msgpack.unpackb(data, raw=False))
    except Exception as exc:
        raise ProtocolError("malformed", f"bad presence message: {type(exc).__name__}") from None
