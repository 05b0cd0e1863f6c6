"""The sync and async clients against the real service (broker, service and a Manager with
simulated printers, tests/support/live.py), plus the I/O-free core on its own."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client import _base as base
from client.aio import AsyncCloudImagingClient
from client.api import CloudImagingClient
from client.errors import ApiError, ClientError, ConnectionFailed, describe_error
from client.sse import SseDecoder
from schemas.api import JobInfo, ServiceInfo
from schemas.enums import JobState
from tests.support.apidicts import job_dict
from tests.support.live import LiveStack
from tests.support.relay import Relay

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def relay(live: LiveStack) -> Iterator[Relay]:
    """A relay in front of the service, to cut or refuse connections."""
    relay = Relay(live.port).start()
    yield relay
    relay.stop()


def lines(pages: int) -> bytes:
    """A text document of ``pages`` pages (60 lines each, as the service counts them)."""
    return b"".join(b"line %d\n" % n for n in range(60 * pages))


def versions(jobs: list[JobInfo]) -> list[int]:
    return [j.version for j in jobs]


# ---------------------------------------------------------------------------- services


def test_services_and_one_service(live: LiveStack) -> None:
    with live.client() as client:
        services = client.services()
        assert {"office", "slow", "rejecting", "parked"} <= {s.name for s in services}
        assert all(isinstance(s, ServiceInfo) for s in services)
        assert [s.name for s in client.services("scan")] == ["lab-scanner"]
        assert client.service("print", "office").make_and_model == "Simulated office"
        with pytest.raises(ApiError) as info:
            client.service("print", "nope")
    assert info.value.status == 404


def test_validate_refusal_names_attribute_and_supported(live: LiveStack) -> None:
    with live.client() as client:
        client.validate("print", "office", {"sides": "one-sided"}, "application/pdf")
        with pytest.raises(ApiError) as info:
            client.validate("print", "office", {"sides": "two-sided-short-edge"})
    err = info.value
    assert (err.status, err.attribute, err.supported) == (400, "sides", ["one-sided", "two-sided-long-edge"])
    assert "sides" in str(err) and "two-sided-long-edge" in str(err)


def test_health(live: LiveStack) -> None:
    with live.client() as client:
        assert client.health()["status"] == "ok"


# ---------------------------------------------------------------------------- submission


def test_submit_uploads_to_the_presigned_url_then_closes(live: LiveStack, user_token: str, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    with live.client(token=user_token) as client:
        job = client.submit(b"hello printer\n", {"copies": 2}, service="parked",
                            progress=lambda s, t: progress.append((s, t)))
        assert isinstance(job, JobInfo)
        assert job.state == JobState.PENDING and job.ticket["copies"] == 2
        document = job.documents[0]
        assert (document.format, document.size) == ("text/plain", 14)
        assert document.sha256 == hashlib.sha256(b"hello printer\n").hexdigest()
        assert client.download(job.id, 1, tmp_path / "back.txt") == 14
    assert (tmp_path / "back.txt").read_bytes() == b"hello printer\n"
    assert not (tmp_path / "back.txt.part").exists()
    assert progress[0] == (0, 14) and progress[-1] == (14, 14)


def test_submit_streams_a_file_in_chunks_with_progress(live: LiveStack, user_token: str, tmp_path: Path) -> None:
    data = b"%PDF-1.7\n" + bytes(range(256)) * (3 * base.CHUNK_SIZE // 256)
    path = tmp_path / "big report.pdf"
    path.write_bytes(data)
    progress: list[int] = []
    with live.client(token=user_token) as client:
        job = client.submit(path, service="parked", progress=lambda sent, _total: progress.append(sent))
        client.download(job.id, 1, tmp_path / "back.pdf")
    document = job.documents[0]
    assert (document.name, document.format, document.size) == ("big report.pdf", "application/pdf", len(data))
    assert job.service == "parked"
    assert (tmp_path / "back.pdf").read_bytes() == data
    assert progress == sorted(progress) and progress[-1] == len(data) and len(progress) >= 4


def test_format_override(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        job = client.submit(b"%PDF-1.4", service="parked", document_format="Text/Plain")
    assert job.documents[0].format == "text/plain"


class RecordingTransport(httpx.HTTPTransport):
    """The real transport, noting each request it sends."""

    def __init__(self, ca: Path) -> None:
        super().__init__(verify=base.ssl_context(ca))
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)


def test_token_is_not_sent_to_an_object_store_on_another_host(live: LiveStack, relay: Relay, user_token: str) -> None:
    # Through the relay the service is another origin than the upload URL it hands out.
    transport = RecordingTransport(live.ca)
    with live.client(url=relay.url, token=user_token, transport=transport) as client:
        job = client.submit(b"x", service="parked")
    put = [r for r in transport.sent if r.method == "PUT"]
    assert len(put) == 1 and put[0].url.port == live.port
    assert "authorization" not in put[0].headers
    assert put[0].headers["content-length"] == "1" and "transfer-encoding" not in put[0].headers
    assert all(r.headers["authorization"] == f"Bearer {user_token}" for r in transport.sent if r.method == "POST")
    assert job.documents[0].size == 1


def test_refused_ticket_costs_no_upload(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        with pytest.raises(ApiError) as info:
            client.submit(b"x", {"media": "iso_a3_297x420mm"}, service="office")
        assert client.jobs(all=True) == []
    assert info.value.attribute == "media"


def test_interrupted_upload_cancels_the_half_made_job(live: LiveStack, user_token: str) -> None:
    def interrupt(sent: int, _total: int) -> None:
        if sent:
            raise KeyboardInterrupt

    with live.client(token=user_token) as client:
        with pytest.raises(KeyboardInterrupt):
            client.submit(b"data", service="parked", progress=interrupt)
        [job] = client.jobs(all=True)
    assert job.state == JobState.CANCELED


def test_a_failed_upload_cancels_the_half_made_job() -> None:
    """The submit flow on its own: whatever fails after the create, the job is canceled."""
    source = base.DocumentSource.open(b"data")
    flow = base.submit_flow(source, None, "office", "print", None, None)
    create = next(flow)
    assert isinstance(create, base.Request) and create.json["upload"] is True
    created = job_dict(5, state="pending-held", upload_url="https://svc.test/objects/jobs/5/1?sig=s")
    upload = flow.send(created)
    assert isinstance(upload, base.Upload) and upload.headers["Content-Length"] == "4"
    cancel = flow.throw(ApiError(413, "too-large", "document exceeds 1 MiB"))
    assert (cancel.method, cancel.path, cancel.best_effort) == ("POST", "/api/v1/jobs/5/cancel", True)
    with pytest.raises(ApiError, match="exceeds"):
        flow.throw(ApiError(409, "job-ended", "already canceled"))  # the cancel's own failure is ignored


def test_an_upload_receipt_that_does_not_match_is_an_error() -> None:
    meter = base.UploadMeter(4, None)
    meter.count(b"data")
    meter.check(b'{"size": 4, "sha256": "' + hashlib.sha256(b"data").hexdigest().encode() + b'"}')
    meter.check(b"")  # another object store may answer nothing
    for receipt in (b'{"size": 5}', b'{"size": 4, "sha256": "' + b"0" * 64 + b'"}'):
        with pytest.raises(ApiError) as info:
            meter.check(receipt)
        assert info.value.code == "upload-corrupted"


def test_missing_file_fails_before_any_request(live: LiveStack, user_token: str, tmp_path: Path) -> None:
    with live.client(token=user_token) as client:
        with pytest.raises(FileNotFoundError):
            client.submit(tmp_path / "absent.pdf")
        assert client.jobs(all=True) == []


def test_bad_document_name_is_caught_locally(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        with pytest.raises(ClientError, match="document_name"):
            client.submit(b"x", document_name="a\x00b")
        assert client.jobs(all=True) == []


def test_multipart(live: LiveStack, user_token: str, tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000)
    seen: list[int] = []
    with live.client(token=user_token) as client:
        job = client.submit_multipart(path, {"copies": 1}, service="parked",
                                      progress=lambda sent, _t: seen.append(sent))
        client.download(job.id, 1, tmp_path / "back.png")
    assert (tmp_path / "back.png").read_bytes() == path.read_bytes()
    assert job.documents[0].format == "image/png"
    assert seen[-1] == 5008


def test_submit_uri(live: LiveStack, user_token: str) -> None:
    """The service fetches the document itself, and refuses URLs into its own network."""
    with live.client(token=user_token) as client:
        with pytest.raises(ApiError) as info:
            client.submit_uri("https://127.0.0.1:1/a.pdf", {"copies": 1}, service="parked",
                              document_format="application/pdf")
        assert client.jobs() == []  # nothing is left waiting for a document
    assert info.value.status == 400 and "document-uri" in str(info.value)
    assert "non-public" in str(info.value)


# ---------------------------------------------------------------------------- jobs and errors


def test_jobs_job_cancel(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        done = client.submit(b"%PDF-1.4 done", service="office")
        assert client.wait(done.id).state == JobState.COMPLETED
        queued = client.submit(b"waiting", service="parked")
        assert [j.id for j in client.jobs()] == [queued.id]
        assert {j.id for j in client.jobs(all=True)} == {queued.id, done.id}
        assert [j.id for j in client.jobs(all=True, kind="print", service="office")] == [done.id]
        assert client.job(done.id).state == JobState.COMPLETED
        assert client.cancel(queued.id).state == JobState.CANCELED
        with pytest.raises(ApiError) as info:
            client.cancel(done.id)
    assert info.value.status == 409


def test_canceling_a_printing_job_waits_for_the_printer(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        job = client.submit(lines(100), service="slow")
        for info in client.events(job.id):
            if info.state == JobState.PROCESSING:
                break
        stopping = client.cancel(job.id)
        assert stopping.state == JobState.PROCESSING and "processing-to-stop-point" in stopping.state_reasons
        assert client.wait(job.id).state == JobState.CANCELED


def test_unauthorized(live: LiveStack) -> None:
    with live.client(token="wrong") as client, pytest.raises(ApiError) as info:
        client.services()
    assert (info.value.status, info.value.code) == (401, "unauthorized")


def test_unreachable_is_connection_failed(live: LiveStack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    with live.client(url=f"https://127.0.0.1:{port}") as client, pytest.raises(ConnectionFailed) as info:
        client.services()
    assert info.value.status == 0 and "refused" in str(info.value).lower()


@pytest.mark.parametrize(
    ("status", "body", "reason", "expected"),
    [
        (502, b"<html>Bad Gateway</html>", "Bad Gateway", "HTTP 502 Bad Gateway: <html>Bad Gateway</html>"),
        (422, b'{"detail": [{"loc": ["body", "ticket"], "msg": "bad"}]}', "Unprocessable Entity", "ticket: bad"),
        (503, b"", "Service Unavailable", "HTTP 503 Service Unavailable"),
    ],
)
def test_errors_without_the_envelope(status: int, body: bytes, reason: str, expected: str) -> None:
    """What a proxy or a framework default answers: still one readable ApiError."""
    error = base.error_from_response(status, body, reason)
    assert error.status == status
    assert str(error) == expected


def test_responses_with_fields_from_a_newer_service_still_parse() -> None:
    job = job_dict(1, priority=50)
    job["documents"][0]["pages"] = 3
    assert base.parse_model(JobInfo, job).documents[0].number == 1


def test_malformed_response_is_an_api_error() -> None:
    with pytest.raises(ApiError) as info:
        base.parse_model(JobInfo, {"id": "x"})
    assert info.value.code == "bad-response"


def test_describe_error() -> None:
    assert describe_error("not supported", "sides", ["one-sided"]) == "sides: not supported (supported: one-sided)"
    assert describe_error("sides=x is not supported (supported: a)", "sides", ["a"]) == (
        "sides=x is not supported (supported: a)"
    )
    assert describe_error("bad", None, None) == "bad"


# ---------------------------------------------------------------------------- events and wait


def test_events_follow_the_stream_to_the_end(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        job = client.submit(lines(5), service="slow")
        seen = list(client.events(job.id))
    assert seen[0].version >= job.version
    assert versions(seen) == sorted(set(versions(seen)))  # no repeats
    assert JobState.PROCESSING in [j.state for j in seen]
    assert seen[-1].state == JobState.COMPLETED and seen[-1].impressions_completed == 5
    impressions = [j.impressions_completed for j in seen]
    assert impressions == sorted(impressions)


def test_events_reconnect_after_a_drop_without_repeating(live: LiveStack, relay: Relay, user_token: str) -> None:
    seen: list[JobInfo] = []
    with live.client(url=relay.url, token=user_token, sleep=lambda _s: None) as client:
        job = client.submit(lines(5), service="slow")
        accepted = relay.accepted
        for info in client.events(job.id):
            seen.append(info)
            if len(seen) == 1:
                relay.cut()  # mid-stream, as a flaky network does
    assert seen[-1].state == JobState.COMPLETED
    assert versions(seen) == sorted(set(versions(seen)))
    assert relay.accepted > accepted  # the cut closed every connection: the rest came on a new one


def test_events_fall_back_to_polling(live: LiveStack, user_token: str) -> None:
    sleeps: list[float] = []
    with live.client(token=user_token, sleep=sleeps.append) as client:
        job = client.submit(lines(2), service="slow")
        seen = list(client.events(job.id, poll_interval=0.01, max_stream_failures=0))
    assert seen[-1].state == JobState.COMPLETED
    assert versions(seen) == sorted(set(versions(seen)))
    assert 0.01 in sleeps


def test_events_poll_after_streams_that_deliver_nothing() -> None:
    """The events flow on its own: each empty stream backs off, then it polls to the end."""
    flow = base.events_flow(7, poll_interval=0.5, retry_delay=1.0, max_stream_failures=2, max_poll_failures=3,
                            read_timeout=60.0)
    assert isinstance(next(flow), base.Stream)
    assert flow.send(None) == base.Sleep(1.0)  # the stream ended without an event
    assert isinstance(flow.send(None), base.Stream)
    poll = flow.send(None)  # the second empty stream: no more streams
    assert (poll.method, poll.path) == ("GET", "/api/v1/jobs/7")
    assert flow.throw(ConnectionFailed("down")) == base.Sleep(0.5)  # a blip: poll again
    assert isinstance(flow.send(None), base.Request)
    emitted = flow.send(job_dict(7, state="processing", state_reasons=["job-printing"]))
    assert isinstance(emitted, base.Emit) and emitted.value.state == JobState.PROCESSING
    assert flow.send(None) == base.Sleep(0.5)
    assert isinstance(flow.send(None), base.Request)
    same = job_dict(7, state="processing", state_reasons=["job-printing"])
    assert flow.send(same) == base.Sleep(0.5)  # a repeat is not emitted
    flow.send(None)
    final = flow.send(job_dict(7, state="completed", state_reasons=[], version=2))
    assert final.value.state == JobState.COMPLETED
    with pytest.raises(StopIteration):
        flow.send(None)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (503, b"", base.StreamUnavailable),
        (501, b"", base.StreamUnavailable),
        (404, b"<html>no route</html>", base.StreamUnavailable),
        (404, b'{"error": {"code": "not-found", "message": "no job 9"}}', ApiError),
        (401, b"", ApiError),
    ],
)
def test_what_an_events_refusal_means(status: int, body: bytes, outcome: type[Exception]) -> None:
    """Poll when the stream is not offered (an old service, a proxy); stop when refused."""
    assert type(base.stream_refusal(status, body, "")) is outcome


def test_polling_survives_a_blip_but_not_a_404(live: LiveStack, relay: Relay, user_token: str) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        relay.down = False  # the network comes back

    with live.client(token=user_token) as client:
        job = client.submit(b"%PDF-1.4 short", service="office")
        client.wait(job.id)
    relay.down = True
    with live.client(url=relay.url, token=user_token, sleep=sleep) as client:
        assert [j.state for j in client.events(job.id, max_stream_failures=0)] == [JobState.COMPLETED]
        assert sleeps
        with pytest.raises(ApiError) as info:
            list(client.events(999_999))
    assert info.value.status == 404


def test_wait_reports_each_change_and_returns_the_final_job(live: LiveStack, user_token: str) -> None:
    changes: list[JobInfo] = []
    with live.client(token=user_token) as client:
        job = client.submit(lines(3), service="slow")
        final = client.wait(job.id, on_change=changes.append)
    assert final.state == JobState.COMPLETED and final == changes[-1]
    assert JobState.PROCESSING in [c.state for c in changes]


def test_wait_ends_with_an_aborted_job(live: LiveStack, user_token: str) -> None:
    with live.client(token=user_token) as client:
        job = client.submit(b"%PDF-1.4 refused", service="rejecting")
        final = client.wait(job.id)
    assert final.state == JobState.ABORTED and "aborted-by-system" in final.state_reasons


# ---------------------------------------------------------------------------- async client


def test_async_client_submit_wait_scan_download_cancel(live: LiveStack, user_token: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncCloudImagingClient(live.url, user_token, live.ca, timeout=10.0) as client:
            assert "office" in [s.name for s in await client.services()]
            job = await client.submit(b"%PDF-1.4 async", {"copies": 1}, service="office")
            seen: list[str] = []

            async def note(info: JobInfo) -> None:
                seen.append(info.state)

            final = await client.wait(job.id, on_change=note)
            assert final.state == JobState.COMPLETED and seen[-1] == JobState.COMPLETED

            second = await client.submit_multipart(b"text", service="parked")
            assert await client.download(second.id, 1, tmp_path / "second.txt") == 4
            assert (tmp_path / "second.txt").read_bytes() == b"text"
            canceled = await client.cancel(second.id)
            assert canceled.state == JobState.CANCELED
            with pytest.raises(ApiError) as info:
                await client.cancel(job.id)
            assert info.value.status == 409

            scan = await client.scan({"input-source": "platen"}, service="lab-scanner")
            scanned = await client.wait(scan.id)
            assert scanned.state == JobState.COMPLETED and scanned.documents
            size = await client.download(scanned.id, scanned.documents[0].number, tmp_path / "scan.out")
            assert size == (tmp_path / "scan.out").stat().st_size > 0

    asyncio.run(scenario())


def test_async_events_reconnect_after_a_drop(live: LiveStack, relay: Relay, user_token: str) -> None:
    async def scenario() -> list[JobInfo]:
        seen: list[JobInfo] = []
        async with AsyncCloudImagingClient(relay.url, user_token, live.ca, sleep=lambda _s: asyncio.sleep(0)) as client:
            job = await client.submit(lines(5), service="slow")
            async for info in client.events(job.id):
                seen.append(info)
                if len(seen) == 1:
                    await asyncio.to_thread(relay.cut)
        return seen

    seen = asyncio.run(scenario())
    assert seen[-1].state == JobState.COMPLETED
    assert versions(seen) == sorted(set(versions(seen)))


def test_an_interrupted_async_upload_cancels_the_job(live: LiveStack, user_token: str) -> None:
    started = threading.Event()

    def progress(sent: int, _total: int) -> None:
        if sent:
            started.set()

    async def scenario() -> None:
        async with AsyncCloudImagingClient(live.url, user_token, live.ca) as client:
            upload = asyncio.ensure_future(client.submit(lines(2000), service="parked", progress=progress))
            while not started.is_set():
                await asyncio.sleep(0.001)
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
            [job] = await client.jobs(all=True)
            assert job.state == JobState.CANCELED

    asyncio.run(scenario())


def test_reconnect_delay_honours_retry_and_backs_off() -> None:
    decoder = SseDecoder()
    assert [base.reconnect_delay(decoder, 1.0, n) for n in (0, 1, 2)] == [0.2, 1.0, 2.0]
    decoder.feed("retry: 2500")
    assert base.reconnect_delay(decoder, 1.0, 2) == 2.5


# ---------------------------------------------------------------------------- the twins


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member) and name not in ("close", "aclose")
    }


def test_the_sync_and_async_clients_offer_the_same_methods() -> None:
    sync, asyn = _public_methods(CloudImagingClient), _public_methods(AsyncCloudImagingClient)
    assert sorted(sync) == sorted(asyn)
    assert {"scan", "download", "submit", "events", "wait", "request"} <= set(sync)
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asyn[name].parameters), name
        for param, sync_param in signature.parameters.items():
            async_param = asyn[name].parameters[param]
            assert (sync_param.kind, sync_param.default) == (async_param.kind, async_param.default), (name, param)
        if name not in ("from_config", "events"):
            assert inspect.iscoroutinefunction(getattr(AsyncCloudImagingClient, name)), name


def test_idle_connections_are_dropped_before_the_service_closes_them() -> None:
    """A request sent on a connection the service is closing (its keep-alive timeout) fails
    with "Server disconnected without sending a response": both clients keep one for less."""
    from cloud_service.config import ServiceConfig

    assert ServiceConfig().keep_alive_timeout > base.KEEPALIVE_EXPIRY
    sync = CloudImagingClient("https://127.0.0.1:1", "t")
    aio = AsyncCloudImagingClient("https://127.0.0.1:1", "t")
    try:
        for http in (sync._http, aio._http):
            assert http._transport._pool._keepalive_expiry == base.KEEPALIVE_EXPIRY  # type: ignore[attr-defined]
    finally:
        sync.close()
        asyncio.run(aio.aclose())
