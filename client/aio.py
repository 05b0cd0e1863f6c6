"""The asyncio twin of :class:`client.api.CloudImagingClient`, for applications and services.

Same methods, same errors, same models; request bodies, error parsing and the SSE decoder
are shared with the sync client so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from client.api import (
    CHUNK_SIZE,
    DEFAULT_TIMEOUT,
    EVENTS_READ_TIMEOUT,
    ChangeTracker,
    Document,
    DocumentSource,
    ProgressCallback,
    StreamUnavailable,
    Ticket,
    check_upload_receipt,
    error_from_response,
    event_job,
    job_create_body,
    job_path,
    parse_model,
    reconnect_delay,
    service_path,
    ssl_context,
    stream_refusal,
    ticket_dict,
    user_agent,
)
from client.config import ClientConfig
from client.errors import ApiError, ConnectionFailed
from client.formats import detect_format
from client.sse import SseDecoder, aiter_sse
from schemas.api import API_PREFIX, JobInfo, ServiceInfo
from schemas.enums import ServiceKind

__all__ = ["AsyncCloudImagingClient"]


class AsyncCloudImagingClient:
    """``async with AsyncCloudImagingClient(url, token, ca) as client: ...``"""

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
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": user_agent(),
            },
            verify=ssl_context(ca),
            timeout=timeout,
            transport=transport,
        )
        self._foreign: httpx.AsyncClient | None = None

    @classmethod
    def from_config(cls, config: ClientConfig, **kwargs: Any) -> AsyncCloudImagingClient:
        return cls(config.url, config.token, config.ca, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._foreign is not None:
            await self._foreign.aclose()

    async def __aenter__(self) -> AsyncCloudImagingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, response.reason_phrase)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad-response", f"{path} did not answer JSON") from None

    def _client_for(self, url: str) -> httpx.AsyncClient:
        mine, theirs = urlsplit(self.url), urlsplit(url)
        if (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc):
            return self._http
        if self._foreign is None:
            self._foreign = httpx.AsyncClient(
                headers={"User-Agent": user_agent()},
                verify=ssl_context(self._ca, public=True),
                timeout=self.timeout,
                transport=self._transport,
            )
        return self._foreign

    # ------------------------------------------------------------------ services

    async def health(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/healthz"))

    async def services(self, kind: ServiceKind | str = ServiceKind.PRINT) -> list[ServiceInfo]:
        data = await self._json("GET", f"{API_PREFIX}/services", params={"kind": str(kind)})
        return [parse_model(ServiceInfo, item) for item in data.get("services", [])]

    async def service(self, kind: ServiceKind | str, name: str) -> ServiceInfo:
        return parse_model(ServiceInfo, await self._json("GET", service_path(kind, name)))

    async def validate(
        self, kind: ServiceKind | str, name: str, ticket: Ticket, document_format: str | None = None
    ) -> None:
        body: dict[str, Any] = {"ticket": ticket_dict(ticket)}
        if document_format:
            body["document_format"] = document_format
        await self._request("POST", service_path(kind, name) + "/validate", json=body)

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
        """Create, upload to the presigned URL, close; cancels the job if the upload fails."""
        source = await asyncio.to_thread(DocumentSource.open, document, document_name)
        body = job_create_body(
            service=service,
            kind=kind,
            ticket=ticket_dict(ticket),
            document_name=source.name,
            document_format=document_format or detect_format(source.head),
            upload=True,
        )
        created = parse_model(JobInfo, await self._json("POST", f"{API_PREFIX}/jobs", json=body), 201)
        try:
            if not created.upload_url:
                raise ApiError(201, "bad-response", "the service gave no upload_url for an upload job")
            await self._upload(created.upload_url, source, body["document_format"], progress)
            return parse_model(JobInfo, await self._json("POST", job_path(created.id, "close")))
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._http.post(job_path(created.id, "cancel"), timeout=5.0))
            raise

    async def _upload(self, url: str, source: DocumentSource, fmt: str, progress: ProgressCallback | None) -> None:
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            if progress is not None:
                progress(0, source.size)
            chunks = source.chunks(CHUNK_SIZE)
            try:
                while chunk := await asyncio.to_thread(next, chunks, b""):
                    digest.update(chunk)
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent, source.size)
            finally:
                chunks.close()

        headers = {"Content-Type": fmt, "Content-Length": str(source.size)}
        try:
            response = await self._client_for(url).put(url, content=body(), headers=headers)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"upload failed: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, response.reason_phrase)
        check_upload_receipt(response.content, source.size, digest.hexdigest())

    async def submit_multipart(
        self,
        document: Document,
        ticket: Ticket = None,
        *,
        service: str | None = None,
        kind: ServiceKind | str = ServiceKind.PRINT,
        document_format: str | None = None,
        document_name: str | None = None,
    ) -> JobInfo:
        """Job and document in one request; the document is read into memory (small files)."""
        source = await asyncio.to_thread(DocumentSource.open, document, document_name)
        fmt = document_format or detect_format(source.head)
        body = job_create_body(
            service=service,
            kind=kind,
            ticket=ticket_dict(ticket),
            document_name=source.name,
            document_format=fmt,
        )
        content = source.data
        if content is None:
            assert source.path is not None
            content = await asyncio.to_thread(source.path.read_bytes)
        files = {"document": (source.name or "document", content, fmt)}
        data = await self._json("POST", f"{API_PREFIX}/jobs", data={"job": json.dumps(body)}, files=files)
        return parse_model(JobInfo, data, 201)

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
        body = job_create_body(
            service=service,
            kind=kind,
            ticket=ticket_dict(ticket),
            document_name=document_name,
            document_format=document_format,
            document_uri=document_uri,
        )
        return parse_model(JobInfo, await self._json("POST", f"{API_PREFIX}/jobs", json=body), 201)

    # ------------------------------------------------------------------ jobs

    async def jobs(
        self, all: bool = False, kind: ServiceKind | str | None = None, service: str | None = None
    ) -> list[JobInfo]:
        params: dict[str, str] = {"all": "true" if all else "false"}
        if kind is not None:
            params["kind"] = str(kind)
        if service is not None:
            params["service"] = service
        data = await self._json("GET", f"{API_PREFIX}/jobs", params=params)
        return [parse_model(JobInfo, item) for item in data.get("jobs", [])]

    async def job(self, job_id: int) -> JobInfo:
        return parse_model(JobInfo, await self._json("GET", job_path(job_id)))

    async def cancel(self, job_id: int) -> JobInfo:
        return parse_model(JobInfo, await self._json("POST", job_path(job_id, "cancel")))

    # ------------------------------------------------------------------ events

    async def events(
        self,
        job_id: int,
        *,
        poll_interval: float = 2.0,
        retry_delay: float = 1.0,
        max_stream_failures: int = 3,
        max_poll_failures: int = 30,
        read_timeout: float = EVENTS_READ_TIMEOUT,
    ) -> AsyncIterator[JobInfo]:
        """As :meth:`client.api.CloudImagingClient.events`: stream, reconnect, else poll."""
        tracker = ChangeTracker()
        decoder = SseDecoder()
        failures = 0
        while failures < max_stream_failures:
            delivered = False
            try:
                async for info in self._stream_once(job_id, decoder, read_timeout):
                    delivered = True
                    if tracker.is_new(info):
                        yield info
                    if info.state.terminal:
                        return
            except (StreamUnavailable, httpx.TransportError):
                pass
            failures = 0 if delivered else failures + 1
            if failures < max_stream_failures:
                await self._sleep(reconnect_delay(decoder, retry_delay, failures))
        poll_failures = 0
        while True:
            try:
                info = await self.job(job_id)
            except ApiError as exc:
                if 0 < exc.status < 500 or poll_failures >= max_poll_failures:
                    raise
                poll_failures += 1
                await self._sleep(min(poll_interval * poll_failures, 30.0))
                continue
            poll_failures = 0
            if tracker.is_new(info):
                yield info
            if info.state.terminal:
                return
            await self._sleep(poll_interval)

    async def _stream_once(self, job_id: int, decoder: SseDecoder, read_timeout: float) -> AsyncIterator[JobInfo]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if decoder.last_id is not None:
            headers["Last-Event-ID"] = decoder.last_id
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        path = job_path(job_id, "events")
        async with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code >= 300:
                await response.aread()
                raise stream_refusal(response.status_code, response.content, response.reason_phrase)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise StreamUnavailable("the events URL did not answer text/event-stream")
            async for event in aiter_sse(response.aiter_lines(), decoder):
                info = event_job(event.event, event.data)
                if info is not None:
                    yield info

    async def wait(
        self,
        job_id: int,
        on_change: Callable[[JobInfo], Any] | None = None,
        **events_options: Any,
    ) -> JobInfo:
        """Until the job ends; ``on_change`` may be a plain or an async function."""
        last: JobInfo | None = None
        async for info in self.events(job_id, **events_options):
            last = info
            if on_change is not None:
                result = on_change(info)
                if asyncio.iscoroutine(result):
                    await result
        return last if last is not None else await self.job(job_id)
