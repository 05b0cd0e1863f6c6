"""The I/O-free core both clients share: requests, parsing, errors, documents and the flows.

Every operation is written once, as a *flow*: a generator that yields the steps it needs
(:class:`Request`, :class:`Upload`, :class:`Download`, :class:`Stream`, :class:`Sleep`,
:class:`Emit`) and receives each step's answer, or has the step's exception thrown in. It
returns the operation's result. This is how httpx writes ``Auth.auth_flow``:
:class:`client.api.CloudImagingClient` and :class:`client.aio.AsyncCloudImagingClient` only
carry the steps out, with blocking or with asyncio I/O, so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import ssl
import typing
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit

import certifi
from pydantic import BaseModel, ValidationError

from client.errors import ApiError, ClientError
from client.formats import SNIFF_SIZE, detect_format
from client.sse import SseDecoder
from schemas.api import API_PREFIX, DefaultService, JobCreate, JobInfo, ServiceInfo
from schemas.enums import ServiceKind
from schemas.tickets import IppModel

DEFAULT_TIMEOUT = 30.0
#: Read timeout of the events stream: the service sends keepalive comments well within it.
EVENTS_READ_TIMEOUT = 60.0
CHUNK_SIZE = 64 * 1024

#: ``progress(sent_bytes, total_bytes)``, called as an upload advances.
ProgressCallback = Callable[[int, int], None]
#: A document: a path to a file, or the bytes themselves.
Document = str | os.PathLike[str] | bytes | bytearray | memoryview
Ticket = Mapping[str, Any] | IppModel | None

M = TypeVar("M", bound=BaseModel)


def user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"cloudimaging-client/{version('cloudimaging')}"
    except Exception:  # not installed as a distribution: still identify ourselves
        return "cloudimaging-client"


def ssl_context(ca: str | os.PathLike[str] | None, *, public: bool = False) -> ssl.SSLContext:
    """TLS verification context: only ``ca`` when given (the service's private CA).

    ``public=True`` also trusts the public CAs, for presigned URLs that point at an object
    store on another host.
    """
    if ca is None:
        return ssl.create_default_context(cafile=certifi.where())
    context = ssl.create_default_context(cafile=certifi.where() if public else None)
    try:
        context.load_verify_locations(cafile=os.fspath(ca))
    except ssl.SSLError as exc:  # before OSError: an SSLError is one, with no file name in it
        raise ClientError(f"CA file {os.fspath(ca)}: not a PEM certificate ({exc.reason or exc})") from None
    except OSError as exc:  # ssl names no file in its errors; the user must see which one
        raise ClientError(f"CA file {os.fspath(ca)}: {exc.strerror or exc}") from None
    return context


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _prune(model: type[BaseModel], data: Any) -> Any:
    """Drop fields ``model`` does not know, recursively.

    The schema models forbid extra fields (right for requests), but a client must keep
    working when a newer service adds a field to a response.
    """
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        inner = _model_in(field.annotation)
        if inner is not None:
            value = [_prune(inner, v) for v in value] if isinstance(value, list) else _prune(inner, value)
        out[key] = value
    return out


def parse_model(model: type[M], data: Any, status: int = 200) -> M:
    """Validate a response body as ``model``; a malformed one is an ApiError, not a crash."""
    try:
        return model.model_validate(_prune(model, data))
    except ValidationError as exc:
        message = f"unexpected {model.__name__} from the service: {exc}"
        raise ApiError(status, "bad-response", message) from None


def error_from_response(status: int, body: bytes, reason: str = "") -> ApiError:
    """The ApiError for a non-2xx response, from the ``{"error": {...}}`` envelope if present."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        return ApiError(
            status,
            str(err.get("code") or f"http-{status}"),
            str(err.get("message") or reason or f"HTTP {status}"),
            err.get("attribute"),
            err.get("supported"),
        )
    if isinstance(data, dict) and "detail" in data:  # a framework default, e.g. FastAPI's 422
        detail = data["detail"]
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            loc = [str(part) for part in first.get("loc", []) if part not in ("body", "query", "path")]
            message = f"{'.'.join(loc)}: {first.get('msg')}" if loc else str(first.get("msg"))
        else:
            message = str(detail)
        return ApiError(status, f"http-{status}", message)
    text = body[:200].decode("utf-8", "replace").strip() if body else ""
    message = f"HTTP {status} {reason}".strip() + (f": {text}" if text else "")
    return ApiError(status, f"http-{status}", message)


