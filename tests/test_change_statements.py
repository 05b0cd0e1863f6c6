"""A job's change in as few round trips as the database allows, on the real JobStore (SQLite in
tmp_path and PostgreSQL): on PostgreSQL a device's report is one read and one write with no
transaction, a submit's job is made in one statement and closed in another; each of those
statements writes all of its change or none of it, and what the close derives instead of
reading is what a read shows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, select

from cloud_service import store as store_module
from cloud_service.auth import User
from cloud_service.db import DocumentRow, JobEventRow, make_engine
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import DocumentKey
from cloud_service.store import (
    _DOC_KEYS,
    _JOB_KEYS,
    JobStore,
    Known,
    _columns,
    _key_pattern,
    _write_change,
    created_event,
)
from schemas.enums import DocumentState, JobState, ServiceKind
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    DocumentStatus,
    FetchJob,
    JobStatus,
    PrintServiceAttributes,
    Reply,
    decode_down,
    encode,
)
from schemas.model.job import Cancel, Close, InvalidTransition
from tests.support.inprocess import ServiceParts, service_parts
from tests.support.rasterdocs import photo_jpeg

DEVICE = "dev-1"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n" + b"%" * 10_000 + b"\n%%EOF\n"


@pytest.fixture
async def parts(tmp_path: Path, database_url: str) -> AsyncIterator[ServiceParts]:
    async with service_parts(tmp_path, database_url=database_url) as parts:
        protocols[id(parts)] = parts.devices()
        try:
            reply = await send(parts, Attributes(services=[PrintServiceAttributes(name="office")]))
            assert reply.ok
            yield parts
        finally:
            del protocols[id(parts)]


@contextmanager
def statements(store: JobStore) -> Iterator[list[str]]:
    """The SQL of every statement the store sends while the block runs (on SQLite, also those
    of its database thread's engine)."""
    sent: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(" ".join(statement.split())[:60])

    engines = [store.engine.sync_engine, *([store._thread_engine] if store._thread_engine is not None else [])]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


def on_postgresql(store: JobStore) -> bool:
    return store.engine.dialect.name == "postgresql"


async def new_job(store: JobStore, documents: int = 1) -> int:
    service = await store.service(ServiceKind.PRINT.value, "office")
    assert service is not None
    row = await store.create_job(kind=ServiceKind.PRINT, service=service, owner="alice", ticket={},
                                 documents=[{"format": "application/pdf", "size": 10, "sha256": "0" * 64}
                                            for _ in range(documents)],
                                 with_documents=True, key_for=DocumentKey.input_key)
    return row.id


#: The device protocol of each test's service parts: one, as one replica has one (it writes a
#: device's liveness once per interval, not with every message).
protocols: dict[int, DeviceProtocol] = {}


async def send(parts: ServiceParts, message: object) -> Reply:
    """One device message in through the real DeviceProtocol, its reply out as the device reads it."""
    out = await protocols[id(parts)].handle(DEVICE, "up", encode(message))  # type: ignore[arg-type]
    reply = decode_down(encode(out[0][1]))
    assert isinstance(reply, Reply)
    return reply


async def test_a_device_report_on_postgresql_is_one_write_after_a_read_or_a_change_kept(
        parts: ServiceParts) -> None:
    """The first report of a job this replica has not written is a read and one write; the
    next is judged on the job as the first one wrote it: one statement."""
    store = parts.store
    job_id = await new_job(store)
    with statements(store) as sent:
        ack = await send(parts, AcknowledgeJob(job_id=job_id, version=1, accept=True))
    assert ack.ok and ack.state is JobState.PENDING
    with statements(store) as sent2:
        done = await send(parts, JobStatus(job_id=job_id, version=ack.version, state=JobState.PROCESSING))
    assert done.ok and done.state is JobState.PROCESSING
    if on_postgresql(store):
        assert len(sent) == 2, sent
        assert sent[0].startswith("SELECT jobs.id") and sent[1].startswith("WITH changed_job AS"), sent
        assert len(sent2) == 1 and sent2[0].startswith("WITH changed_job AS"), sent2
    else:
        assert not any(s.startswith("SELECT jobs.id") for s in sent2), sent2
    # Whatever the path, the report is written whole: the job, its history event, its claim.
    row = await store.get_job(job_id)
    assert (row.state, row.version, row.claimed) == (JobState.PROCESSING.value, done.version, True)
    async with store.reads() as s:
        versions = list(await s.scalars(select(JobEventRow.version).where(JobEventRow.job_id == job_id)
                                        .order_by(JobEventRow.id)))
    assert versions == [1, 2, 3]  # made fetchable, claimed, processing


async def test_a_claim_after_a_fetch_is_judged_on_what_the_fetch_read(parts: ServiceParts) -> None:
    """A device fetches a job, then claims it: the fetch's read is kept, so the claim is one
    statement, its write (no read of the job before it), on either database."""
    store = parts.store
    job_id = await new_job(store)
    with statements(store) as fetched:
        fetch = await send(parts, FetchJob(job_id=job_id))
    assert fetch.ok and fetch.version == 1
    assert len(fetched) == 1 and fetched[0].startswith("SELECT jobs.id"), fetched
    with statements(store) as claimed:
        ack = await send(parts, AcknowledgeJob(job_id=job_id, version=fetch.version, accept=True))
    assert ack.ok and ack.documents and ack.version == 2
    assert not any(s.startswith("SELECT jobs.id") for s in claimed), claimed
    if on_postgresql(store):
        assert len(claimed) == 1 and claimed[0].startswith("WITH changed_job AS"), claimed
    row = await store.get_job(job_id)
    assert (row.version, row.claimed) == (2, True)


async def test_a_claim_judged_on_a_fetch_another_replica_overtook_is_judged_on_what_is_stored(
        parts: ServiceParts, database_url: str) -> None:
    """The kept read is only a first guess: a job another replica canceled after the fetch is
    not claimed; the claim is judged again on the stored job and refused."""
    store = parts.store
    job_id = await new_job(store)
    fetch = await send(parts, FetchJob(job_id=job_id))
    other = JobStore(make_engine(database_url))
    try:
        done = await other.transition(job_id, Cancel(message="changed my mind"))
        assert done.written
    finally:
        await other.close()
        await other.engine.dispose()
    ack = await send(parts, AcknowledgeJob(job_id=job_id, version=fetch.version, accept=True))
    assert not ack.ok and ack.state is JobState.CANCELED and not ack.documents
    row = await store.get_job(job_id)
    assert (row.state, row.claimed) == (JobState.CANCELED.value, False)


async def test_a_change_on_a_moved_version_writes_none_of_its_parts(parts: ServiceParts) -> None:
    """The job's update, its event and its documents go together: on a version that has moved
    the write matches nothing, and neither the event nor the document is written (one
    statement on PostgreSQL, a transaction on SQLite)."""
    store = parts.store
    job_id = await new_job(store)
    single = on_postgresql(store)
    before = await store.get_job(job_id)
    history = {"version": 99, "at": 1.0, "state": "processing", "state_reasons": ["none"], "message": None}
    documents = {1: {"state": DocumentState.PROCESSING.value, "impressions_completed": 7}}

    def stale(conn):  # type: ignore[no-untyped-def]
        return _write_change(conn, job_id, before.version + 1, {"version": 99, "state": "processing"},
                             history, documents, single)

    def current(conn):  # type: ignore[no-untyped-def]
        return _write_change(conn, job_id, before.version, {"version": 99, "state": "processing"},
                             history, documents, single)

    hop = store._autocommit if single else store.run
    assert await hop(stale) is False
    after = await store.get_job(job_id)
    docs = await store.documents(job_id)
    async with store.reads() as s:
        events = list(await s.scalars(select(JobEventRow.version).where(JobEventRow.job_id == job_id)))
    assert (after.version, after.state) == (before.version, before.state)
    assert (docs[0].state, docs[0].impressions_completed) == (DocumentState.PENDING.value, 0)
    assert 99 not in events
    assert await hop(current) is True
    after = await store.get_job(job_id)
    docs = await store.documents(job_id)
    async with store.reads() as s:
        events = list(await s.scalars(select(JobEventRow.version).where(JobEventRow.job_id == job_id)))
    assert (after.version, after.state) == (99, "processing")
    assert (docs[0].state, docs[0].impressions_completed) == (DocumentState.PROCESSING.value, 7)
    assert events[-1] == 99


async def test_a_change_of_many_documents_is_written_whole(parts: ServiceParts) -> None:
    """A cancel of a job of ten documents changes them all: more than one statement takes on
    PostgreSQL, so it is written in a transaction instead, every document with the job."""
    store = parts.store
    job_id = await new_job(store, documents=10)
    with statements(store) as sent:
        done = await store.transition(job_id, Cancel(message="enough"))
    assert done.written and done.after.state is JobState.CANCELED
    docs = await store.documents(job_id)
    assert [d.number for d in docs] == list(range(1, 11))
    assert {d.state for d in docs} == {DocumentState.CANCELED.value}
    assert [d.object_key for d in docs] == [DocumentKey.input_key(job_id, n) for n in range(1, 11)]
    if on_postgresql(store):
        assert not any(s.startswith("WITH changed_job") for s in sent), sent


async def test_a_submit_is_one_read_a_statement_to_make_it_one_to_close_it_and_its_answer_matches_a_read(
        parts: ServiceParts) -> None:
    """A job submitted with its document: on PostgreSQL, the service with its device and what
    admission decides on (one read), the job with its document and first event (one
    statement), its close with the document's size, digest and pages (one statement; the job
    is not read back). The answer's view of the job is derived, not read: it is what reading
    the job shows."""
    store = parts.store
    ops = parts.jobs()

    async def body() -> AsyncIterator[bytes]:
        yield PDF

    with statements(store) as sent:
        row = await ops.create(User("alice", "admin"), ServiceKind.PRINT, "office", {}, "application/pdf",
                               "a.pdf", body())
    assert row.state == JobState.PENDING.value and "job-fetchable" in row.state_reasons
    if on_postgresql(store):
        assert len(sent) == 3, sent
        assert sent[0].startswith("SELECT services.id"), sent
        assert sent[1].startswith("WITH new_job AS") and sent[2].startswith("WITH changed_job AS"), sent
    derived = await store.job_info(row)  # the close's view, kept for this answer
    assert not store._views
    read = await store.job_info(row)  # nothing kept now: read
    assert derived == read
    assert [e.version for e in read.history] == [0, 1] and read.documents[0].size == len(PDF)
    assert read.documents[0].sha256 is not None and read.documents[0].state is DocumentState.PENDING
    async with store.reads() as s:
        doc = (await s.scalars(select(DocumentRow).where(DocumentRow.job_id == row.id))).one()
    assert (doc.pages, doc.object_key) == (1, DocumentKey.input_key(row.id, 1))
    assert (await store.get_job(row.id)).impressions_estimated == 1


async def submitted(parts: ServiceParts) -> int:
    """A print job submitted with its document through JobOperations, as the HTTP API does."""

    async def body() -> AsyncIterator[bytes]:
        yield PDF

    row = await parts.jobs().create(User("alice", "admin"), ServiceKind.PRINT, "office", {}, "application/pdf",
                                    "a.pdf", body())
    assert "job-fetchable" in row.state_reasons
    return row.id


def answered(reply: Reply) -> dict:
    """What a reply says, less what each message has of its own (its id and time)."""
    return reply.model_dump(exclude={"id", "ts", "re"})


async def test_a_fetch_after_its_submit_is_answered_from_the_closes_copy_which_is_what_a_read_shows(
        parts: ServiceParts) -> None:
    """The close of a job submitted with its document keeps the job as it wrote it: every column
    of the job and of its document is what a read shows. The device's fetch, which its doorbell
    brings, is answered from that copy with no statement, as a fetch that reads answers it; the
    claim that follows is judged on it too."""
    store = parts.store
    job_id = await submitted(parts)
    kept = store.kept(job_id)
    assert kept is not None
    row, docs = await store.job_with_documents(job_id)
    assert _columns(kept.row, _JOB_KEYS) == _columns(row, _JOB_KEYS)
    assert [_columns(d, _DOC_KEYS) for d in kept.documents] == [_columns(d, _DOC_KEYS) for d in docs]
    with statements(store) as sent:
        fetch = await send(parts, FetchJob(job_id=job_id))
    assert fetch.ok and fetch.version == row.version and fetch.document_count == 1
    assert sent == [], sent
    store._recent.pop(job_id)  # the same fetch, answered from a read
    with statements(store) as sent:
        read = await send(parts, FetchJob(job_id=job_id))
    assert sent, "a fetch without a kept copy reads the job"
    assert answered(fetch) == answered(read)
    with statements(store) as claimed:
        ack = await send(parts, AcknowledgeJob(job_id=job_id, version=fetch.version, accept=True))
    assert ack.ok and ack.documents and ack.version == fetch.version + 1
    assert not any(s.startswith("SELECT jobs.id") for s in claimed), claimed


async def test_a_fetch_answered_from_a_copy_another_replica_overtook_is_settled_by_its_claim(
        parts: ServiceParts, database_url: str) -> None:
    """The copy is a first guess: another replica cancels the job after its close; the fetch,
    answered from the copy, offers it, and the claim, written on the copy's version, writes
    nothing, is judged again on the stored job and refused: the job is not claimed, and its
    documents' URLs are not given. A fetch that is not an offer is answered from what is stored."""
    store = parts.store
    job_id = await submitted(parts)
    other = JobStore(make_engine(database_url))
    try:
        assert (await other.transition(job_id, Cancel(message="changed my mind"))).written
    finally:
        await other.close()
        await other.engine.dispose()
    fetch = await send(parts, FetchJob(job_id=job_id))
    assert fetch.ok and fetch.state is JobState.PENDING  # the copy's word
    ack = await send(parts, AcknowledgeJob(job_id=job_id, version=fetch.version, accept=True))
    assert not ack.ok and ack.state is JobState.CANCELED and not ack.documents
    row = await store.get_job(job_id)
    assert (row.state, row.claimed) == (JobState.CANCELED.value, False)
    assert store.kept(job_id) is None
    # Fetched again: no copy now, so what is stored answers.
    again = await send(parts, FetchJob(job_id=job_id))
    assert not again.ok and again.code == "not-fetchable" and again.state is JobState.CANCELED


async def test_a_fetch_after_a_transformed_submit_is_answered_as_a_read_answers_it(
        parts: ServiceParts, tmp_path: Path) -> None:
    """A JPEG to a PDF printer is transformed before its close, which writes the transform's
    columns beside the job's copy: that close keeps no copy, and the fetch reads the job (its
    ticket names the format the device gets)."""
    jpeg = photo_jpeg(tmp_path / "photo.jpg").read_bytes()

    async def body() -> AsyncIterator[bytes]:
        yield jpeg

    row = await parts.jobs().create(User("alice", "admin"), ServiceKind.PRINT, "office", {}, "image/jpeg",
                                    "photo.jpg", body())
    assert "job-fetchable" in row.state_reasons
    assert parts.store.kept(row.id) is None
    fetch = await send(parts, FetchJob(job_id=row.id))
    assert fetch.ok and fetch.ticket is not None
    assert fetch.ticket.model_dump(by_alias=True).get("document-format") == "application/pdf"


async def test_a_fetch_by_another_device_is_answered_from_what_is_stored(parts: ServiceParts) -> None:
    """A kept copy answers only its own device's fetch of a job waiting to be fetched."""
    store = parts.store
    job_id = await submitted(parts)
    assert store.kept(job_id) is not None
    out = await protocols[id(parts)].handle("dev-2", "up", encode(FetchJob(job_id=job_id)))
    reply = decode_down(encode(out[0][1]))
    assert isinstance(reply, Reply) and reply.code == "not-yours"


async def test_a_submits_first_commit_waits_for_no_flush_only_when_its_close_follows(
        parts: ServiceParts, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a submit with its document makes the job with ``synchronous_commit`` off
    for that statement alone: the close's commit, before the 201, flushes both. A job made
    without its document (the answer follows that commit) waits for the flush as before, and
    no connection keeps the setting."""
    made: list[tuple[bool, list[tuple]]] = []
    real = store_module._create_statement

    class Spy:
        def __init__(self, prepared: object, unflushed: bool) -> None:
            self.prepared, self.unflushed = prepared, unflushed

        def rows(self, conn: object, params: dict) -> list[tuple]:
            rows = self.prepared.rows(conn, params)  # type: ignore[attr-defined]
            made.append((self.unflushed, rows))
            return rows

    monkeypatch.setattr(store_module, "_create_statement",
                        lambda keys, documents, unflushed=False: Spy(real(keys, documents, unflushed), unflushed))
    ops = parts.jobs()
    user = User("alice", "admin")

    async def body() -> AsyncIterator[bytes]:
        yield PDF

    closed = await ops.create(user, ServiceKind.PRINT, "office", {}, "application/pdf", "a.pdf", body())
    waiting = await ops.create(user, ServiceKind.PRINT, "office", {}, "application/pdf", "b.pdf", None)
    assert "job-fetchable" in closed.state_reasons and waiting.state == JobState.PENDING_HELD.value
    if not on_postgresql(parts.store):
        assert made == []  # SQLite: a transaction on the database thread, no commit waits for the disk
        return
    (first, with_document), (second, without) = made
    assert first is True and with_document == [(closed.id, "off")]  # the setting was evaluated
    assert second is False and without == [(waiting.id,)]
    # More reads at once than there are held connections: every one of them answers "on".
    settings = await asyncio.gather(*(parts.store.read(
        lambda conn: conn.exec_driver_sql("SHOW synchronous_commit").scalar()) for _ in range(20)))
    assert set(settings) == {"on"}


async def test_a_downloads_check_reads_the_jobs_state_alone(parts: ServiceParts) -> None:
    """A device's download asks only whether its job is still under way: one statement reading
    one column, no row with its JSON columns decoded; a job that does not exist has no state."""
    store = parts.store
    job_id = await new_job(store)
    with statements(store) as sent:
        assert await store.job_state(job_id) == JobState.PENDING.value
    assert len(sent) == 1 and sent[0].startswith("SELECT jobs.state FROM jobs WHERE jobs.id = "), sent
    await store.transition(job_id, Cancel(message="canceled"))
    assert await store.job_state(job_id) == JobState.CANCELED.value
    assert await store.job_state(job_id + 1000) is None


async def test_a_close_judged_on_a_copy_that_is_no_longer_current_is_judged_again(parts: ServiceParts) -> None:
    """The caller's copy of a new job is stale (the job was canceled meanwhile): the close is
    judged again on what is stored, and refused, and the document's columns given with it are
    not written by it."""
    store = parts.store
    service = await store.service(ServiceKind.PRINT.value, "office")
    assert service is not None
    row = await store.create_job(kind=ServiceKind.PRINT, service=service, owner="alice", ticket={},
                                 documents=[{"format": "application/pdf"}], with_documents=False,
                                 key_for=DocumentKey.input_key)
    docs = await store.documents(row.id)
    known = Known(row, docs, [created_event(row)], None)
    await store.transition(row.id, Cancel(message="changed my mind"))
    with pytest.raises(InvalidTransition):
        await store.transition(row.id, Close(None), documents={1: {"size": 5, "sha256": "1" * 64}}, known=known,
                               view=True)
    stored = await store.get_job(row.id)
    assert stored.state == JobState.CANCELED.value
    assert (await store.documents(row.id))[0].size is None
    # A copy that is current: closed without a read, and the document's columns written with it.
    again = await store.create_job(kind=ServiceKind.PRINT, service=service, owner="alice", ticket={},
                                   documents=[{"format": "application/pdf"}], with_documents=False,
                                   key_for=DocumentKey.input_key)
    docs = await store.documents(again.id)
    with statements(store) as sent:
        done = await store.transition(again.id, Close(None), documents={1: {"size": 5, "sha256": "1" * 64}},
                                      known=Known(again, docs, [created_event(again)], None), view=True)
    assert done.written and done.after.state is JobState.PENDING
    assert not any(s.startswith("SELECT jobs.id") for s in sent), sent
    assert (await store.documents(again.id))[0].size == 5


def test_the_object_key_pattern_is_found_only_where_the_key_names_the_id_once() -> None:
    assert _key_pattern(DocumentKey.input_key, 3) == ("jobs/", "/doc-3")
    assert _key_pattern(lambda job, n: f"fixed-{n}", 1) is None
    assert _key_pattern(lambda job, n: f"{job}/{job}/{n}", 1) is None


async def test_a_report_judged_on_a_kept_copy_another_replica_changed_is_judged_on_what_is_stored(
        parts: ServiceParts, database_url: str) -> None:
    """This replica keeps the job as its last report wrote it; another replica (another
    JobStore on the same database) cancels it. The device's next report, judged on the kept
    copy, writes nothing (its version moved), is judged again on the stored job and answered
    ``stale`` with the cancel to adopt; a resent report is answered ``duplicate`` from what is
    stored, and a document's columns written on this replica make it read the job again."""
    store = parts.store
    job_id = await new_job(store)
    ack = await send(parts, AcknowledgeJob(job_id=job_id, version=1, accept=True))
    started = await send(parts, JobStatus(job_id=job_id, version=ack.version, state=JobState.PROCESSING))
    assert job_id in store._recent and store._recent[job_id].row.version == started.version
    other = JobStore(make_engine(database_url))
    try:
        await other.transition(job_id, Cancel(message="from the other replica"))
    finally:
        await other.close()
        await other.engine.dispose()
    report = DocumentStatus(job_id=job_id, document_number=1, version=started.version,
                            state=DocumentState.PROCESSING)
    reply = await send(parts, report)
    assert reply.code == "stale" and reply.version == started.version + 1, reply
    row = await store.get_job(job_id)
    assert row.cancel_requested and report.id not in row.applied_ids
    assert (await store.documents(job_id))[0].state == DocumentState.PENDING.value
    # On the adopted version: applied, and kept again; resent, a duplicate.
    stopping = JobStatus(job_id=job_id, version=reply.version, state=JobState.PROCESSING,
                         reasons=["processing-to-stop-point"])
    first = await send(parts, stopping)
    assert first.code == "ok", first
    assert (await send(parts, stopping)).code == "duplicate"
    await store.set_document(job_id, 1, pages=3)
    assert job_id not in store._recent
    with statements(store) as sent:
        ended = await send(parts, JobStatus(job_id=job_id, version=first.version, state=JobState.CANCELED))
    assert ended.code == "ok" and ended.state is JobState.CANCELED
    if on_postgresql(store):
        assert sent[0].startswith("SELECT jobs.id"), sent
    assert job_id not in store._recent  # ended: nothing more to judge
