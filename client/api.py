"""The Python client of the Cloud Imaging HTTP API (synchronous, on httpx).

Common case::

    with CloudImagingClient("https://127.0.0.1:8443", token, ca="ca.pem") as client:
        job = client.submit("report.pdf", {"sides": "two-sided-long-edge"})
        final = client.wait(job.id)

Documents go by presigned upload (create, PUT the bytes, close) so large files stream from
disk with progress; multipart and by-reference submission are there too. Every refusal is an
:class:`ApiError` carrying the service's code, message and, for tickets, the IPP attribute
and what is supported. Responses come back as the pydantic models of ``schemas.api``.

What each method does is written once in :mod:`client._base` as a flow of steps; this
module only carries the steps out with blocking I/O.
"""

from __future__ import annotations

import contextlib
import os
import time
import typing
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx

from client import _base as base
from client._base import (
    DEFAULT_TIMEOUT,
    EVENTS_READ_TIMEOUT,
    Document,
    DocumentSource,
    Flow,
    ProgressCallback,
    Ticket,
)
from client.config import ClientConfig
from client.errors import ApiError, ConnectionFailed
from client.sse import iter_sse
from schemas.api import JobInfo, ServiceInfo
from schemas.enums import ServiceKind

__all__ = [
    "ApiError",
    "CloudImagingClient",
    "ConnectionFailed",
    "Document",
    "ProgressCallback",
]


