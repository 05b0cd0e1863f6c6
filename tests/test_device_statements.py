"""A device's connect in as few round trips as the database allows, on the real JobStore (SQLite
in tmp_path and PostgreSQL): on PostgreSQL a ``hello`` is one statement (the device's row written
only where it differs, and the jobs the answer needs), a new device's ``attributes`` a lock, one
read and its inserts; on both, what they answer and write is what the model says."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from cloud_service.db import DeviceRow, ServiceRow
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import DocumentKey
from cloud_service.store import JobStore
from schemas.enums import JobState, ServiceKind
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    HeldJob,
    Hello,
    PrintServiceAttributes,
    Reply,
    Sync,
    decode_down,
    encode,
)
from schemas.model.job import Cancel
from tests.support.inprocess import ServiceParts, service_parts
from tests.test_change_statements import on_postgresql, statements


@pytest.fixture
async def parts(tmp_path: Path, database_url: str) -> AsyncIterator[ServiceParts]:
    async with service_parts(tmp_path, database_url=database_url) as parts:
        yield parts


async def send(protocol: DeviceProtocol, device_id: str, message: object) -> Reply | Sync:
    out = await protocol.handle(device_id, "up", encode(message))  # type: ignore[arg-type]
    answer = decode_down(encode(out[0][1]))
    assert isinstance(answer, Reply | Sync)
    return answer


async def new_jobs(store: JobStore, count: int) -> list[int]:
    service = await store.service(ServiceKind.PRINT.value, "office")
    assert service is not None
    return [(await store.create_job(kind=ServiceKind.PRINT, service=service, owner="alice", ticket={},
                                    documents=[{"format": "application/pdf", "size": 10, "sha256": "0" * 64}],
                                    with_documents=True, key_for=DocumentKey.input_key)).id
            for _ in range(count)]


async def device_row(store: JobStore, device_id: str) -> DeviceRow | None:
    async with store.reads() as s:
        return await s.scalar(select(DeviceRow).where(DeviceRow.id == device_id))


async def test_a_hello_is_one_statement_on_postgresql_and_answers_from_the_jobs_it_reads(
        parts: ServiceParts) -> None:
    store = parts.store
    protocol = parts.devices()
    assert (await send(protocol, "dev-1", Attributes(services=[PrintServiceAttributes(name="office")]))).ok
    claimed, lost, canceling, waiting = await new_jobs(store, 4)
    for job_id in (claimed, lost, canceling):
        ack = await send(protocol, "dev-1", AcknowledgeJob(job_id=job_id, version=1, accept=True))
        assert isinstance(ack, Reply) and ack.ok
    await store.transition(canceling, Cancel(message="enough"))  # claimed: the device must stop it
    held = [HeldJob(job_id=claimed, version=2, state=JobState.PENDING),
            HeldJob(job_id=canceling, version=2, state=JobState.PENDING),
            HeldJob(job_id=424242, version=1, state=JobState.PROCESSING)]

    with statements(store) as sent:
        sync = await send(protocol, "dev-1", Hello(software="fw-2", jobs=held, ts=time.time()))
    assert isinstance(sync, Sync)
    if on_postgresql(store):  # the hello's statement; the release of the lost job; its fetchable again
        assert sent[0].startswith("WITH device AS (INSERT INTO devices") and len(sent) == 3, sent
    # Held and still claimed: nothing said. Held but canceled meanwhile: stop. Never heard
    # of: unknown. Claimed but not held (the device lost it, not started): released, so
    # fetchable again.
    assert [s.job_id for s in sync.stop] == [canceling]
    assert sync.unknown == [424242]
    assert sync.fetchable == sorted([lost, waiting])
    assert (await store.get_job(claimed)).claimed and not (await store.get_job(lost)).claimed
    assert (await device_row(store, "dev-1")).software == "fw-2"  # type: ignore[union-attr]

    # Nothing to release: the hello is that one statement.
    with statements(store) as sent:
        sync = await send(protocol, "dev-1", Hello(software="fw-2", jobs=held, ts=time.time()))
    assert isinstance(sync, Sync) and sync.fetchable == sorted([lost, waiting]) and sync.unknown == [424242]
    if on_postgresql(store):
        assert len(sent) == 1 and sent[0].startswith("WITH device AS (INSERT INTO devices"), sent


async def test_a_hello_without_jobs_reads_the_same_without_listeners(parts: ServiceParts) -> None:
    """The statement as the service runs it (on the driver's cursor, nothing listening), for a
    device that holds nothing: its fetchable jobs in order, at most as many as asked."""
    store = parts.store
    protocol = parts.devices()
    assert (await send(protocol, "dev-1", Attributes(services=[PrintServiceAttributes(name="office")]))).ok
    jobs = await new_jobs(store, 3)
    held, claimed, fetchable = await store.hello_view("dev-1", [], "fw-1", {"online": True})
    assert held == {} and claimed == [] and [r.id for r in fetchable] == jobs
    held, _, _ = await store.hello_view("dev-1", [jobs[1], 999], "fw-1")
    assert list(held) == [jobs[1]] and held[jobs[1]].state == JobState.PENDING.value


async def test_a_new_device_is_made_by_its_hello_and_an_unchanged_one_is_not_written(
        parts: ServiceParts) -> None:
    store = parts.store
    before = time.time()
    await store.hello_view("dev-new", [], "fw-1", {"online": True, "last_seen": before, "session": "s1"})
    row = await device_row(store, "dev-new")
    assert row is not None
    assert (row.software, row.online, row.last_seen, row.session) == ("fw-1", True, before, "s1")
    assert row.created_at >= before and row.owner is None and row.status_re is None
    # A device first heard of by a hello with no liveness is offline until its presence says so.
    await store.hello_view("dev-quiet", [], "fw-1")
    assert (await device_row(store, "dev-quiet")).online is False  # type: ignore[union-attr]

    async def row_version() -> str:
        async with store.reads() as s:
            return str(await s.scalar(text("SELECT xmin FROM devices WHERE id = 'dev-new'")))

    if on_postgresql(store):
        version = await row_version()
        await store.hello_view("dev-new", [], "fw-1", {"online": True, "last_seen": before, "session": "s1"})
        assert await row_version() == version  # the same values: no new row version written
        await store.hello_view("dev-new", [], "fw-2")
        assert await row_version() != version
    await store.hello_view("dev-new", [], "fw-3", {"online": False})
    row = await device_row(store, "dev-new")
    assert (row.software, row.online, row.session) == ("fw-3", False, "s1")  # type: ignore[union-attr]


async def test_a_new_devices_attributes_are_a_lock_one_read_and_the_inserts(parts: ServiceParts) -> None:
    store = parts.store
    protocol = parts.devices()
    await send(protocol, "dev-1", Hello(software="fw"))
    await send(protocol, "dev-2", Hello(software="fw"))
    mine = Attributes(services=[PrintServiceAttributes(name="office"), PrintServiceAttributes(name="lobby")])
    with statements(store) as sent:
        assert (await send(protocol, "dev-1", mine)).ok
    if on_postgresql(store):
        assert [s.split(" ")[0] for s in sent] == ["SELECT", "SELECT", "INSERT", "INSERT"], sent
        assert "FOR UPDATE" in " ".join(sent[0].split()) or sent[0].startswith("SELECT devices.id"), sent
    # Another device naming one of them is refused whole: neither of its services is written.
    theft = Attributes(services=[PrintServiceAttributes(name="hall"), PrintServiceAttributes(name="lobby")])
    refused = await send(protocol, "dev-2", theft)
    assert isinstance(refused, Reply) and not refused.ok and refused.code == "not-yours"
    async with store.reads() as s:
        names = {(r.device_id, r.name) for r in await s.scalars(select(ServiceRow))}
    assert names == {("dev-1", "office"), ("dev-1", "lobby")}
    # The same attributes again change nothing; a new one of its own is added.
    again = Attributes(services=[PrintServiceAttributes(name="office"), PrintServiceAttributes(name="lobby"),
                                 PrintServiceAttributes(name="annex")])
    assert (await send(parts.devices(), "dev-1", again)).ok
    async with store.reads() as s:
        names = {(r.device_id, r.name) for r in await s.scalars(select(ServiceRow))}
    assert names == {("dev-1", "office"), ("dev-1", "lobby"), ("dev-1", "annex")}