def decode_answer(status: int, body: bytes, reason: str, what: str, json_answer: bool = True) -> Any:
    """A response's JSON, or the ApiError it stands for (a refusal, or not JSON at all)."""
    if status >= 400:
        raise error_from_response(status, body, reason)
    if not json_answer:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise ApiError(status, "bad-response", f"{what} did not answer JSON") from None


def is_error_envelope(body: bytes) -> bool:
    """True when a body is the service's own error object (not a proxy's or router's page)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict)


def ticket_dict(ticket: Ticket) -> dict[str, Any]:
    if ticket is None:
        return {}
    if isinstance(ticket, IppModel):
        return ticket.wire()
    return dict(ticket)


def job_create_body(**fields: Any) -> dict[str, Any]:
    """A checked JobCreate as JSON, so a bad field fails here, not as a server 422."""
    try:
        create = JobCreate.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        raise ClientError(f"{where}: {first['msg']}") from None
    return create.model_dump(mode="json", exclude_none=True)


def service_path(kind: ServiceKind | str, name: str) -> str:
    return f"{API_PREFIX}/services/{quote(str(kind), safe='')}/{quote(name, safe='')}"


def job_path(job_id: int, action: str = "") -> str:
    return f"{API_PREFIX}/jobs/{int(job_id)}" + (f"/{action}" if action else "")


@dataclass(frozen=True)
class DocumentSource:
    """A document to send: its name, size, first bytes (for detection) and chunks on demand."""

    name: str | None
    size: int
    head: bytes
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def open(cls, document: Document, name: str | None = None) -> DocumentSource:
        if isinstance(document, bytes | bytearray | memoryview):
            data = bytes(document)
            return cls(name, len(data), data[:SNIFF_SIZE], data=data)
        path = Path(document)
        with path.open("rb") as stream:  # fails early, with the OS's reason, if unreadable
            head = stream.read(SNIFF_SIZE)
            size = os.fstat(stream.fileno()).st_size
        return cls(name or path.name, size, head, path=path)

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if self.data is not None:
            for start in range(0, len(self.data), size):
                yield self.data[start : start + size]
            return
        assert self.path is not None
        with self.path.open("rb") as stream:
            while chunk := stream.read(size):
                yield chunk

    def reader(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")


class ProgressReader:
    """A file wrapper that reports bytes read, for multipart bodies that httpx reads itself."""

    def __init__(self, raw: IO[bytes], total: int, progress: ProgressCallback | None) -> None:
        self._raw, self._total, self._progress, self._sent = raw, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self._sent += len(chunk)
        if self._progress is not None and chunk:
            self._progress(min(self._sent, self._total), self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._raw.seek(offset, whence)
        if whence == 0 and offset == 0:
            self._sent = 0
        return position

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()


def check_upload_receipt(response_body: bytes, size: int, digest: str) -> None:
    """Compare the service's ``{"size", "sha256"}`` receipt with what was sent, when given.

    An object store other than the service's own may answer with no JSON; then there is
    nothing to compare.
    """
    try:
        receipt = json.loads(response_body) if response_body else None
    except ValueError:
        return
    if not isinstance(receipt, dict):
        return
    if "size" in receipt and receipt["size"] != size:
        message = f"the service stored {receipt['size']} bytes, {size} were sent"
        raise ApiError(200, "upload-corrupted", message)
    if "sha256" in receipt and str(receipt["sha256"]).lower() != digest:
        raise ApiError(200, "upload-corrupted", "the stored document's sha256 differs from the sent bytes")


class ChangeTracker:
    """Says whether a JobInfo is news: reconnects replay the current state, skip repeats."""

    def __init__(self) -> None:
        self._last: tuple[Any, ...] | None = None

    def is_new(self, info: JobInfo) -> bool:
        key = (
            info.version,
            info.state,
            tuple(info.state_reasons),
            info.impressions_completed,
            info.state_message,
        )
        if self._last is not None and (info.version < self._last[0] or key == self._last):
            return False
        self._last = key
        return True


def reconnect_delay(decoder: SseDecoder, base: float, failures: int) -> float:
    """The server's ``retry`` if it sent one; soon after a stream that delivered, else backing off."""
    if decoder.retry is not None:
        return decoder.retry
    return base * failures if failures else base / 5


