"""The Python client of the Cloud Imaging HTTP API (synchronous, on httpx).

Common case::

    with CloudImagingClient("https://127.0.0.1:8443", token, ca="ca.pem") as client:
        job = client.submit("report.pdf", {"sides": "two-sided-long-edge"})
        final = client.wait(job.id)

Documents go by presigned upload (create, PUT the bytes, close) so large files stream from
disk with progress; multipart and by-reference submission are there too. Every refusal is an
:class:`ApiError` carrying the service's code, message and, for tickets, the IPP attribute
and what is supported. Responses come back as the pydantic models of ``schemas.api``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import ssl
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit

import certifi
import httpx
from pydantic import BaseModel, ValidationError

from client.config import ClientConfig
from client.errors import ApiError, ClientError, ConnectionFailed
from client.formats import SNIFF_SIZE, detect_format
from client.sse import SseDecoder, iter_sse
from schemas.api import API_PREFIX, JobCreate, JobInfo, ServiceInfo
from schemas.enums import ServiceKind
from schemas.tickets import IppModel

__all__ = [
    "ApiError",
    "CloudImagingClient",
    "ConnectionFailed",
    "Document",
    "ProgressCallback",
]

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
    context.load_verify_locations(cafile=os.fspath(ca))
    return context


# ---------------------------------------------------------------------------- helpers shared
# with the async client (client.aio): request bodies, error and model parsing, documents.


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


class _ProgressReader:
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


# ---------------------------------------------------------------------------------- client


class CloudImagingClient:
    """A connection to one Cloud Imaging service as one user (bearer token).

    ``ca`` is a PEM file of the CA that signed the service's certificate; without it the
    public CAs are trusted. ``transport`` lets tests plug in an ``httpx.MockTransport``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        ca: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._ca = ca
        self._transport = transport
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": user_agent(),
            },
            verify=ssl_context(ca),
            timeout=timeout,
            transport=transport,
        )
        self._foreign: httpx.Client | None = None

    @classmethod
    def from_config(cls, config: ClientConfig, **kwargs: Any) -> CloudImagingClient:
        """From the configuration the CLI would use (:func:`client.config.load_config`)."""
        return cls(config.url, config.token, config.ca, **kwargs)

    def close(self) -> None:
        self._http.close()
        if self._foreign is not None:
            self._foreign.close()

    def __enter__(self) -> CloudImagingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, response.reason_phrase)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad-response", f"{path} did not answer JSON") from None

    def _same_origin(self, url: str) -> bool:
        mine, theirs = urlsplit(self.url), urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    def _client_for(self, url: str) -> httpx.Client:
        """The service's own client for its URLs; a token-less one for other hosts."""
        if self._same_origin(url):
            return self._http
        if self._foreign is None:
            self._foreign = httpx.Client(
                headers={"User-Agent": user_agent()},
                verify=ssl_context(self._ca, public=True),
                timeout=self.timeout,
                transport=self._transport,
            )
        return self._foreign

    # ------------------------------------------------------------------ services

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` when the service is up."""
        return dict(self._json("GET", "/healthz"))

    def services(self, kind: ServiceKind | str = ServiceKind.PRINT) -> list[ServiceInfo]:
        """The services of ``kind`` this user may use, with state and capabilities."""
        data = self._json("GET", f"{API_PREFIX}/services", params={"kind": str(kind)})
        return [parse_model(ServiceInfo, item) for item in data.get("services", [])]

    def service(self, kind: ServiceKind | str, name: str) -> ServiceInfo:
        return parse_model(ServiceInfo, self._json("GET", service_path(kind, name)))

    def validate(
        self,
        kind: ServiceKind | str,
        name: str,
        ticket: Ticket,
        document_format: str | None = None,
    ) -> None:
        """Ask the service whether it would accept ``ticket``; raises ApiError (400) if not."""
        body: dict[str, Any] = {"ticket": ticket_dict(ticket)}
        if document_format:
            body["document_format"] = document_format
        self._request("POST", service_path(kind, name) + "/validate", json=body)

    # ------------------------------------------------------------------ submission

    def submit(
        self,
        document: Document,
        ticket: Ticket = None,
        *,
        service: str | None = None,
        kind: ServiceKind | str = ServiceKind.PRINT,
        document_format: str | None = None,
        document_name: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Create a job and stream the document to its presigned URL; returns the pending job.

        The ticket is checked when the job is created, so a refused ticket costs no upload.
        If the upload fails (or is interrupted) the half-made job is canceled.
        """
        source = DocumentSource.open(document, document_name)
        body = job_create_body(
            service=service,
            kind=kind,
            ticket=ticket_dict(ticket),
            document_name=source.name,
            document_format=document_format or detect_format(source.head),
            upload=True,
        )
        created = parse_model(JobInfo, self._json("POST", f"{API_PREFIX}/jobs", json=body), 201)
        try:
            if not created.upload_url:
                raise ApiError(201, "bad-response", "the service gave no upload_url for an upload job")
            self._upload(created.upload_url, source, body["document_format"], progress)
            return parse_model(JobInfo, self._json("POST", job_path(created.id, "close")))
        except BaseException:
            self._abandon(created.id)
            raise

    def _upload(self, url: str, source: DocumentSource, fmt: str, progress: ProgressCallback | None) -> None:
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            sent = 0
            if progress is not None:
                progress(0, source.size)
            for chunk in source.chunks():
                digest.update(chunk)
                sent += len(chunk)
                yield chunk
                if progress is not None:
                    progress(sent, source.size)

        headers = {"Content-Type": fmt, "Content-Length": str(source.size)}
        try:
            response = self._client_for(url).put(url, content=body(), headers=headers)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"upload failed: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, response.reason_phrase)
        check_upload_receipt(response.content, source.size, digest.hexdigest())

    def _abandon(self, job_id: int) -> None:
        """Best effort: cancel a job whose upload did not finish, so it does not linger."""
        with contextlib.suppress(Exception):
            self._http.post(job_path(job_id, "cancel"), timeout=5.0)

    def submit_multipart(
        self,
        document: Document,
        ticket: Ticket = None,
        *,
        service: str | None = None,
        kind: ServiceKind | str = ServiceKind.PRINT,
        document_format: str | None = None,
        document_name: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> JobInfo:
        """Create a job with the document in the same request (simple; for small files)."""
        source = DocumentSource.open(document, document_name)
        fmt = document_format or detect_format(source.head)
        body = job_create_body(
            service=service,
            kind=kind,
            ticket=ticket_dict(ticket),
            document_name=source.name,
            document_format=fmt,
        )
        reader = _ProgressReader(source.reader(), source.size, progress)
        try:
            files = {"document": (source.name or "document", reader, fmt)}
            data = self._json("POST", f"{API_PREFIX}/jobs", data={"job": json.dumps(body)}, files=files)
        finally:
            reader.close()
        return parse_model(JobInfo, data, 201)

    def submit_uri(
        self,
        document_uri: str,
        ticket: Ticket = None,
        *,
        service: str | None = None,
        kind: ServiceKind | str = ServiceKind.PRINT,
        document_format: str | None = None,
        document_name: str | None = None,
    ) -> JobInfo:
        """Create a job whose document the service fetches from an https URL."""
        body = job_create_body(
            service=service,
            kind=kind,
            ticket=ticket_dict(ticket),
            document_name=document_name,
            document_format=document_format,
            document_uri=document_uri,
        )
        return parse_model(JobInfo, self._json("POST", f"{API_PREFIX}/jobs", json=body), 201)

    # ------------------------------------------------------------------ jobs

    def jobs(
        self,
        all: bool = False,
        kind: ServiceKind | str | None = None,
        service: str | None = None,
    ) -> list[JobInfo]:
        """This user's jobs: not-ended ones, or with ``all`` also completed/canceled/aborted."""
        params: dict[str, str] = {"all": "true" if all else "false"}
        if kind is not None:
            params["kind"] = str(kind)
        if service is not None:
            params["service"] = service
        data = self._json("GET", f"{API_PREFIX}/jobs", params=params)
        return [parse_model(JobInfo, item) for item in data.get("jobs", [])]

    def job(self, job_id: int) -> JobInfo:
        """One job, with its history."""
        return parse_model(JobInfo, self._json("GET", job_path(job_id)))

    def cancel(self, job_id: int) -> JobInfo:
        """Cancel a job. A printing job may stay ``processing`` (processing-to-stop-point)
        until the device confirms; an ended job raises ApiError 409."""
        return parse_model(JobInfo, self._json("POST", job_path(job_id, "cancel")))

    # ------------------------------------------------------------------ scan and fax

    def scan(self, ticket: Ticket = None, *, service: str | None = None) -> JobInfo:
        """Create a scan job (no document goes up); the device scans and uploads the output,
        listed in the job's ``documents`` once it has completed."""
        body = job_create_body(service=service, kind=ServiceKind.SCAN, ticket=ticket_dict(ticket))
        return parse_model(JobInfo, self._json("POST", f"{API_PREFIX}/jobs", json=body), 201)

    def download(self, job_id: int, number: int, dest: str | os.PathLike[str],
                 progress: ProgressCallback | None = None) -> int:
        """Stream document ``number`` of a job (e.g. scan output) to ``dest``; returns its size.
        Written to a temporary name first, so ``dest`` is never left half-written."""
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self._http.stream("GET", job_path(job_id, f"documents/{number}")) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response.status_code, response.content, response.reason_phrase)
                total = int(response.headers.get("content-length") or 0)
                done = 0
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        fh.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total or done)
            tmp.replace(dest)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"download failed: {exc or type(exc).__name__}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return done

    # ------------------------------------------------------------------ events

    def events(
        self,
        job_id: int,
        *,
        poll_interval: float = 2.0,
        retry_delay: float = 1.0,
        max_stream_failures: int = 3,
        max_poll_failures: int = 30,
        read_timeout: float = EVENTS_READ_TIMEOUT,
    ) -> Iterator[JobInfo]:
        """Each new state of a job, the current one first, ending after a terminal state.

        Follows the server-sent events stream and reconnects when it drops; after
        ``max_stream_failures`` attempts in a row that deliver nothing it polls
        ``GET /jobs/{id}`` instead. Repeats (a reconnect replays the current state) are
        skipped. 401/403/404 end it with an ApiError.
        """
        tracker = ChangeTracker()
        decoder = SseDecoder()
        failures = 0
        while failures < max_stream_failures:
            delivered = False
            try:
                for info in self._stream_once(job_id, decoder, read_timeout):
                    delivered = True
                    if tracker.is_new(info):
                        yield info
                    if info.state.terminal:
                        return
            except (StreamUnavailable, httpx.TransportError, httpx.StreamError):
                pass
            failures = 0 if delivered else failures + 1
            if failures < max_stream_failures:
                self._sleep(reconnect_delay(decoder, retry_delay, failures))
        yield from self._poll(job_id, tracker, poll_interval, max_poll_failures)

    def _stream_once(self, job_id: int, decoder: SseDecoder, read_timeout: float) -> Iterator[JobInfo]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if decoder.last_id is not None:
            headers["Last-Event-ID"] = decoder.last_id
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        path = job_path(job_id, "events")
        with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code >= 300:
                response.read()
                raise stream_refusal(response.status_code, response.content, response.reason_phrase)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise StreamUnavailable("the events URL did not answer text/event-stream")
            for event in iter_sse(response.iter_lines(), decoder):
                info = event_job(event.event, event.data)
                if info is not None:
                    yield info

    def _poll(self, job_id: int, tracker: ChangeTracker, interval: float, max_failures: int) -> Iterator[JobInfo]:
        failures = 0
        while True:
            try:
                info = self.job(job_id)
            except ApiError as exc:
                if 0 < exc.status < 500 or failures >= max_failures:
                    raise
                failures += 1
                self._sleep(min(interval * failures, 30.0))
                continue
            failures = 0
            if tracker.is_new(info):
                yield info
            if info.state.terminal:
                return
            self._sleep(interval)

    def wait(
        self,
        job_id: int,
        on_change: Callable[[JobInfo], None] | None = None,
        **events_options: Any,
    ) -> JobInfo:
        """Block until the job ends; ``on_change`` sees every new state. Returns the final job."""
        last: JobInfo | None = None
        for info in self.events(job_id, **events_options):
            last = info
            if on_change is not None:
                on_change(info)
        return last if last is not None else self.job(job_id)
