"""Device reports judged and applied in one optimistic transaction, on the real DeviceProtocol
and JobStore (SQLite in tmp_path, no broker): the device's messages go through
``DeviceProtocol.handle`` exactly as the MQTT adapter hands them over."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_service import devices as devices_module
from cloud_service.db import make_engine
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import DocumentKey
from cloud_service.store import JobStore
from schemas.enums import DocumentState, JobState, Reason, ServiceKind
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    DocumentStatus,
    FetchJob,
    HeldJob,
    Hello,
    JobStatus,
    Message,
    PrintServiceAttributes,
    Reply,
    decode_down,
    encode,
)
from schemas.model.job import Cancel
from schemas.model.reports import Verdict, judge
from tests.support.hops import count_hops
from tests.support.inprocess import service_parts

DEVICE = "dev-1"


@dataclass
class Service:
    store: JobStore
    devices: DeviceProtocol

    async def send(self, message: Message) -> Reply:
        """One device message in, its reply out (decoded, as the Manager would read it)."""
        out = await self.devices.handle(DEVICE, "up", encode(message))
        replies = [decode_down(encode(m)) for _, m in out]
        assert len(replies) == 1 and isinstance(replies[0], Reply), replies
        return replies[0]

    async def claimed_job(self, documents: int = 1) -> int:
        service = await self.store.service(ServiceKind.PRINT.value, "office")
        assert service is not None
        row = await self.store.create_job(kind=ServiceKind.PRINT, service=service, owner="alice", ticket={},
                                          documents=[{"format": "application/pdf", "size": 10, "sha256": "0" * 64}
                                                     for _ in range(documents)], with_documents=True,
                                          key_for=DocumentKey.input_key)
        ack = await self.send(AcknowledgeJob(job_id=row.id, version=row.version, accept=True))
        assert ack.code == "ok" and ack.state is JobState.PENDING and len(ack.documents) == documents
        return row.id


@pytest.fixture
async def service(tmp_path: Path, database_url: str) -> AsyncIterator[Service]:
    async with service_parts(tmp_path, database_url=database_url) as parts:
        svc = Service(parts.store, parts.devices())
        reply = await svc.send(Attributes(services=[PrintServiceAttributes(name="office")]))
        assert reply.ok
        yield svc


async def test_a_cancel_landing_between_judgement_and_write_makes_the_report_stale(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: the device's report is judged current, then a cancel commits (through another
    JobStore on the same database, as another replica would), then the report's write would land
    on top of it. The write is conditioned on the judged version, so it fails, the job is read
    and judged again, and the device is told ``stale`` with the state to adopt
    (processing-to-stop-point), instead of its report overwriting the cancel."""
    job_id = await service.claimed_job()
    store = service.store
    version = (await store.get_job(job_id)).version
    url = str(store.engine.url.render_as_string(hide_password=False))
    raced = []

    async def cancel_on_replica() -> None:
        replica = JobStore(make_engine(url))
        try:
            await replica.transition(job_id, Cancel())
        finally:
            await replica.close()
            await replica.engine.dispose()

    def judge_then_cancel(job, applied_ids, message):  # type: ignore[no-untyped-def]
        verdict = judge(job, applied_ids, message)
        if not raced:  # judged, not written yet: the other replica's cancel commits now
            raced.append(verdict)
            # The other replica runs on a loop and thread of its own: the judgement may be running
            # on this test's loop (PostgreSQL) or on the store's database thread (SQLite).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, cancel_on_replica()).result(timeout=30)
        return verdict

    monkeypatch.setattr(devices_module, "judge", judge_then_cancel)
    report = JobStatus(job_id=job_id, version=version, state=JobState.PROCESSING, impressions_completed=1)
    reply = await service.send(report)
    monkeypatch.undo()

    assert raced and not isinstance(raced[0], Verdict), "the report was never judged current"
    assert reply.code == "stale" and not reply.ok
    assert reply.version == version + 1 and Reason.PROCESSING_TO_STOP_POINT in reply.reasons
    row = await store.get_job(job_id)
    assert row.cancel_requested and row.state == JobState.PENDING.value and row.impressions_completed == 0
    assert report.id not in row.applied_ids
    # Re-sent on the adopted version, the device's next report applies.
    again = await service.send(JobStatus(job_id=job_id, version=reply.version, state=JobState.CANCELED))
    assert again.code == "ok" and again.state is JobState.CANCELED