class StreamUnavailable(Exception):
    """The events stream is not offered (old service, proxy): poll instead."""


def stream_refusal(status: int, body: bytes, reason: str) -> Exception:
    """What a non-2xx answer to the events request means: stop with an error, or poll."""
    if status in (400, 401, 403, 422) or (status == 404 and is_error_envelope(body)):
        return error_from_response(status, body, reason)
    return StreamUnavailable(f"events stream answered HTTP {status}")


def event_job(event_type: str, data: str) -> JobInfo | None:
    """The JobInfo in one SSE event, or None for other event types and malformed data."""
    if event_type not in ("job", "message"):
        return None
    try:
        return parse_model(JobInfo, json.loads(data))
    except (ValueError, ApiError):
        return None


class UploadMeter:
    """Hashes and counts the chunks of an upload as they go, reporting progress."""

    def __init__(self, size: int, progress: ProgressCallback | None) -> None:
        self.size, self.sent, self._progress = size, 0, progress
        self._digest = hashlib.sha256()
        if progress is not None:
            progress(0, size)

    def count(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.sent += len(chunk)
        if self._progress is not None:
            self._progress(self.sent, self.size)

    def check(self, response_body: bytes) -> None:
        check_upload_receipt(response_body, self.size, self._digest.hexdigest())


def part_path(dest: Path) -> Path:
    """Where a download is written before it is complete: ``dest`` is never half-written."""
    return dest.with_name(dest.name + ".part")


def same_origin(base: str, url: str) -> bool:
    mine, theirs = urlsplit(base), urlsplit(url)
    return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)


#: Seconds an idle connection is kept for the next request. Below the service's 5 s
#: (``keep_alive_timeout``): a request sent on a connection the service is closing at that very
#: moment fails with "Server disconnected without sending a response" (httpx keeps 5 s too).
KEEPALIVE_EXPIRY = 2.0


def default_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": user_agent()}


# ------------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class Request:
    """One API call; answered with the decoded JSON body (or None when ``json_answer`` is False).

    A non-2xx answer is thrown into the flow as :class:`ApiError`, an unreachable service as
    :class:`ConnectionFailed`. ``best_effort`` calls are shielded from cancellation and their
    failures are thrown in like any other.
    """

    method: str
    path: str
    params: dict[str, str] | None = None
    json: Any = None
    timeout: float | None = None
    json_answer: bool = True
    best_effort: bool = False


@dataclass(frozen=True)
class Upload:
    """PUT a document to a presigned URL, streamed, with progress and receipt check."""

    url: str
    source: DocumentSource
    document_format: str
    progress: ProgressCallback | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.document_format, "Content-Length": str(self.source.size)}


@dataclass(frozen=True)
class MultipartCreate:
    """POST /jobs with the job's JSON and the document in one multipart body; answered with JSON."""

    body: dict[str, Any]
    source: DocumentSource
    document_format: str
    progress: ProgressCallback | None

    @property
    def data(self) -> dict[str, str]:
        return {"job": json.dumps(self.body)}

    @property
    def filename(self) -> str:
        return self.source.name or "document"