class CloudImagingClient:
    """A connection to one Cloud Imaging service as one user (bearer token).

    ``ca`` is a PEM file of the CA that signed the service's certificate; without it the
    public CAs are trusted. ``transport`` lets an application plug in its own httpx transport.
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
            headers=base.default_headers(token),
            verify=base.ssl_context(ca),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                keepalive_expiry=base.KEEPALIVE_EXPIRY),
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

    # ------------------------------------------------------------------ services

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None) -> Any:
        """An API call no method covers (the management routes): ``path`` from the root,
        e.g. ``/api/v1/users``; returns the decoded JSON, raises ApiError for a refusal."""
        return self._run(base.request_flow(method, path, params, json))

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` when the service is up."""
        return self._run(base.health_flow())

    def services(self, kind: ServiceKind | str = ServiceKind.PRINT) -> list[ServiceInfo]:
        """The services of ``kind`` this user may use, with state and capabilities."""
        return self._run(base.services_flow(kind))

    def service(self, kind: ServiceKind | str, name: str) -> ServiceInfo:
        return self._run(base.service_flow(kind, name))

    def default_service(self, kind: ServiceKind | str = ServiceKind.PRINT) -> str | None:
        """This user's default ``kind`` service on the service (jobs naming none go there), or None."""
        return self._run(base.default_flow(kind))

    def set_default_service(self, kind: ServiceKind | str, name: str | None) -> str | None:
        """Make ``name`` this user's default ``kind`` service; None forgets the default."""
        return self._run(base.set_default_flow(kind, name))

    def validate(
        self,
        kind: ServiceKind | str,
        name: str,
        ticket: Ticket,
        document_format: str | None = None,
    ) -> None:
        """Ask the service whether it would accept ``ticket``; raises ApiError (400) if not."""
        self._run(base.validate_flow(kind, name, ticket, document_format))

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
        return self._run(base.submit_flow(source, ticket, service, kind, document_format, progress))

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
        return self._run(base.submit_multipart_flow(source, ticket, service, kind, document_format, progress))

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
        return self._run(base.submit_uri_flow(document_uri, ticket, service, kind, document_format, document_name))

    # ------------------------------------------------------------------ jobs

    def jobs(
        self,
        all: bool = False,
        kind: ServiceKind | str | None = None,
        service: str | None = None,
    ) -> list[JobInfo]:
        """This user's jobs: not-ended ones, or with ``all`` also completed/canceled/aborted."""
        return self._run(base.jobs_flow(all, kind, service))

    def job(self, job_id: int) -> JobInfo:
        """One job, with its history."""
        return self._run(base.job_flow(job_id))

    def cancel(self, job_id: int) -> JobInfo:
        """Cancel a job. A printing job may stay ``processing`` (processing-to-stop-point)
        until the device confirms; an ended job raises ApiError 409."""
        return self._run(base.cancel_flow(job_id))

    # ------------------------------------------------------------------ scan and fax

    def scan(self, ticket: Ticket = None, *, service: str | None = None) -> JobInfo:
        """Create a scan job (no document goes up); the device scans and uploads the output,
        listed in the job's ``documents`` once it has completed."""
        return self._run(base.scan_flow(ticket, service))

    def download(
        self,
        job_id: int,
        number: int,
        dest: str | os.PathLike[str],
        progress: ProgressCallback | None = None,
    ) -> int:
        """Stream document ``number`` of a job (e.g. scan output) to ``dest``; returns its size.
        Written to a temporary name first, so ``dest`` is never left half-written."""
        return self._run(base.download_flow(job_id, number, dest, progress))

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
        flow = base.events_flow(job_id, poll_interval, retry_delay, max_stream_failures, max_poll_failures,
                                read_timeout)
        return self._iterate(flow)

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

    # ------------------------------------------------------------------ the driver

    def _run(self, flow: Flow[base.T]) -> base.T:
        """Carry out a flow that emits nothing; returns its result."""
        driver = self._drive(flow)
        try:
            next(driver)
        except StopIteration as stop:
            return typing.cast("base.T", stop.value)
        driver.close()
        raise RuntimeError("a flow emitted a value where none was expected")

    def _iterate(self, flow: Flow[None]) -> Iterator[Any]:
        """Carry out a flow, yielding what it emits."""
        return self._drive(flow)

    def _drive(self, flow: Flow[Any]) -> Generator[Any, None, Any]:
        """Answer each step of ``flow``; yield what it emits, return what it returns."""
        stream: tuple[base.Stream, Generator[JobInfo, None, None]] | None = None
        answer: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(answer)
                except StopIteration as stop:
                    return stop.value
                answer, error = None, None
                if stream is not None and stream[0] is not step and not isinstance(step, base.Emit):
                    stream[1].close()
                    stream = None
                if isinstance(step, base.Emit):
                    yield step.value
                    continue
                if isinstance(step, base.Stream):
                    if stream is None:
                        stream = (step, self._stream(step))
                    answer = self._next_event(stream[1])
                    if answer is None:
                        stream = None
                    continue
                try:
                    answer = self._step(step)
                except BaseException as exc:
                    error = exc
        finally:
            if stream is not None:
                stream[1].close()
            flow.close()

    def _step(self, step: base.Step) -> Any:
        if isinstance(step, base.Request):
            return self._request(step)
        if isinstance(step, base.Upload):
            return self._upload(step)
        if isinstance(step, base.MultipartCreate):
            return self._multipart(step)
        if isinstance(step, base.Download):
            return self._download(step)
        if isinstance(step, base.Sleep):
            return self._sleep(step.seconds)
        raise TypeError(f"unknown step {step!r}")

    # ------------------------------------------------------------------ the I/O of each step

    def _request(self, step: base.Request) -> Any:
        timeout = step.timeout if step.timeout is not None else httpx.USE_CLIENT_DEFAULT
        try:
            response = self._http.request(step.method, step.path, params=step.params, json=step.json,
                                          timeout=timeout)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        return self._answer(response, step.path, step.json_answer)

    @staticmethod
    def _answer(response: httpx.Response, what: str, json_answer: bool = True) -> Any:
        return base.decode_answer(response.status_code, response.content, response.reason_phrase, what, json_answer)

    def _client_for(self, url: str) -> httpx.Client:
        """The service's own client for its URLs; a token-less one for other hosts."""
        if base.same_origin(self.url, url):
            return self._http
        if self._foreign is None:
            self._foreign = httpx.Client(
                headers={"User-Agent": base.user_agent()},
                verify=base.ssl_context(self._ca, public=True),
                timeout=self.timeout,
                transport=self._transport,
            )
        return self._foreign

    def _upload(self, step: base.Upload) -> None:
        meter = base.UploadMeter(step.source.size, step.progress)

        def body() -> Iterator[bytes]:
            for chunk in step.source.chunks():
                yield chunk
                meter.count(chunk)

        try:
            response = self._client_for(step.url).put(step.url, content=body(), headers=step.headers)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"upload failed: {exc or type(exc).__name__}") from None
        self._answer(response, "upload", json_answer=False)
        meter.check(response.content)

    def _multipart(self, step: base.MultipartCreate) -> Any:
        reader = base.ProgressReader(step.source.reader(), step.source.size, step.progress)
        try:
            files = {"document": (step.filename, reader, step.document_format)}
            response = self._http.post(f"{base.API_PREFIX}/jobs", data=step.data, files=files)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        finally:
            reader.close()
        return self._answer(response, "/jobs")

    def _download(self, step: base.Download) -> int:
        tmp = base.part_path(step.dest)
        done = 0
        try:
            with self._http.stream("GET", step.path) as response:
                if response.status_code >= 400:
                    response.read()
                    self._answer(response, step.path)
                total = int(response.headers.get("content-length") or 0)
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes(base.CHUNK_SIZE):
                        fh.write(chunk)
                        done += len(chunk)
                        if step.progress is not None:
                            step.progress(done, total or done)
            tmp.replace(step.dest)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"download failed: {exc or type(exc).__name__}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return done

    def _stream(self, step: base.Stream) -> Generator[JobInfo, None, None]:
        timeout = httpx.Timeout(self.timeout, read=step.read_timeout)
        with self._http.stream("GET", step.path, headers=step.headers, timeout=timeout) as response:
            if response.status_code >= 300:
                response.read()
                raise base.stream_refusal(response.status_code, response.content, response.reason_phrase)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise base.StreamUnavailable("the events URL did not answer text/event-stream")
            for event in iter_sse(response.iter_lines(), step.decoder):
                info = base.event_job(event.event, event.data)
                if info is not None:
                    yield info

    @staticmethod
    def _next_event(events: Iterator[JobInfo]) -> JobInfo | None:
        """The stream's next job state; None once it ended or dropped (the flow reconnects)."""
        with contextlib.suppress(base.StreamUnavailable, httpx.TransportError, httpx.StreamError):
            return next(events, None)
        return None