async def test_document_reports_are_job_events(service: Service) -> None:
    job_id = await service.claimed_job(documents=2)
    store = service.store
    v = (await store.get_job(job_id)).version
    history = await _history(store, job_id)
    report = DocumentStatus(job_id=job_id, document_number=1, version=v, state=DocumentState.PROCESSING,
                            impressions_completed=1)
    first = await service.send(report)
    assert first.code == "ok" and first.version == v + 1
    again = await service.send(report)  # the reply was lost; the device sends the same message again
    assert again.code == "duplicate" and again.ok and again.version == v + 1
    old = await service.send(report.model_copy(update={"id": DocumentStatus(job_id=1, document_number=1, version=0,
                                                                            state=DocumentState.PENDING).id}))
    assert old.code == "stale" and old.version == v + 1
    second = await service.send(DocumentStatus(job_id=job_id, document_number=2, version=v + 1,
                                               state=DocumentState.COMPLETED))
    assert second.code == "ok" and second.version == v + 2
    back = await service.send(DocumentStatus(job_id=job_id, document_number=2, version=v + 2,
                                             state=DocumentState.PROCESSING))
    assert back.code == "invalid-transition" and back.version == v + 2
    missing = await service.send(DocumentStatus(job_id=job_id, document_number=3, version=v + 2,
                                                state=DocumentState.PROCESSING))
    assert missing.code == "not-found"
    docs = await store.documents(job_id)
    assert [(d.state, d.impressions_completed) for d in docs] == [("processing", 1), ("completed", 0)]
    assert await _history(store, job_id) == history, "a document report wrote job history"
    # The job ends: its unfinished document ends with it, in the same transaction.
    done = await service.send(JobStatus(job_id=job_id, version=v + 2, state=JobState.ABORTED,
                                        reasons=["aborted-by-system"]))
    assert done.code == "ok" and done.state is JobState.ABORTED
    assert [d.state for d in await store.documents(job_id)] == ["aborted", "completed"]


async def _history(store: JobStore, job_id: int) -> list[tuple[str, tuple[str, ...]]]:
    info = await store.job_info(await store.get_job(job_id), with_history=True)
    return [(e.state, tuple(e.state_reasons)) for e in info.history]


async def test_each_device_message_is_one_hop_to_the_database(service: Service,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A report is read, judged and written in one transaction; fetch-job and hello are each
    answered from one read: one call of ``JobStore.run`` or ``JobStore.read`` each (one thread
    hop on SQLite)."""
    job_id = await service.claimed_job()
    store = service.store
    version = (await store.get_job(job_id)).version
    hops = count_hops(monkeypatch, store)
    report = await service.send(JobStatus(job_id=job_id, version=version, state=JobState.PROCESSING))
    assert report.code == "ok" and len(hops) == 1, hops
    hops.clear()
    fetched = await service.send(FetchJob(job_id=job_id))
    assert fetched.code == "ok" and len(hops) == 1, hops
    hops.clear()
    held = HeldJob(job_id=job_id, version=report.version, state=JobState.PROCESSING)
    synced = await service.devices.handle(DEVICE, "up", encode(Hello(software="test 1.0", jobs=[held])))
    assert len(synced) == 1 and len(hops) == 1, hops


async def test_a_claim_is_one_hop_and_builds_its_document_urls_in_it(service: Service,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """acknowledge-job (accept) is judged, its documents' URLs built and the claim written in one
    transaction; a job whose documents no device message can describe is aborted in that same
    transaction instead of being claimed (no device could ever take it)."""
    service_row = await service.store.service(ServiceKind.PRINT.value, "office")
    assert service_row is not None

    async def new_job(fmt: str) -> tuple[int, int]:
        row = await service.store.create_job(kind=ServiceKind.PRINT, service=service_row, owner="alice", ticket={},
                                             documents=[{"format": fmt, "size": 10, "sha256": "0" * 64}],
                                             with_documents=True, key_for=DocumentKey.input_key)
        return row.id, row.version

    (good, version), (bad, _) = await new_job("application/pdf"), await new_job("not a media type")
    hops = count_hops(monkeypatch, service.store)
    ack = await service.send(AcknowledgeJob(job_id=good, version=version, accept=True))
    assert ack.code == "ok" and ack.state is JobState.PENDING and len(ack.documents) == 1 and len(hops) == 1, hops
    assert ack.documents[0].url.startswith("https://")
    hops.clear()
    refused = await service.send(AcknowledgeJob(job_id=bad, version=version, accept=True))
    assert refused.code == "not-fetchable" and not refused.documents and len(hops) == 1, hops
    row = await service.store.get_job(bad)
    assert (row.state, row.claimed) == (JobState.ABORTED.value, False)
    assert "cannot be delivered" in (row.state_message or "")
    again = await service.send(AcknowledgeJob(job_id=bad, version=row.version, accept=True))
    assert again.code == "not-fetchable" and again.state is JobState.ABORTED