@dataclass(frozen=True)
class Download:
    """Stream a document to ``dest`` (through :func:`part_path`); answered with its size."""

    path: str
    dest: Path
    progress: ProgressCallback | None


@dataclass(frozen=True)
class Stream:
    """Read the job's events stream: each time this step is yielded, the answer is the next
    :class:`JobInfo` of the open stream (opened on first use), or None once it has ended or
    failed. The driver keeps it open across :class:`Emit` steps and closes it when the flow
    yields any other step or ends."""

    path: str
    decoder: SseDecoder = field(compare=False)
    read_timeout: float

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.decoder.last_id is not None:
            headers["Last-Event-ID"] = self.decoder.last_id
        return headers


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """A value for the caller of an iterating flow (:meth:`events`); answered with None."""

    value: Any


Step = Request | Upload | MultipartCreate | Download | Stream | Sleep | Emit
T = TypeVar("T")
#: A flow: yields steps, receives their answers, returns the operation's result.
Flow = Generator[Step, Any, T]


# ------------------------------------------------------------------------------------ flows


def request_flow(method: str, path: str, params: dict[str, str] | None, body: Any) -> Flow[Any]:
    return (yield Request(method, path, params=params, json=body))


def health_flow() -> Flow[dict[str, Any]]:
    return dict((yield Request("GET", "/healthz")))


def services_flow(kind: ServiceKind | str) -> Flow[list[ServiceInfo]]:
    data = yield Request("GET", f"{API_PREFIX}/services", params={"kind": str(kind)})
    return [parse_model(ServiceInfo, item) for item in data.get("services", [])]


def service_flow(kind: ServiceKind | str, name: str) -> Flow[ServiceInfo]:
    return parse_model(ServiceInfo, (yield Request("GET", service_path(kind, name))))


def default_path(kind: ServiceKind | str) -> str:
    return f"{API_PREFIX}/me/default/{quote(str(kind), safe='')}"


def default_flow(kind: ServiceKind | str) -> Flow[str | None]:
    """The user's default ``kind`` service on the service, or None when they have set none."""
    return parse_model(DefaultService, (yield Request("GET", default_path(kind)))).service


def set_default_flow(kind: ServiceKind | str, name: str | None) -> Flow[str | None]:
    """Set (or, with None, clear) the user's default ``kind`` service on the service."""
    if name is None:
        return parse_model(DefaultService, (yield Request("DELETE", default_path(kind)))).service
    return parse_model(DefaultService, (yield Request("PUT", default_path(kind), json={"service": name}))).service


def validate_flow(kind: ServiceKind | str, name: str, ticket: Ticket, document_format: str | None) -> Flow[None]:
    body: dict[str, Any] = {"ticket": ticket_dict(ticket)}
    if document_format:
        body["document_format"] = document_format
    yield Request("POST", service_path(kind, name) + "/validate", json=body, json_answer=False)


def create_flow(body: dict[str, Any]) -> Flow[JobInfo]:
    return parse_model(JobInfo, (yield Request("POST", f"{API_PREFIX}/jobs", json=body)), 201)


def submit_flow(
    source: DocumentSource,
    ticket: Ticket,
    service: str | None,
    kind: ServiceKind | str,
    document_format: str | None,
    progress: ProgressCallback | None,
) -> Flow[JobInfo]:
    """Create (upload: true) -> PUT the bytes -> close; a half-made job is canceled.

    The ticket is checked when the job is created, so a refused ticket costs no upload.
    """
    fmt = document_format or detect_format(source.head)
    body = job_create_body(
        service=service,
        kind=kind,
        ticket=ticket_dict(ticket),
        document_name=source.name,
        document_format=fmt,
        document_size=source.size,  # an oversized document is refused before any byte is sent
        upload=True,
    )
    created = yield from create_flow(body)
    try:
        if not created.upload_url:
            raise ApiError(201, "bad-response", "the service gave no upload_url for an upload job")
        yield Upload(created.upload_url, source, body["document_format"], progress)
        return parse_model(JobInfo, (yield Request("POST", job_path(created.id, "close"))))
    except GeneratorExit:
        raise
    except BaseException:
        with contextlib.suppress(Exception):  # best effort, so the job does not linger
            yield Request("POST", job_path(created.id, "cancel"), timeout=5.0, best_effort=True)
        raise


