"""JSON bodies of the HTTP API (served by cloud_service.http, used by client/).

Field names are snake_case for the API's own fields; tickets and capabilities keep their
IPP names (``print-color-mode``) because they are IPP attributes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from schemas.enums import DocumentState, JobState, ServiceKind, ServiceState
from schemas.supplies import Supply
from schemas.text import MimeType, Name, Text

API_PREFIX = "/api/v1"


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceInfo(ApiModel):
    """A print (later scan, fax) service as a client sees it."""

    kind: ServiceKind
    name: str
    device_id: str
    state: ServiceState
    state_reasons: list[str]
    state_message: str | None = None
    info: str | None = None
    location: str | None = None
    make_and_model: str | None = None
    online: bool
    last_seen: float | None = None
    queued_jobs: int = 0
    capabilities: dict[str, Any]
    ipp_uri: str | None = None
    #: The supplies (toner, ink, waste bins) and levels the device last reported; empty if none.
    supplies: list[Supply] = []


class RetentionChoice(ApiModel):
    """A job's own retention choice (PWG Cloud Imaging Model requirement 15); unset fields follow
    the service's policy."""

    documents: Literal["discard-after-processing", "after-duration", "keep"] | None = None
    document_seconds: Annotated[float, Field(gt=0)] | None = None
    history_seconds: Annotated[float, Field(gt=0)] | None = None


class JobCreate(ApiModel):
    """Create a job. With multipart, this is the ``job`` part and the file is ``document``.

    As JSON alone: give ``document_uri`` (an https URL the service fetches) or set
    ``upload`` to get a presigned ``upload_url``; PUT the bytes there, then POST .../close.
    """

    #: None: the caller's default service of ``kind``, else the only one they may use; with
    #: several and no default the job is refused (409 ``service-required``), never guessed.
    service: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    kind: ServiceKind = ServiceKind.PRINT
    ticket: dict[str, Any] = {}
    document_name: Name | None = None
    document_format: MimeType | None = None
    document_uri: HttpUrl | None = None
    #: The document's size in bytes, if the client knows it: a document larger than the
    #: service takes is refused (413) before the job is made.
    document_size: Annotated[int, Field(ge=0)] | None = None
    upload: bool = False
    retention: RetentionChoice | None = None


class TicketCheck(ApiModel):
    ticket: dict[str, Any] = {}
    document_format: MimeType | None = None


class DocumentInfo(ApiModel):
    number: int
    name: str | None = None
    format: str
    size: int | None = None
    sha256: str | None = None
    state: DocumentState
    impressions_completed: int = 0


class JobEvent(ApiModel):
    """One step of a job's history."""

    at: float
    version: int
    state: JobState
    state_reasons: list[str]
    message: str | None = None


class JobInfo(ApiModel):
    id: int
    uuid: str
    kind: ServiceKind
    service: str
    device_id: str
    owner: str
    state: JobState
    state_reasons: list[str]
    state_message: str | None = None
    version: int
    created_at: float
    updated_at: float
    completed_at: float | None = None
    impressions_completed: int = 0
    ticket: dict[str, Any]
    documents: list[DocumentInfo]
    history: list[JobEvent] = []
    upload_url: str | None = None
    #: True for another user's job: only its id, state, service and times are shown.
    redacted: bool = False
    #: The job's retention policy and when its documents and the job itself will be deleted.
    retention: dict[str, Any] | None = None
    #: Credits per impression when the job was submitted (None: free).
    price_per_impression: int | None = None
    #: FaxOut jobs: each destination's outcome (PWG 5100.15 ``destination-statuses``).
    destination_statuses: list[dict[str, Any]] | None = None


class ErrorDetail(ApiModel):
    code: str
    message: Text
    attribute: str | None = None
    supported: Any = None


class ErrorBody(ApiModel):
    error: ErrorDetail


class DefaultService(ApiModel):
    """A user's default service of one kind (``/api/v1/me/default/{kind}``): where a job that
    names no service goes. ``service`` is None when the user has set none."""

    kind: ServiceKind
    service: str | None = None


class DefaultServiceSet(ApiModel):
    """The body of ``PUT /api/v1/me/default/{kind}``."""

    service: Annotated[str, Field(min_length=1, max_length=64)]
