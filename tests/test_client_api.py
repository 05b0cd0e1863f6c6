"""The sync and async clients against the in-memory API (httpx MockTransport, no sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from pathlib import Path

import httpx
import pytest

from client._base import CHUNK_SIZE
from client.aio import AsyncCloudImagingClient
from client.api import CloudImagingClient
from client.errors import ApiError, ClientError, ConnectionFailed, describe_error
from schemas.api import JobInfo, ServiceInfo
from schemas.enums import JobState
from tests.support.fakeapi import BASE, STORE, TOKEN, FakeService, job_dict


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


# ---------------------------------------------------------------------------- services


def test_services_and_one_service(fake: FakeService) -> None:
    with fake.client() as client:
        services = client.services()
        assert [s.name for s in services] == ["office"]
        assert isinstance(services[0], ServiceInfo)
        assert client.service("print", "office").make_and_model == "Acme LaserWriter 9000"
        with pytest.raises(ApiError) as info:
            client.service("print", "nope")
    assert info.value.status == 404
    assert fake.requests[0].url.params["kind"] == "print"
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_validate_refusal_names_attribute_and_supported(fake: FakeService) -> None:
    with fake.client() as client:
        client.validate("print", "office", {"sides": "one-sided"}, "application/pdf")
        with pytest.raises(ApiError) as info:
            client.validate("print", "office", {"sides": "two-sided-short-edge"})
    err = info.value
    assert (err.status, err.attribute, err.supported) == (400, "sides", ["one-sided", "two-sided-long-edge"])
    assert "sides" in str(err) and "two-sided-long-edge" in str(err)


def test_health(fake: FakeService) -> None:
    with fake.client() as client:
        assert client.health() == {"status": "ok"}


# ---------------------------------------------------------------------------- submission


def test_submit_uploads_to_the_presigned_url_then_closes(fake: FakeService) -> None:
    progress: list[tuple[int, int]] = []
    with fake.client() as client:
        job = client.submit(b"hello printer\n", {"copies": 2}, progress=lambda s, t: progress.append((s, t)))
    assert isinstance(job, JobInfo)
    assert job.state == JobState.PENDING
    create = json.loads(fake.calls("POST", "/api/v1/jobs")[0].content)
    assert create == {"kind": "print", "ticket": {"copies": 2}, "document_format": "text/plain", "upload": True}
    put = fake.calls("PUT", "/objects/")[0]
    assert put.headers["content-type"] == "text/plain"
    assert put.headers["content-length"] == "14"
    assert fake.uploads[job.id] == b"hello printer\n"
    assert fake.calls("POST", f"/jobs/{job.id}/close")
    assert progress[0] == (0, 14) and progress[-1] == (14, 14)


def test_submit_streams_a_file_in_chunks_with_progress(fake: FakeService, tmp_path: Path) -> None:
    data = b"%PDF-1.7\n" + bytes(range(256)) * (3 * CHUNK_SIZE // 256)
    path = tmp_path / "big report.pdf"
    path.write_bytes(data)
    progress: list[int] = []
    with fake.client() as client:
        job = client.submit(path, service="office", progress=lambda sent, _total: progress.append(sent))
    create = json.loads(fake.calls("POST", "/api/v1/jobs")[0].content)
    assert create["document_name"] == "big report.pdf"
    assert create["document_format"] == "application/pdf"
    assert create["service"] == "office"
    assert fake.uploads[job.id] == data
    assert progress == sorted(progress) and progress[-1] == len(data) and len(progress) >= 4


def test_format_override(fake: FakeService) -> None:
    with fake.client() as client:
        client.submit(b"%PDF-1.4", document_format="Text/Plain")
    assert json.loads(fake.calls("POST", "/api/v1/jobs")[0].content)["document_format"] == "text/plain"


def test_token_is_not_sent_to_an_object_store_on_another_host(fake: FakeService) -> None:
    fake.upload_host = STORE
    with fake.client() as client:
        client.submit(b"x")
    put = fake.calls("PUT", "/objects/")[0]
    assert put.url.host == "store.test"
    assert "authorization" not in put.headers


def test_refused_ticket_costs_no_upload(fake: FakeService) -> None:
    with fake.client() as client, pytest.raises(ApiError) as info:
        client.submit(b"x", {"media": "iso_a3_297x420mm"})
    assert info.value.attribute == "media"
    assert not fake.calls("PUT", "/objects/")


@pytest.mark.parametrize("knob", ["fail_upload", "corrupt_receipt"])
def test_failed_upload_cancels_the_half_made_job(fake: FakeService, knob: str) -> None:
    setattr(fake, knob, True)
    with fake.client() as client, pytest.raises(ApiError) as info:
        client.submit(b"data")
    assert info.value.code == ("too-large" if knob == "fail_upload" else "upload-corrupted")
    assert fake.calls("POST", "/jobs/1/cancel")
    assert fake.jobs[1]["state"] == "canceled"


def test_interrupted_upload_cancels_too(fake: FakeService) -> None:
    def interrupt(sent: int, _total: int) -> None:
        if sent:
            raise KeyboardInterrupt

    with fake.client() as client, pytest.raises(KeyboardInterrupt):
        client.submit(b"data", progress=interrupt)
    assert fake.jobs[1]["state"] == "canceled"


def test_missing_file_fails_before_any_request(fake: FakeService, tmp_path: Path) -> None:
    with fake.client() as client, pytest.raises(FileNotFoundError):
        client.submit(tmp_path / "absent.pdf")
    assert fake.requests == []


def test_bad_document_name_is_caught_locally(fake: FakeService) -> None:
    with fake.client() as client, pytest.raises(ClientError, match="document_name"):
        client.submit(b"x", document_name="a\x00b")
    assert fake.requests == []


def test_multipart(fake: FakeService, tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000)
    seen: list[int] = []
    with fake.client() as client:
        job = client.submit_multipart(path, {"copies": 1}, progress=lambda sent, _t: seen.append(sent))
    assert fake.uploads[job.id] == path.read_bytes()
    assert job.documents[0].format == "image/png"
    assert seen[-1] == 5008


def test_submit_uri(fake: FakeService) -> None:
    with fake.client() as client:
        client.submit_uri("https://files.example/a.pdf", {"copies": 1}, document_format="application/pdf")
    body = json.loads(fake.calls("POST", "/api/v1/jobs")[0].content)
    assert body["document_uri"] == "https://files.example/a.pdf"
    assert "upload" in body and body["upload"] is False


# ---------------------------------------------------------------------------- jobs and errors


def test_jobs_job_cancel(fake: FakeService) -> None:
    fake.jobs = {1: job_dict(1), 2: job_dict(2, state="completed", state_reasons=[])}
    with fake.client() as client:
        assert [j.id for j in client.jobs()] == [1]
        assert [j.id for j in client.jobs(all=True, kind="print", service="office")] == [1, 2]
        assert client.job(2).state == JobState.COMPLETED
        assert client.cancel(1).state == JobState.CANCELED
        with pytest.raises(ApiError) as info:
            client.cancel(2)
    assert info.value.status == 409
    listing = fake.calls("GET", "/api/v1/jobs")[1]
    assert dict(listing.url.params) == {"all": "true", "kind": "print", "service": "office"}


def test_unauthorized() -> None:
    fake = FakeService()
    with CloudImagingClient(BASE, "wrong", transport=fake.transport()) as client, pytest.raises(ApiError) as info:
        client.services()
    assert (info.value.status, info.value.code) == (401, "unauthorized")


def test_unreachable_is_connection_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    with CloudImagingClient(BASE, TOKEN, transport=transport) as client, pytest.raises(ConnectionFailed) as info:
        client.services()
    assert info.value.status == 0 and "connection refused" in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, b"<html>Bad Gateway</html>", "HTTP 502 Bad Gateway: <html>Bad Gateway</html>"),
        (422, b'{"detail": [{"loc": ["body", "ticket"], "msg": "bad"}]}', "ticket: bad"),
        (503, b"", "HTTP 503 Service Unavailable"),
    ],
)
def test_errors_without_the_envelope(status: int, body: bytes, expected: str) -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(status, content=body))
    with CloudImagingClient(BASE, TOKEN, transport=transport) as client, pytest.raises(ApiError) as info:
        client.job(1)
    assert info.value.status == status
    assert str(info.value) == expected


def test_responses_with_fields_from_a_newer_service_still_parse() -> None:
    job = job_dict(1, priority=50)
    job["documents"][0]["pages"] = 3
    transport = httpx.MockTransport(lambda _r: httpx.Response(200, json=job))
    with CloudImagingClient(BASE, TOKEN, transport=transport) as client:
        assert client.job(1).documents[0].number == 1


def test_malformed_response_is_an_api_error() -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(200, json={"id": "x"}))
    with CloudImagingClient(BASE, TOKEN, transport=transport) as client, pytest.raises(ApiError) as info:
        client.job(1)
    assert info.value.code == "bad-response"


def test_describe_error() -> None:
    assert describe_error("not supported", "sides", ["one-sided"]) == "sides: not supported (supported: one-sided)"
    assert describe_error("sides=x is not supported (supported: a)", "sides", ["a"]) == (
        "sides=x is not supported (supported: a)"
    )
    assert describe_error("bad", None, None) == "bad"


# ---------------------------------------------------------------------------- events and wait


def _states(jobs: list[JobInfo]) -> list[str]:
    return [f"{j.state}:{j.impressions_completed}" for j in jobs]


def _queued(fake: FakeService) -> int:
    fake.jobs[1] = job_dict(1)
    fake.timelines[1] = [
        ("processing", ["job-printing"], 1),
        ("processing", ["job-printing"], 2),
        ("completed", ["job-completed-successfully"], 2),
    ]
    return 1


def test_events_follow_the_stream_to_the_end(fake: FakeService) -> None:
    job_id = _queued(fake)
    with fake.client() as client:
        seen = list(client.events(job_id))
    assert _states(seen) == ["pending:0", "processing:1", "processing:2", "completed:2"]
    assert fake.calls("GET", "/events")[0].headers["accept"] == "text/event-stream"


def test_events_reconnect_after_a_drop_without_repeating(fake: FakeService) -> None:
    job_id = _queued(fake)
    fake.drops[job_id] = 2
    with fake.client() as client:
        seen = list(client.events(job_id))
    assert _states(seen) == ["pending:0", "processing:1", "processing:2", "completed:2"]
    assert len(fake.calls("GET", "/events")) == 3


def test_events_fall_back_to_polling(fake: FakeService) -> None:
    job_id = _queued(fake)
    fake.events_status = 503
    steps = iter(fake.timelines.pop(job_id))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(fake.calls("GET", f"/jobs/{job_id}")) > len(fake.calls("GET", "/events")):
            step = next(steps, None)
            if step:
                fake.advance(job_id, *step)

    with fake.client(sleep=sleep) as client:
        seen = list(client.events(job_id, poll_interval=0.5, max_stream_failures=2))
    assert _states(seen) == ["pending:0", "processing:1", "processing:2", "completed:2"]
    assert len(fake.calls("GET", "/events")) == 2
    assert 0.5 in sleeps


def test_polling_survives_a_blip_but_not_a_404(fake: FakeService) -> None:
    fake.jobs[1] = job_dict(1, state="completed", state_reasons=[])
    fake.events_status = 501
    calls = {"n": 0}
    inner = fake.handle

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/jobs/1" and calls["n"] == 0:
            calls["n"] += 1
            raise httpx.ReadTimeout("slow", request=request)
        return inner(request)

    with CloudImagingClient(BASE, TOKEN, transport=httpx.MockTransport(flaky), sleep=lambda _s: None) as client:
        assert _states(list(client.events(1, max_stream_failures=1))) == ["completed:0"]
        with pytest.raises(ApiError) as info:
            list(client.events(99))
    assert info.value.status == 404


def test_wait_reports_each_change_and_returns_the_final_job(fake: FakeService) -> None:
    job_id = _queued(fake)
    changes: list[str] = []
    with fake.client() as client:
        final = client.wait(job_id, on_change=lambda j: changes.append(j.state))
    assert final.state == JobState.COMPLETED
    assert changes == ["pending", "processing", "processing", "completed"]


# ---------------------------------------------------------------------------- async client


def test_async_client_submit_wait_cancel(fake: FakeService) -> None:
    async def scenario() -> tuple[JobInfo, JobInfo, list[str]]:
        async with AsyncCloudImagingClient(
            BASE, TOKEN, transport=fake.transport(), sleep=lambda _s: asyncio.sleep(0)
        ) as client:
            assert [s.name for s in await client.services()] == ["office"]
            job = await client.submit(b"%PDF-1.4 async", {"copies": 1})
            fake.timelines[job.id] = [("completed", ["job-completed-successfully"], 1)]
            fake.drops[job.id] = 1
            seen: list[str] = []

            async def note(info: JobInfo) -> None:
                seen.append(info.state)

            final = await client.wait(job.id, on_change=note)
            second = await client.submit_multipart(b"text", service="office")
            canceled = await client.cancel(second.id)
            with pytest.raises(ApiError):
                await client.cancel(job.id)
            return final, canceled, seen

    final, canceled, seen = asyncio.run(scenario())
    assert final.state == JobState.COMPLETED and seen == ["pending", "completed"]
    assert canceled.state == JobState.CANCELED
    assert fake.uploads[1] == b"%PDF-1.4 async"
    assert hashlib.sha256(fake.uploads[2]).hexdigest() == hashlib.sha256(b"text").hexdigest()


def test_reconnect_delay_honours_retry_and_backs_off() -> None:
    from client._base import reconnect_delay
    from client.sse import SseDecoder

    decoder = SseDecoder()
    assert [reconnect_delay(decoder, 1.0, n) for n in (0, 1, 2)] == [0.2, 1.0, 2.0]
    decoder.feed("retry: 2500")
    assert reconnect_delay(decoder, 1.0, 2) == 2.5


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member) and name not in ("close", "aclose")
    }


def test_the_sync_and_async_clients_offer_the_same_methods() -> None:
    sync, asyn = _public_methods(CloudImagingClient), _public_methods(AsyncCloudImagingClient)
    assert sorted(sync) == sorted(asyn)
    assert {"scan", "download", "submit", "events", "wait"} <= set(sync)
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asyn[name].parameters), name
        for param, sync_param in signature.parameters.items():
            async_param = asyn[name].parameters[param]
            assert (sync_param.kind, sync_param.default) == (async_param.kind, async_param.default), (name, param)
        if name != "from_config":
            assert inspect.iscoroutinefunction(getattr(AsyncCloudImagingClient, name)) or name == "events", name
