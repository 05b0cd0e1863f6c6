"""The asyncio twin of :class:`client.api.CloudImagingClient`, for applications and services.

Same methods with the same parameters, same errors, same models: what each method does is
written once in :mod:`client._base` as a flow of steps, and this module only carries the
steps out with asyncio I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
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
from client.errors import ConnectionFailed
from client.sse import aiter_sse
from schemas.api import JobInfo, ServiceInfo
from schemas.enums import ServiceKind

__all__ = ["AsyncCloudImagingClient"]


class AsyncCloudImagingClient:
    """``async with AsyncCloudImagingClient(url, token, ca) as client: ...``

    The same constructor as :class:`client.api.CloudImagingClient`, with an asyncio ``sleep``
    and an ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        ca: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._ca = ca
        self._transport = transport
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=base.default_headers(token),
            verify=base.ssl_context(ca),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                keepalive_expiry=base.KEEPALIVE_EXPIRY),
        )
        self._foreign: httpx.AsyncClient | None = None

    @classmethod
    def from_config(cls, config: ClientConfig, **kwargs: Any) -> AsyncCloudImagingClient:
        """From the configuration the CLI would use (:func:`client.config.load_config`)."""
        return cls(config.url, config.token, config.ca, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._foreign is not None:
            await self._foreign.aclose()

    async def __aenter__(self) -> AsyncCloudImagingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ services

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None) -> Any:
        """An API call no method covers (the management routes): ``path`` from the root,
        e.g. ``/api/v1/users``; returns the decoded JSON, raises ApiError for a refusal."""
        return await self._run(base.request_flow(method, path, params, json))

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` when the service is up."""
        return await self._run(base.health_flow())

    async def services(self, kind: ServiceKind | str = ServiceKind.PRINT) -> list[ServiceInfo]:
        """The services of ``kind`` this user may use, with state and capabilities."""
        return await self._run(base.services_flow(kind))

    async def service(self, kind: ServiceKind | str, name: str) -> ServiceInfo:
        return await self._run(base.service_flow(kind, name))

    async def default_service(self, kind: ServiceKind | str = ServiceKind.PRINT) -> str | None:
        """This user's default ``kind`` service on the service (jobs naming none go there), or None."""
        return await self._run(base.default_flow(kind))

    async def set_default_service(self, kind: ServiceKind | str, name: str | None) -> str | None:
        """Make ``name`` this user's default ``kind`` service; None forgets the default."""
        return await self._run(base.set_default_flow(kind, name))

    async def validate(
        self,
        kind: ServiceKind | str,
        name: str,
        ticket: Ticket,
        document_format: str | None = None,
    ) -> None:
        """Ask the service whether it would accept ``ticket``; raises ApiError (400) if not."""
        await self._run(base.validate_flow(kind, name, ticket, document_format))

    # ------------------------------------------------------------------ submission

    async def submit(
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
        source = await asyncio.to_thread(DocumentSource.open, document, document_name)
        return await self._run(base.submit_flow(source, ticket, service, kind, document_format, progress))

    async def submit_multipart(
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
        source = await asyncio.to_thread(DocumentSource.open, document, document_name)
        return await self._run(base.submit_multipart_flow(source, ticket, service, kind, document_format, progress))

    async def submit_uri(
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
        flow = base.submit_uri_flow(document_uri, ticket, service, kind, document_format, document_name)
        return await self._run(flow)

    # ------------------------------------------------------------------ jobs

    async def jobs(
        self,
        all: bool = False,
        kind: ServiceKind | str | None = None,
        service: str | None = None,
    ) -> list[JobInfo]:
        """This user's jobs: not-ended ones, or with ``all`` also completed/canceled/aborted."""
        return await self._run(base.jobs_flow(all, kind, service))

    async def job(self, job_id: int) -> JobInfo:
        """One job, with its history."""
        return await self._run(base.job_flow(job_id))

    async def cancel(self, job_id: int) -> JobInfo:
        """Cancel a job. A printing job may stay ``processing`` (processing-to-stop-point)
        until the device confirms; an ended job raises ApiError 409."""
        return await self._run(base.cancel_flow(job_id))

    # ------------------------------------------------------------------ scan and fax

    async def scan(self, ticket: Ticket = None, *, service: str | None = None) -> JobInfo:
        """Create a scan job (no document goes up); the device scans and uploads the output,
        listed in the job's ``documents`` once it has completed."""
        return await self._run(base.scan_flow(ticket, service))

    async def download(
        self,
        job_id: int,
        number: int,
        dest: str | os.PathLike[str],
        progress: ProgressCallback | None = None,
    ) -> int:
        """Stream document ``number`` of a job (e.g. scan output) to ``dest``; returns its size.
        Written to a temporary name first, so ``dest`` is never left half-written."""
        return await self._run(base.download_flow(job_id, number, dest, progress))

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
    ) -> AsyncIterator[JobInfo]:
        """Each new state of a job, the current one first, ending after a terminal state.

        Follows the server-sent events stream and reconnects when it drops; after
        ``max_stream_failures`` attempts in a row that deliver nothing it polls
        ``GET /jobs/{id}`` instead. Repeats (a reconnect replays the current state) are
        skipped. 401/403/404 end it with an ApiError.
        """
        flow = base.events_flow(job_id, poll_interval, retry_delay, max_stream_failures, max_poll_failures,
                                read_timeout)
        return self._iterate(flow)

    async def wait(
        self,
        job_id: int,
        on_change: Callable[[JobInfo], Any] | None = None,
        **events_options: Any,
    ) -> JobInfo:
        """Until the job ends; ``on_change`` (a plain or an async function) sees every new
        state. Returns the final job."""
        last: JobInfo | None = None
        async for info in self.events(job_id, **events_options):
            last = info
            if on_change is not None:
                result = on_change(info)
                if inspect.isawaitable(result):
                    await result
        return last if last is not None else await self.job(job_id)

    # ------------------------------------------------------------------ the driver

    async def _run(self, flow: Flow[base.T]) -> base.T:
        """Carry out a flow that emits nothing; returns its result."""
        result: list[Any] = []
        async with contextlib.aclosing(self._drive(flow, result)) as driver:
            async for _ in driver:
                raise RuntimeError("a flow emitted a value where none was expected")
        return result[0]

    async def _iterate(self, flow: Flow[None]) -> AsyncIterator[Any]:
        """Carry out a flow, yielding what it emits."""
        async with contextlib.aclosing(self._drive(flow, [])) as driver:
            async for value in driver:
                yield value

    async def _drive(self, flow: Flow[Any], result: list[Any]) -> AsyncGenerator[Any, None]:
        """Answer each step of ``flow``; yield what it emits, append what it returns to ``result``."""
        stream: tuple[base.Stream, AsyncGenerator[JobInfo, None]] | None = None
        answer: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(answer)
                except StopIteration as stop:
                    result.append(stop.value)
                    return
                answer, error = None, None
                if stream is not None and stream[0] is not step and not isinstance(step, base.Emit):
                    await stream[1].aclose()
                    stream = None
                if isinstance(step, base.Emit):
                    yield step.value
                    continue
                if isinstance(step, base.Stream):
                    if stream is None:
                        stream = (step, self._stream(step))
                    answer = await self._next_event(stream[1])
                    if answer is None:
                        stream = None
                    continue
                try:
                    answer = await self._step(step)
                except BaseException as exc:
                    error = exc
        finally:
            if stream is not None:
                await stream[1].aclose()
            flow.close()

    async def _step(self, step: base.Step) -> Any:
        if isinstance(step, base.Request):
            if step.best_effort:
                return await asyncio.shield(self._request(step))
            return await self._request(step)
        if isinstance(step, base.Upload):
            return await self._upload(step)
        if isinstance(step, base.MultipartCreate):
            return await self._multipart(step)
        if isinstance(step, base.Download):
            return await self._download(step)
        if isinstance(step, base.Sleep):
            return await self._sleep(step.seconds)
        raise TypeError(f"unknown step {step!r}")

    # ------------------------------------------------------------------ the I/O of each step

    async def _request(self, step: base.Request) -> Any:
        timeout = step.timeout if step.timeout is not None else httpx.USE_CLIENT_DEFAULT
        try:
            response = await self._http.request(step.method, step.path, params=step.params, json=step.json,
                                                timeout=timeout)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        return self._answer(response, step.path, step.json_answer)

    @staticmethod
    def _answer(response: httpx.Response, what: str, json_answer: bool = True) -> Any:
        return base.decode_answer(response.status_code, response.content, response.reason_phrase, what, json_answer)

    def _client_for(self, url: str) -> httpx.AsyncClient:
        """The service's own client for its URLs; a token-less one for other hosts."""
        if base.same_origin(self.url, url):
            return self._http
        if self._foreign is None:
            self._foreign = httpx.AsyncClient(
                headers={"User-Agent": base.user_agent()},
                verify=base.ssl_context(self._ca, public=True),
                timeout=self.timeout,
                transport=self._transport,
            )
        return self._foreign

    async def _upload(self, step: base.Upload) -> None:
        meter = base.UploadMeter(step.source.size, step.progress)

        async def body() -> AsyncIterator[bytes]:
            chunks = step.source.chunks()
            try:
                while chunk := await asyncio.to_thread(next, chunks, b""):
                    yield chunk
                    meter.count(chunk)
            finally:
                chunks.close()

        try:
            response = await self._client_for(step.url).put(step.url, content=body(), headers=step.headers)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"upload failed: {exc or type(exc).__name__}") from None
        self._answer(response, "upload", json_answer=False)
        meter.check(response.content)

    async def _multipart(self, step: base.MultipartCreate) -> Any:
        content = step.source.data
        if content is None:
            assert step.source.path is not None
            content = await asyncio.to_thread(step.source.path.read_bytes)
        reader = base.ProgressReader(io.BytesIO(content), step.source.size, step.progress)
        try:
            files = {"document": (step.filename, reader, step.document_format)}
            response = await self._http.post(f"{base.API_PREFIX}/jobs", data=step.data, files=files)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        return self._answer(response, "/jobs")

    async def _download(self, step: base.Download) -> int:
        tmp = base.part_path(step.dest)
        done = 0
        try:
            async with self._http.stream("GET", step.path) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._answer(response, step.path)
                total = int(response.headers.get("content-length") or 0)
                with tmp.open("wb") as fh:
                    async for chunk in response.aiter_bytes(base.CHUNK_SIZE):
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

    async def _stream(self, step: base.Stream) -> AsyncGenerator[JobInfo, None]:
        timeout = httpx.Timeout(self.timeout, read=step.read_timeout)
        async with self._http.stream("GET", step.path, headers=step.headers, timeout=timeout) as response:
            if response.status_code >= 300:
                await response.aread()
                raise base.stream_refusal(response.status_code, response.content, response.reason_phrase)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise base.StreamUnavailable("the events URL did not answer text/event-stream")
            async for event in aiter_sse(response.aiter_lines(), step.decoder):
                info = base.event_job(event.event, event.data)
                if info is not None:
                    yield info

    @staticmethod
    async def _next_event(events: AsyncGenerator[JobInfo, None]) -> JobInfo | None:
        """The stream's next job state; None once it ended or dropped (the flow reconnects)."""
        with contextlib.suppress(base.StreamUnavailable, httpx.TransportError, httpx.StreamError):
            return await anext(events, None)
        return None