def submit_multipart_flow(
    source: DocumentSource,
    ticket: Ticket,
    service: str | None,
    kind: ServiceKind | str,
    document_format: str | None,
    progress: ProgressCallback | None,
) -> Flow[JobInfo]:
    fmt = document_format or detect_format(source.head)
    body = job_create_body(
        service=service, kind=kind, ticket=ticket_dict(ticket), document_name=source.name, document_format=fmt
    )
    return parse_model(JobInfo, (yield MultipartCreate(body, source, fmt, progress)), 201)


def submit_uri_flow(
    document_uri: str,
    ticket: Ticket,
    service: str | None,
    kind: ServiceKind | str,
    document_format: str | None,
    document_name: str | None,
) -> Flow[JobInfo]:
    body = job_create_body(
        service=service,
        kind=kind,
        ticket=ticket_dict(ticket),
        document_name=document_name,
        document_format=document_format,
        document_uri=document_uri,
    )
    return (yield from create_flow(body))


def scan_flow(ticket: Ticket, service: str | None) -> Flow[JobInfo]:
    return (yield from create_flow(job_create_body(service=service, kind=ServiceKind.SCAN, ticket=ticket_dict(ticket))))


def jobs_flow(all: bool, kind: ServiceKind | str | None, service: str | None) -> Flow[list[JobInfo]]:
    params: dict[str, str] = {"all": "true" if all else "false"}
    if kind is not None:
        params["kind"] = str(kind)
    if service is not None:
        params["service"] = service
    data = yield Request("GET", f"{API_PREFIX}/jobs", params=params)
    return [parse_model(JobInfo, item) for item in data.get("jobs", [])]


def job_flow(job_id: int) -> Flow[JobInfo]:
    return parse_model(JobInfo, (yield Request("GET", job_path(job_id))))


def cancel_flow(job_id: int) -> Flow[JobInfo]:
    return parse_model(JobInfo, (yield Request("POST", job_path(job_id, "cancel"))))


def download_flow(job_id: int, number: int, dest: str | os.PathLike[str],
                  progress: ProgressCallback | None) -> Flow[int]:
    return int((yield Download(job_path(job_id, f"documents/{number}"), Path(dest), progress)))


def events_flow(
    job_id: int,
    poll_interval: float,
    retry_delay: float,
    max_stream_failures: int,
    max_poll_failures: int,
    read_timeout: float,
) -> Flow[None]:
    """Emit each new state of a job, the current one first, ending after a terminal state.

    Follows the events stream and reconnects when it drops; after ``max_stream_failures``
    attempts in a row that deliver nothing it polls instead. Repeats (a reconnect replays the
    current state) are skipped. 401/403/404 end it with an ApiError.
    """
    tracker = ChangeTracker()
    decoder = SseDecoder()
    failures = 0
    while failures < max_stream_failures:
        stream = Stream(job_path(job_id, "events"), decoder, read_timeout)
        delivered = False
        info = yield stream
        while info is not None:
            delivered = True
            if tracker.is_new(info):
                yield Emit(info)
            if info.state.terminal:
                return
            info = yield stream
        failures = 0 if delivered else failures + 1
        if failures < max_stream_failures:
            yield Sleep(reconnect_delay(decoder, retry_delay, failures))
    failures = 0
    while True:
        try:
            info = yield from job_flow(job_id)
        except ApiError as exc:
            if 0 < exc.status < 500 or failures >= max_poll_failures:
                raise
            failures += 1
            yield Sleep(min(poll_interval * failures, 30.0))
            continue
        failures = 0
        if tracker.is_new(info):
            yield Emit(info)
        if info.state.terminal:
            return
        yield Sleep(poll_interval)
