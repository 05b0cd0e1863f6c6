"""Job store: rows <-> the sans-IO core, with optimistic concurrency on ``jobs.version``.

The only writer of the jobs, documents, devices and services tables (and of a fax job's
destination statuses): other modules read rows freely but change them through here.

Every change to a job goes through ``JobStore.transition``: load the row, rebuild the core
``Job``, apply the event, write back ``WHERE version = old``; if another writer (another
replica, another handler) got there first, reload and try again. So the database stays the
single truth with no in-memory locks.

The hot path (every device message, every submit) is written as SQLAlchemy Core statements
run as one unit (``JobStore.run``): read, judge and write in one transaction and one hop to the
database. On SQLite that hop is one call to a dedicated database thread with the plain
``sqlite3`` driver (aiosqlite hops to its thread and back once per statement, and that hop,
not SQLite, cost most of a job's CPU); on PostgreSQL it is one greenlet (kept from an earlier
hop: cloud_service.greenlets) that takes a pooled connection, runs the transaction and gives
the connection back (``_in_transaction``), and a single-statement hop (``_autocommit``) runs on
a connection held between hops (cloud_service.held). The
statements every device message runs go to the driver's cursor (cloud_service.prepared).
Rows come back as detached ORM objects (``JobRow``, ``DocumentRow``, ...) built without a
session (``detached``), so callers read them as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import configure_mappers

from cloud_service.db import (
    DeviceRow,
    DocumentRow,
    JobDestinationsRow,
    JobEventRow,
    JobRow,
    ServiceRow,
    make_thread_engine,
)
from cloud_service.greenlets import spawn
from cloud_service.held import HeldConnections, held_limit
from cloud_service.prepared import Prepared
from cloud_service.worker import WorkerThread
from schemas.api import DocumentInfo, JobEvent, JobInfo
from schemas.enums import DocumentState, JobState, ServiceKind
from schemas.model.document import Document
from schemas.model.job import Event, InvalidTransition, Job
from schemas.model.reports import Verdict
from schemas.model.service import job_overlay

#: How many recent device message ids a job remembers for duplicate detection.
APPLIED_IDS_KEPT = 16
#: How many jobs' views read with a change are kept for the answer that follows it.
VIEWS_KEPT = 256
#: How many print jobs a replica keeps as it last wrote them (``JobStore._remember``).
RECENT_KEPT = 4096
#: Fetchable jobs a hello's answer lists at most (the device fetches the rest as they come).
HELLO_FETCHABLE = 200

T = TypeVar("T")
R = TypeVar("R")

_jobs = JobRow.__table__
_docs = DocumentRow.__table__
_devices = DeviceRow.__table__
_services = ServiceRow.__table__
_events = JobEventRow.__table__
_destinations = JobDestinationsRow.__table__
_TABLES = {t.name: t for t in (_jobs, _docs, _devices, _services)}
_TERMINAL = [s.value for s in JobState if s.terminal]

# Built once: SQLAlchemy caches each one's compiled form, so a call costs its parameters only.
_SELECT_JOB = select(_jobs).where(_jobs.c.id == bindparam("job_id"))
_SELECT_DOCS = select(_docs).where(_docs.c.job_id == bindparam("job_id")).order_by(_docs.c.number)
_SELECT_DEVICE = select(_devices).where(_devices.c.id == bindparam("device_id"))
_SELECT_ACTIVE = select(_jobs).where(_jobs.c.device_id == bindparam("device_id"), _jobs.c.claimed.is_(True),
                                     _jobs.c.state.not_in(_TERMINAL))
_SELECT_FETCHABLE = (select(_jobs).where(_jobs.c.device_id == bindparam("device_id"),
                                         _jobs.c.state == JobState.PENDING.value, _jobs.c.claimed.is_(False))
                     .order_by(_jobs.c.id).limit(bindparam("limit")))
#: A job and its documents in one statement (one row per document, one with NULLs if none).
_SELECT_JOB_DOCS = (select(_jobs, _docs).select_from(_jobs.outerjoin(_docs, _docs.c.job_id == _jobs.c.id))
                    .where(_jobs.c.id == bindparam("job_id")).order_by(_docs.c.number))
_JOB_KEYS = tuple(c.key for c in _jobs.columns)
_DOC_KEYS = tuple(c.key for c in _docs.columns)
_DOC_JOB_ID = len(_JOB_KEYS) + _DOC_KEYS.index("job_id")
_SELECT_JOBS = select(_jobs).where(_jobs.c.id.in_(bindparam("ids", expanding=True)))
#: What a supervisor sweep looks at (cloud_service.supervisor), all in one hop.
_SELECT_DEVICES_IN = select(_devices).where(_devices.c.id.in_(bindparam("ids", expanding=True)))
#: Device ids per query of a sweep (well under SQLite's limit on parameters).
SWEEP_DEVICES_PER_QUERY = 500
_SELECT_CLAIMED = (select(_jobs).where(_jobs.c.claimed.is_(True), _jobs.c.state.not_in(_TERMINAL))
                   .order_by(_jobs.c.id))
_SELECT_WAITING = (select(_jobs).where(_jobs.c.state == JobState.PENDING.value, _jobs.c.claimed.is_(False),
                                       _jobs.c.updated_at <= bindparam("before"))
                   .order_by(_jobs.c.id).limit(bindparam("limit")))
_SELECT_INCOMING = select(_jobs).where(_jobs.c.state == JobState.PENDING_HELD.value,
                                       _jobs.c.updated_at <= bindparam("before"))
_SELECT_DOC = select(_docs).where(_docs.c.job_id == bindparam("job_id"), _docs.c.number == bindparam("number"))
_SELECT_SERVICE = select(_services).where(_services.c.kind == bindparam("kind"), _services.c.name == bindparam("name"))
#: A service's not-ended jobs, counted on the (device, state) index of jobs: a service's ended
#: history, however long, is not read.
_QUEUED = (select(func.count()).select_from(_jobs)
           .where(_jobs.c.device_id == _services.c.device_id,
                  _jobs.c.state.in_([s.value for s in JobState if not s.terminal]),
                  _jobs.c.service_id == _services.c.id)
           .scalar_subquery())
#: Services with their device and queued jobs (``JobStore.services``), columns labelled by table.
_SELECT_SERVICES = (select(*[c.label(f"s_{c.key}") for c in _services.c], *[c.label(f"d_{c.key}") for c in _devices.c],
                           _QUEUED.label("queued"))
                    .join_from(_services, _devices, _devices.c.id == _services.c.device_id)
                    .order_by(_services.c.name))
#: A device's services and those of any device named as given (``_services_of_or_named``).
#: (Kinds and names each a list: the index on (kind, name) finds the pairs among them.)
_SELECT_OWNED_OR_NAMED = select(_services).where(or_(
    _services.c.device_id == bindparam("device_id"),
    and_(_services.c.kind.in_(bindparam("kinds", expanding=True)),
         _services.c.name.in_(bindparam("names", expanding=True)))))
_DEVICE_SERVICES = select(_services).where(_services.c.device_id == bindparam("device_id"))
_LOCK_DEVICE = select(_devices.c.id).where(_devices.c.id == bindparam("device_id")).with_for_update()
_SELECT_EVENTS = select(_events).where(_events.c.job_id == bindparam("job_id")).order_by(_events.c.id)
_INSERT_JOB = insert(_jobs)
_INSERT_DOC = insert(_docs)
_INSERT_DEVICE = insert(_devices)
_SELECT_DESTINATIONS_VERSION = select(_destinations.c.version).where(_destinations.c.job_id == bindparam("job_id"))
_INSERT_DESTINATIONS = insert(_destinations)
_UPDATE_DESTINATIONS = (update(_destinations).where(_destinations.c.job_id == bindparam("b_job_id"))
                        .values(statuses=bindparam("b_statuses"), updated_at=bindparam("b_at"),
                                version=bindparam("b_version")))
_UPDATE_DOC = (update(_docs).where(_docs.c.job_id == bindparam("b_job_id"), _docs.c.number == bindparam("b_number"))
               .values(state=bindparam("b_state"), impressions_completed=bindparam("b_impressions")))

# The statements every device message runs, on the driver's cursor (cloud_service.prepared).
_JOB_DOCS = Prepared(_SELECT_JOB_DOCS)
_DOCS = Prepared(_SELECT_DOCS)
#: The columns of a history event, as ``_EVENT`` and ``_change_statement`` write them.
_EVENT_KEYS = ("job_id", "version", "at", "state", "state_reasons", "message")
_EVENT = Prepared(insert(_events).values({k: bindparam(k) for k in _EVENT_KEYS}))
_DOC_STATES = Prepared(_UPDATE_DOC)
_JOB = Prepared(_SELECT_JOB)
#: A job's state alone: no JSON column decoded, no row object built.
_JOB_STATE = Prepared(select(_jobs.c.state).where(_jobs.c.id == bindparam("job_id")))
_DEVICE = Prepared(_SELECT_DEVICE)
_LOCK = Prepared(_LOCK_DEVICE)
_OWNED_OR_NAMED = Prepared(select(_services).where(or_(
    _services.c.device_id == bindparam("device_id"),
    and_(_services.c.kind == any_(bindparam("kinds", type_=ARRAY(String))),
         _services.c.name == any_(bindparam("names", type_=ARRAY(String)))))))
_INSERT_SERVICE_ROW = Prepared(insert(_services).values({c.key: bindparam(c.key, type_=c.type)
                                                         for c in _services.columns if c.key != "id"}))
#: A new service's columns the device did not give (none, from a device's attributes).
_NO_SERVICE_VALUES: dict[str, Any] = {c.key: None for c in _services.columns if c.key != "id"}
_EVENTS = Prepared(_SELECT_EVENTS)
_SERVICES_OF_DEVICE = Prepared(_DEVICE_SERVICES)


@functools.lru_cache(maxsize=256)
def _updater(table: str, keys: tuple[str, ...], columns: tuple[str, ...]) -> Prepared:
    """``UPDATE table SET k = :v_k ... WHERE c = :w_c ...``, built once per set of columns.

    Building a statement costs several times executing a cached one, and the hot path updates
    the same few column sets over and over.
    """
    t = _TABLES[table]
    return Prepared(update(t).where(*(t.c[c] == bindparam(f"w_{c}") for c in columns))
                    .values({k: bindparam(f"v_{k}") for k in keys}))


#: Changed documents one statement writes with their job (``_change_statement``); a change of
#: more (a cancel of a job of many documents) takes a transaction instead.
CHANGE_STATEMENT_DOCS = 8


@functools.lru_cache(maxsize=256)
def _change_statement(keys: tuple[str, ...], event: bool, documents: tuple[tuple[str, ...], ...]) -> Prepared:
    """PostgreSQL: a job's update conditioned on its version, its history event and its
    documents' changed columns (one column set per document), as one statement of
    data-modifying CTEs; it returns 1 if the job was written, 0 if its version had moved
    (nothing written then: the event and the documents are written only from the job's
    updated row).

    One statement is atomic on its own, so the change needs no transaction: one round trip
    where ``BEGIN``, the update, the insert, the documents and ``COMMIT`` took five. A
    concurrent writer is handled as before: the update re-checks the version on the row it
    locks, and matches nothing if the other writer moved it. Built once per shape.
    """
    job = (update(_jobs).where(_jobs.c.id == bindparam("w_id"), _jobs.c.version == bindparam("w_version"))
           .values({k: bindparam(f"v_{k}") for k in keys}).returning(_jobs.c.id).cte("changed_job"))
    statement = select(func.count()).select_from(job)
    if event:
        statement = statement.add_cte(insert(_events).from_select(_EVENT_KEYS, select(
            job.c.id, *(bindparam(f"e_{k}", type_=_events.c[k].type) for k in _EVENT_KEYS[1:]))).cte("event"))
    for i, columns in enumerate(documents):
        statement = statement.add_cte(
            update(_docs).where(_docs.c.job_id == select(job.c.id).scalar_subquery(),
                                _docs.c.number == bindparam(f"d{i}_number"))
            .values({k: bindparam(f"d{i}_{k}") for k in columns}).cte(f"document_{i}"))
    return Prepared(statement)


#: PostgreSQL: the statement's own (implicit) transaction commits without waiting for its WAL
#: to reach the disk (``synchronous_commit`` off for that transaction only, as ``SET LOCAL``).
_NO_FLUSH = select(literal_column("set_config('synchronous_commit', 'off', true)", String)
                   .label("unflushed")).cte("no_flush")


@functools.lru_cache(maxsize=64)
def _create_statement(keys: tuple[str, ...], documents: int, unflushed: bool = False) -> Prepared:
    """PostgreSQL: a new job, its documents and its first history event as one statement
    (data-modifying CTEs, the documents and the event taking the job's new id); it returns
    the id. One round trip where a transaction of three inserts took five.

    ``unflushed``: its commit does not wait for the WAL flush (``JobStore.create_job``'s
    ``flushed_by_next_commit``); the setting is local to the statement's transaction."""
    job = insert(_jobs).values({k: bindparam(f"j_{k}") for k in keys}).returning(_jobs.c.id).cte("new_job")
    # Selecting the setting's CTE makes PostgreSQL evaluate it (an unreferenced one is skipped).
    statement = (select(job.c.id, _NO_FLUSH.c.unflushed).select_from(job.join(_NO_FLUSH, true()))
                 if unflushed else select(job.c.id))
    for i in range(documents):
        key = (bindparam(f"d{i}_key_prefix", type_=String) + cast(job.c.id, String)
               + bindparam(f"d{i}_key_suffix", type_=String))
        statement = statement.add_cte(insert(_docs).from_select(_NEW_DOC_KEYS, select(
            job.c.id, *(key if k == "object_key" else bindparam(f"d{i}_{k}", type_=_docs.c[k].type)
                        for k in _NEW_DOC_KEYS[1:]))).cte(f"document_{i}"))
    return Prepared(statement.add_cte(insert(_events).from_select(_EVENT_KEYS, select(
        job.c.id, *(bindparam(f"e_{k}", type_=_events.c[k].type) for k in _EVENT_KEYS[1:]))).cte("event")))


#: A hello's rows, by the part of the answer each is for (``_hello_statement``).
_HELD, _CLAIMED, _FETCHABLE = 0, 1, 2


@functools.lru_cache(maxsize=32)
def _hello_statement(keys: tuple[str, ...], held: bool) -> Prepared:
    """PostgreSQL: what a device's ``hello`` does, as one statement.

    The device's row is written by an ``INSERT ... ON CONFLICT DO UPDATE`` of the ``keys``
    columns, only where one of them differs (as ``_set_device`` writes), in a data-modifying
    CTE; the query under it returns the held jobs by id, the device's claimed active jobs and
    its first fetchable ones, each row tagged with its part (``_HELD``, ``_CLAIMED``,
    ``_FETCHABLE``). One round trip where the read of the device, its write and the three
    reads took five. The reads need no snapshot shared with the write (they read jobs, it
    writes the device), so one statement, atomic on its own, is all it needs.
    """
    new = pg_insert(_devices).values({c.key: bindparam(f"n_{c.key}", type_=c.type) for c in _devices.columns})
    device = (new.on_conflict_do_update(
        index_elements=[_devices.c.id], set_={k: new.excluded[k] for k in keys},
        where=or_(*(_devices.c[k].is_distinct_from(new.excluded[k]) for k in keys)))
        .returning(_devices.c.id).cte("device"))
    # Constants inline: ``Prepared`` passes only the parameters named here.
    not_ended = and_(*(_jobs.c.state != literal_column(f"'{state}'", String) for state in _TERMINAL))
    mine = _jobs.c.device_id == bindparam("device_id")
    parts = []
    if held:
        parts.append(select(literal_column(str(_HELD), Integer).label("part"), _jobs)
                     .where(_jobs.c.id == any_(bindparam("ids", type_=ARRAY(Integer)))))
    parts.append(select(literal_column(str(_CLAIMED), Integer).label("part"), _jobs)
                 .where(mine, _jobs.c.claimed.is_(True), not_ended))
    fetchable = (select(_jobs).where(mine, _jobs.c.state == literal_column(f"'{JobState.PENDING.value}'", String),
                                     _jobs.c.claimed.is_(False))
                 .order_by(_jobs.c.id).limit(bindparam("limit")).subquery("fetchable"))
    parts.append(select(literal_column(str(_FETCHABLE), Integer).label("part"), *fetchable.c))
    return Prepared(union_all(*parts).add_cte(device))


def _key_pattern(key_for: KeyFor, number: int) -> tuple[str, str] | None:
    """(prefix, suffix) such that document ``number``'s object key of job ``id`` is prefix + id
    + suffix; None if ``key_for`` does not name the id that way."""
    a, b = key_for(918273645, number), key_for(546372819, number)
    if a.count("918273645") != 1:
        return None
    prefix, suffix = a.split("918273645")
    return (prefix, suffix) if b == f"{prefix}546372819{suffix}" else None


#: The document state columns a device's report changes (``_DOC_STATES``).
_DOC_STATE_KEYS = ("impressions_completed", "state")


def _write_change(conn: Connection, job_id: int, version: int, values: Mapping[str, Any],
                  event: Mapping[str, Any] | None, documents: Mapping[int, Mapping[str, Any]],
                  single: bool) -> bool:
    """Write a judged change: the job's ``values`` where its version is still ``version``, its
    history ``event`` and its ``documents``' columns (by number). False if the version had
    moved (another writer got there first; nothing written). ``single``: as one statement
    (PostgreSQL, outside a transaction); else as several, inside the caller's transaction."""
    if single:
        params: dict[str, Any] = {f"v_{k}": v for k, v in values.items()}
        params.update(w_id=job_id, w_version=version)
        if event is not None:
            params.update({f"e_{k}": event[k] for k in _EVENT_KEYS[1:]})
        shape = []
        for i, (number, columns) in enumerate(documents.items()):
            params[f"d{i}_number"] = number
            params.update({f"d{i}_{k}": v for k, v in columns.items()})
            shape.append(tuple(sorted(columns)))
        statement = _change_statement(tuple(sorted(values)), event is not None, tuple(shape))
        return bool(statement.rows(conn, params)[0][0])
    if _update(conn, "jobs", {"id": job_id, "version": version}, values) != 1:
        return False
    if event is not None:
        _EVENT.execute(conn, {"job_id": job_id, **event})
    states = []
    for number, columns in documents.items():
        if tuple(sorted(columns)) == _DOC_STATE_KEYS:  # a report's: all in one driver call
            states.append({"b_job_id": job_id, "b_number": number, "b_state": columns["state"],
                           "b_impressions": columns["impressions_completed"]})
        else:
            write_document(conn, job_id, number, columns)
    if states:
        _DOC_STATES.execute_many(conn, states)
    return True


def _update(conn: Connection, table: str, where: Mapping[str, Any], values: Mapping[str, Any]) -> int:
    """Update the rows matching ``where``; how many it matched."""
    statement = _updater(table, tuple(sorted(values)), tuple(sorted(where)))
    params = {f"v_{k}": v for k, v in values.items()}
    params.update({f"w_{c}": v for c, v in where.items()})
    return statement.execute(conn, params)


def detached(cls: type[R], values: Mapping[str, Any]) -> R:
    """An ORM object of ``cls`` holding ``values`` (every column), made without a session.

    What a session's loader does, less its identity map and events: a few microseconds where
    a query through the ORM costs a few hundred. Callers read it like any detached row.
    """
    obj = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    return obj  # type: ignore[no-any-return]


def _columns(obj: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The values of an ORM row's columns ``keys``, read from its ``__dict__`` where ``detached``
    and the ORM's loader put them: the ORM's attribute descriptor costs a call per column, and a
    report's copy of its job reads some forty."""
    values = obj.__dict__
    try:
        return {k: values[k] for k in keys}
    except KeyError:  # an attribute expired or never loaded: the ORM loads it
        return {k: getattr(obj, k) for k in keys}


def _job_row(values: Mapping[str, Any]) -> JobRow:
    return detached(JobRow, values)


def _doc_rows(conn: Connection, job_id: int) -> list[DocumentRow]:
    return [detached(DocumentRow, dict(zip(_DOC_KEYS, r, strict=True))) for r in _DOCS.rows(conn, {"job_id": job_id})]


def _read_job_docs(conn: Connection, job_id: int) -> tuple[JobRow, list[DocumentRow]]:
    """A job and its documents (by number) in one statement; JobNotFound if there is no such job."""
    rows = _JOB_DOCS.rows(conn, {"job_id": job_id})
    if not rows:
        raise JobNotFound(job_id)
    split = len(_JOB_KEYS)
    job = _job_row(dict(zip(_JOB_KEYS, rows[0][:split], strict=True)))
    docs = [detached(DocumentRow, dict(zip(_DOC_KEYS, r[split:], strict=True))) for r in rows
            if r[_DOC_JOB_ID] is not None]
    return job, docs


def _read_job(conn: Connection, job_id: int) -> JobRow:
    found = _JOB.mappings(conn, {"job_id": job_id})
    if not found:
        raise JobNotFound(job_id)
    return _job_row(found[0])


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``work`` in one transaction of a pooled connection: checkout, BEGIN, ``work``, COMMIT (or
    ROLLBACK), checkin, all inside the one greenlet ``JobStore.run`` spawns.

    This is what ``AsyncEngine.begin()`` and ``AsyncConnection.run_sync`` do, less their
    greenlet per step: those spawn one each for the checkout, the begin, ``work``, the commit
    and the close. Measured through ``JobStore.run`` on a local PostgreSQL, a transaction of one
    SELECT cost about 1.4 ms of CPU that way and 1.05 ms this way. The driver's I/O still runs
    on the event loop.
    """
    with engine.begin() as conn:
        return work(conn)


def _in_autocommit(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``work`` on a pooled connection of an autocommit engine (``JobStore.read``), in one greenlet."""
    with engine.connect() as conn:
        return work(conn)


class JobNotFound(Exception):
    pass


class _InTransaction:
    """What a ``single`` attempt of a transition returns when its write needs a transaction."""


_IN_TRANSACTION = _InTransaction()


#: Formats the object key of document ``number`` of job ``job_id`` (cloud_service.documents).
KeyFor = Callable[[int, int], str]


class ConcurrentUpdate(Exception):
    pass


@dataclass(frozen=True)
class ServicesRefused:
    """Why a device's services were not recorded: ``not-yours`` or ``too-many-services``."""

    code: str
    message: str


#: What job_info shows besides the row: documents, history events, the device while the job waits.
ViewParts = tuple[list[DocumentRow], list[Any], DeviceRow | None]


@dataclass(frozen=True)
class SweepView:
    """A supervisor sweep's reading of the database (``JobStore.sweep_view``)."""

    #: The devices of the claimed and the fetchable jobs (not every device).
    devices: list[DeviceRow]
    claimed: list[JobRow]
    fetchable: list[JobRow]
    incoming: list[JobRow]


@dataclass
class Transition:
    """The outcome of applying an event: before/after core jobs and the stored row."""

    before: Job
    after: Job
    row: JobRow
    #: Set when the chosen outcome was a verdict (the report is answered, nothing written).
    verdict: Verdict | None = None
    #: True when the row was written (a state change or a remembered message id).
    written: bool = False
    #: What job_info shows of the job after the change, when asked for (``view``).
    view: ViewParts | None = None
    #: The job's document rows after the change (as written), when it was written.
    documents: list[DocumentRow] | None = None

    @property
    def changed(self) -> bool:
        return self.after.version != self.before.version


@dataclass(frozen=True)
class WithDocuments:
    """A transition callback that also reads the job's document rows (read with the job, in the
    same statement): for a decision whose answer is built from them, such as a claim's
    document URLs."""

    decide: Callable[[Job, JobRow, list[DocumentRow]], Event | Verdict | None]


@dataclass(frozen=True)
class Known:
    """A job as its caller holds it, current as far as it knows (a job it has just created):
    a transition judges it without reading it first, and derives the view of the changed job
    rather than reading it. The write is conditioned on its version as always; if it was not
    current, or the outcome is anything but a written change, the job is read and judged again."""

    row: JobRow
    documents: list[DocumentRow]
    #: Its history events, as ``_EVENTS`` reads them (version, at, state, state_reasons, message);
    #: None if not known (then a view is read, not derived).
    history: list[dict[str, Any]] | None = None
    #: Its device (what a waiting job's view shows of it), or None.
    device: DeviceRow | None = None
    #: Every column of the job and of its documents as stored (a job this request has just
    #: made, nothing written beside it since): kept after the change as a read would be.
    whole: bool = False


#: What ``JobStore.transition`` applies: an event, or a callback that picks one on the current job.
Chooser = Event | Callable[[Job, JobRow], Event | Verdict | None] | WithDocuments


def core_job(row: JobRow, documents: list[DocumentRow] | tuple[()] = ()) -> Job:
    """The model's Job for a stored row and its document rows."""
    output = row.kind == ServiceKind.SCAN.value  # a scan job's documents are the device's output
    docs = tuple(Document(d.number, DocumentState(d.state), d.impressions_completed, output, d.size, d.sha256)
                 for d in documents)
    return Job(state=JobState(row.state), reasons=tuple(row.state_reasons), message=row.state_message,
               version=row.version, claimed=row.claimed, cancel_requested=row.cancel_requested,
               impressions_completed=row.impressions_completed, started=row.started, documents=docs)


class ChangeFeed:
    """In-process wake-ups for event streams. Only a hint: streams also poll the database,
    so a change made by another replica is seen too."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}

    def notify(self, job_id: int) -> None:
        for ev in self._waiters.get(job_id, ()):
            ev.set()

    @asynccontextmanager
    async def watch(self, job_id: int) -> AsyncIterator[asyncio.Event]:
        ev = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(ev)
        try:
            yield ev
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[job_id]


#: Entries of the known-services hint kept before it starts again from empty.
MAX_KNOWN_SERVICES = 200_000


class JobStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        #: Reads that need no transaction around them. On PostgreSQL they run in autocommit: a
        #: transaction would add BEGIN and ROLLBACK, two round trips to a SELECT's one.
        autocommit = self._postgresql = engine.dialect.name == "postgresql"
        self._read_engine = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        self.reads = async_sessionmaker(self._read_engine, expire_on_commit=False)
        #: What ``run`` and ``read`` use on PostgreSQL: the async engine's own synchronous face,
        #: driven from one greenlet per transaction (see ``_in_transaction``).
        self._sync_engine = engine.sync_engine
        self._read_sync_engine = self._read_engine.sync_engine
        #: PostgreSQL: the autocommit hops' connections, held between hops (cloud_service.held).
        limit = held_limit(engine.sync_engine.pool.size()) if autocommit else 0
        self._held = HeldConnections(self._read_sync_engine, limit) if limit else None
        self.feed = ChangeFeed()
        #: (device, kind, name) of services this replica has seen written: a hint that a report
        #: of them may take the unlocked path of ``upsert_services`` (a wrong hint costs a hop).
        self._known_services: set[tuple[str, str, str]] = set()
        configure_mappers()  # _detached rows need the mappers' attribute machinery set up
        #: job id -> (version, what job_info shows of it), read by the change that made that
        #: version for the answer that follows it (a few, the oldest dropped first).
        self._views: OrderedDict[int, tuple[int, ViewParts]] = OrderedDict()
        #: job id -> the print job as this replica last wrote it, not ended: the next change
        #: of it is judged on this copy, without a read (``_remember``).
        self._recent: OrderedDict[int, Known] = OrderedDict()
        #: SQLite: the same database through the plain driver, used by one thread of our own.
        self._thread_engine: Engine | None = make_thread_engine(engine)
        self._thread = WorkerThread("db") if self._thread_engine is not None else None
        #: The database thread's connection, kept open between transactions (``_run_here``).
        self._thread_conn: Connection | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` as one transaction in one hop to the database; its result.

        ``work`` is plain synchronous code (Core statements, the model's judgement): it runs on
        the database thread (SQLite) or inside the async connection's greenlet (PostgreSQL),
        so it must not touch the event loop. Committed if it returns, rolled back if it raises.
        """
        if self._thread is not None:
            return await self._thread.call(lambda: self._run_here(work))
        return await spawn(_in_transaction, self._sync_engine, work)

    async def _autocommit(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` in one hop; on PostgreSQL each of its statements commits on
        its own (no BEGIN and COMMIT round trips), on a held connection (no pool checkout: see
        cloud_service.held); on SQLite they share one transaction."""
        if self._thread is not None:
            return await self._thread.call(lambda: self._run_here(work))
        if self._held is not None and not self._held.closed:
            return await self._held.run(work)
        return await spawn(_in_autocommit, self._read_sync_engine, work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run read-only ``work(connection)`` in one hop to the database; its result.

        Unlike ``run`` there is no transaction on PostgreSQL (autocommit): no BEGIN and COMMIT,
        so a SELECT is one round trip, not three. Each statement sees what was committed when
        it started, as it would in PostgreSQL's default READ COMMITTED transaction; ``work``
        must not lock rows (``FOR UPDATE``) nor write. SQLite reads go to the database thread
        as ``run``'s work does (a transaction there costs no round trip).
        """
        return await self._autocommit(work)

    def _run_here(self, work: Callable[[Connection], T]) -> T:
        """On the database thread: ``work`` in a transaction on the thread's one connection.

        The connection is kept from one call to the next (the thread runs one at a time): taking
        it from the pool and giving it back cost more than the transaction's own BEGIN and COMMIT.
        """
        conn = self._thread_conn
        if conn is None or conn.invalidated or conn.closed:
            assert self._thread_engine is not None
            if conn is not None:
                conn.close()
            conn = self._thread_conn = self._thread_engine.connect()
        with conn.begin():
            return work(conn)

    def _close_here(self) -> None:
        """On the database thread: give back its connection and close the engine's."""
        if self._thread_conn is not None:
            self._thread_conn.close()
            self._thread_conn = None
        if self._thread_engine is not None:
            self._thread_engine.dispose()

    async def close(self) -> None:
        """Release the database thread and its connections, and give back the held ones (the
        async engine is the caller's)."""
        if self._held is not None:
            await self._held.close()
        if self._thread is not None:
            await self._thread.call(self._close_here)  # its connections belong to the database thread
            thread, self._thread = self._thread, None
            await asyncio.to_thread(thread.stop)

    # ------------------------------------------------------------------ jobs

    async def create_job(self, *, kind: ServiceKind, service: ServiceRow, owner: str, ticket: dict,
                         documents: list[dict], with_documents: bool, key_for: KeyFor | None = None,
                         columns: dict | None = None, flushed_by_next_commit: bool = False) -> JobRow:
        """Insert a job and its documents; the job is fetchable at once if documents are in.

        ``columns``: the admission and retention columns decided at submit, written with the
        row. ``key_for`` names each document's object once the job has its id.

        ``flushed_by_next_commit``: the caller commits again before anyone learns of this job
        (a submit with its document closes the job before its 201), so on PostgreSQL this
        commit does not wait for the disk. The WAL is written in order and a commit waits
        until the WAL up to its own record is on disk, so the close's commit makes this one
        durable too; a database that crashes before it loses a job no client was told of, as
        if its insert had been rolled back. (On SQLite, in WAL mode with ``synchronous=NORMAL``,
        no commit waits for the disk.)
        """
        if documents and key_for is None:
            raise ValueError("documents need key_for to name their objects")
        core = Job.created(with_documents)
        now = time.time()
        values: dict[str, Any] = {c.key: None for c in _jobs.columns}
        values.update(uuid=f"urn:uuid:{uuid.uuid4()}", kind=kind.value, service_id=service.id,
                      service_name=service.name, device_id=service.device_id, owner=owner,
                      state=core.state.value, state_reasons=list(core.reasons), state_message=None,
                      version=core.version, claimed=False, cancel_requested=False, started=False,
                      impressions_completed=0, ticket=ticket, applied_ids=[], created_at=now,
                      updated_at=now, completed_at=None, **(columns or {}))
        del values["id"]
        history = {"version": core.version, "at": now, "state": core.state.value,
                   "state_reasons": list(core.reasons), "message": None}

        def work(conn: Connection) -> JobRow:
            job_id = conn.execute(_INSERT_JOB, values).inserted_primary_key[0]
            if documents:
                assert key_for is not None
                conn.execute(_INSERT_DOC, [
                    _new_document(job_id, number, doc.get("name"), doc["format"], key_for(job_id, number),
                                  doc.get("size"), doc.get("sha256"))
                    for number, doc in enumerate(documents, start=1)])
            _EVENT.execute(conn, {"job_id": job_id, **history})
            return _job_row({**values, "id": job_id})

        if self._thread is not None:
            return await self.run(work)
        patterns = [_key_pattern(key_for, n) for n in range(1, len(documents) + 1)] if key_for else []
        if None in patterns:
            return await self.run(work)
        # PostgreSQL: one statement, no transaction (one round trip, not five). A document's
        # object key names the job's id, which the statement makes: it writes the key as
        # prefix || id || suffix.
        params: dict[str, Any] = {f"j_{k}": v for k, v in values.items()}
        params.update({f"e_{k}": v for k, v in history.items() if k != "job_id"})
        for i, (doc, pattern) in enumerate(zip(documents, patterns, strict=True)):
            assert pattern is not None
            columns = _new_document(0, i + 1, doc.get("name"), doc["format"], "", doc.get("size"), doc.get("sha256"))
            params.update({f"d{i}_{k}": columns[k] for k in _NEW_DOC_KEYS[1:] if k != "object_key"})
            params.update({f"d{i}_key_prefix": pattern[0], f"d{i}_key_suffix": pattern[1]})
        statement = _create_statement(tuple(sorted(values)), len(documents), flushed_by_next_commit)
        job_id = (await self._autocommit(lambda conn: statement.rows(conn, params)))[0][0]
        return _job_row({**values, "id": job_id})

    async def get_job(self, job_id: int) -> JobRow:
        return await self.read(lambda conn: _read_job(conn, job_id))

    async def job_state(self, job_id: int) -> str | None:
        """The job's state (``JobState`` value), None if there is no such job: for a check that
        needs nothing else (a download's "still under way")."""
        found = await self.read(lambda conn: _JOB_STATE.rows(conn, {"job_id": job_id}))
        return found[0][0] if found else None

    async def job_with_documents(self, job_id: int, remember: bool = False) -> tuple[JobRow, list[DocumentRow]]:
        """A job and its documents (by number) in one hop; JobNotFound if there is no such job.

        ``remember``: keep what was read as the job's copy for its next change (``_remember``),
        unless this replica holds a copy as new already: a device's claim follows its fetch,
        and is then judged without reading the job again. The caller must not change the rows.
        """
        row, docs = await self.read(lambda conn: _read_job_docs(conn, job_id))
        if remember:
            kept = self._recent.get(job_id)
            if kept is None or kept.row.version < row.version:
                self._remember(row, docs)
        return row, docs

    async def get_jobs(self, job_ids: list[int] | set[int]) -> dict[int, JobRow]:
        """The jobs among ``job_ids`` that exist, by id, in one query.

        A device's ``hello`` lists up to ``MAX_JOBS_PER_HELLO`` jobs; reading them one by one
        cost a transaction each and let one device's hellos crowd out everyone else's work.
        """
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        return await self.read(lambda conn: _jobs_by_id(conn, ids))

    async def documents(self, job_id: int) -> list[DocumentRow]:
        return await self.read(lambda conn: _doc_rows(conn, job_id))

    async def add_document(self, job_id: int, number: int, *, name: str | None, document_format: str,
                           object_key: str) -> DocumentRow:
        """Document ``number`` of a job, added if it is not there yet (idempotent)."""
        self._recent.pop(job_id, None)
        def work(conn: Connection) -> DocumentRow:
            found = conn.execute(_SELECT_DOC, {"job_id": job_id, "number": number}).mappings().first()
            if found is not None:
                return detached(DocumentRow, found)
            values = _new_document(job_id, number, name, document_format, object_key)
            conn.execute(_INSERT_DOC, values)
            return detached(DocumentRow, values)

        return await self.run(work)

    async def set_document(self, job_id: int, number: int, **values: object) -> None:
        self._recent.pop(job_id, None)
        await self.run(lambda conn: write_document(conn, job_id, number, values))

    async def transition(self, job_id: int, event: Chooser,
                         message_id: str | None = None, extra: Callable[[JobRow], dict] | None = None,
                         attempts: int = 20, view: bool = False,
                         then: Callable[[Connection, JobRow], None] | None = None,
                         documents: Mapping[int, Mapping[str, Any]] | None = None, known: Known | None = None,
                         ) -> Transition:
        """Apply ``event`` (or what a callback picks on the current job) with optimistic concurrency.

        The callback (for device reports: schemas.model.reports.judge) sees the very row the
        write is conditioned on: if another writer changes the job between the judgement and
        the write, the write fails and the job is read and judged again. A ``Verdict`` or None
        writes nothing. The job's documents are part of the model: their changes are written
        in the same transaction as the job's. Each attempt (read, judge, write) is one hop to
        the database, and one transaction; on PostgreSQL, when nothing but the change is
        written or read (no ``then`` nor ``view``), no transaction: the job is read in
        one statement and the change written in one (``_change_statement``), conditioned on the
        version read as always. The callback runs in that hop, so it must be plain code that
        does no I/O. ``view``: also read, in that transaction, what ``job_info`` shows of the
        changed job, for the answer the caller is about to give (no hop of its own then).
        ``then(connection, row)``
        writes what belongs with an applied change (a fax report's destination statuses), in its
        transaction, only when the change was written. ``documents``: columns of the job's
        documents (by number) that come with the change (a document's bytes just stored, for
        the close they complete): applied to the rows before they are judged and written with
        the change, or alone if the job is not written. ``known``: the job as the caller holds
        it (``Known``), judged on the first attempt without a read.

        Raises JobNotFound, schemas.model.job.InvalidTransition, ConcurrentUpdate.
        """
        # PostgreSQL: with nothing written or read beside the change, the job is read outside a
        # transaction and the change written as one statement (two round trips, not five).
        plain = self._thread is None and then is None
        # Kept for the next change only if read here or kept already, or if the caller's copy
        # is whole: a copy may lack columns written beside it (a transform's, before a close).
        remember = known is None or known.whole
        if known is None:
            known = self._recent.get(job_id)  # as this replica last wrote it (``_remember``)
        for _ in range(attempts):
            # A view is read in the change's transaction, unless derived from ``known``.
            single = plain and (not view or (known is not None and known.history is not None))
            hop = self._autocommit if single else self.run
            done = await hop(lambda conn, single=single, known=known: _transition_once(
                conn, job_id, event, message_id, extra, view, then, single, documents, known))
            if known is not None and done is None:
                self._recent.pop(job_id, None)  # not current: forget it
            known = None  # judged on a copy once; again, on what is stored
            if done is _IN_TRANSACTION:
                plain = False
                continue
            if done is None:
                continue  # another writer got there first: read and judge again
            assert isinstance(done, Transition)
            if done.view is not None:
                self._views[job_id] = (done.row.version, done.view)
                self._views.move_to_end(job_id)
                while len(self._views) > VIEWS_KEPT:
                    self._views.popitem(last=False)
            if done.written:
                self._remember(done.row, done.documents if remember else None)
                self.feed.notify(job_id)
            return done
        raise ConcurrentUpdate(f"job {job_id} changed {attempts} times while updating it")

    def kept(self, job_id: int) -> Known | None:
        """The print job as this replica last wrote or read it (``_remember``), if it keeps it.

        A first guess, not what is stored: another replica may have changed the job since. Use
        it only for an answer that a write conditioned on its version settles (a fetch, whose
        claim follows). The caller must not change the rows."""
        return self._recent.get(job_id)

    def _remember(self, row: JobRow, documents: list[DocumentRow] | None) -> None:
        """Keep a print job as this replica just wrote it, so its next change (the device's next
        report) is judged without reading it first: a round trip less a report on PostgreSQL.

        Safe because the copy is only ever a first guess: the change is written on its version,
        so a copy that is no longer current (another replica changed the job) writes nothing
        and the job is read and judged again; so does any outcome other than a written change
        (a verdict such as ``duplicate`` or ``stale`` is always given on what is stored). What
        changes a job without moving its version (a document's columns, the estimate) forgets
        the copy on this replica, and for print jobs happens before the close, whose version
        every later copy has. Other kinds (a scan's output documents are added while it runs,
        without a new version) are not kept.
        """
        if (documents is None or row.kind != ServiceKind.PRINT.value
                or JobState(row.state).terminal):
            self._recent.pop(row.id, None)
            return
        self._recent[row.id] = Known(row, documents)
        self._recent.move_to_end(row.id)
        while len(self._recent) > RECENT_KEPT:
            self._recent.popitem(last=False)

    async def set_impressions_estimated(self, job_id: int, estimate: int) -> None:
        """What a job counts against quotas until its device reports (cloud_service.accounting)."""
        self._recent.pop(job_id, None)
        await self.run(lambda conn: _update(conn, "jobs", {"id": job_id}, {"impressions_estimated": estimate}))

    async def mark_documents_discarded(self, job_id: int, at: float) -> None:
        self._recent.pop(job_id, None)
        async with self.sessions.begin() as s:
            await s.execute(update(JobRow).where(JobRow.id == job_id).values(documents_discarded_at=at))

    async def delete_job(self, job_id: int) -> None:
        """Forget a job: its row, documents, history and destination statuses (not its bytes)."""
        self._recent.pop(job_id, None)
        async with self.sessions.begin() as s:
            await s.execute(delete(JobEventRow).where(JobEventRow.job_id == job_id))
            await s.execute(delete(DocumentRow).where(DocumentRow.job_id == job_id))
            await s.execute(delete(JobDestinationsRow).where(JobDestinationsRow.job_id == job_id))
            await s.execute(delete(JobRow).where(JobRow.id == job_id))

    # ------------------------------------------------------------------ fax destinations

    async def destination_statuses(self, job: JobRow) -> list[dict[str, Any]] | None:
        """What clients see: the device's latest report, else every destination still pending;
        None for jobs other than faxes."""
        if job.kind != ServiceKind.FAXOUT.value:
            return None
        async with self.reads() as s:
            row = await s.get(JobDestinationsRow, job.id)
        if row is not None:
            return list(row.statuses)
        status = "canceled" if job.state == JobState.CANCELED.value else (
            "aborted" if job.state == JobState.ABORTED.value else "pending")
        return [{"destination-uri": d.get("destination-uri"), "images-completed": 0, "transmission-status": status}
                for d in (job.ticket or {}).get("destination-uris", [])]

    async def list_jobs(self, *, owner: str | None, include_ended: bool, kind: str | None = None,
                        service: str | None = None, limit: int = 500) -> list[JobRow]:
        query = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if not include_ended:
            query = query.where(JobRow.state.not_in([s.value for s in JobState if s.terminal]))
        if kind:
            query = query.where(JobRow.kind == kind)
        if service:
            query = query.where(JobRow.service_name == service)
        async with self.reads() as s:
            return list(await s.scalars(query))

    async def fetchable_for(self, device_id: str, limit: int = 200) -> list[JobRow]:
        return await self.read(lambda conn: _fetchable(conn, device_id, limit))

    async def active_for(self, device_id: str) -> list[JobRow]:
        """Non-terminal jobs claimed by ``device_id``."""
        return await self.read(lambda conn: _active(conn, device_id))

    async def sweep_view(self, fetchable_before: float, incoming_before: float, limit: int = 10_000) -> SweepView:
        """What a supervisor sweep decides on, read in one hop however many devices there are:
        the claimed jobs not ended, the pending jobs fetchable since before ``fetchable_before``,
        the jobs still waiting for their documents since before ``incoming_before`` (each list by
        job id), and the devices of the claimed and fetchable ones."""
        def work(conn: Connection) -> SweepView:
            claimed = [_job_row(m) for m in conn.execute(_SELECT_CLAIMED).mappings()]
            waiting = [_job_row(m) for m in conn.execute(_SELECT_WAITING, {"before": fetchable_before,
                                                                           "limit": limit}).mappings()
                       if "job-fetchable" in m["state_reasons"]]
            incoming = [_job_row(m) for m in conn.execute(_SELECT_INCOMING, {"before": incoming_before}).mappings()]
            # Only the devices those jobs name: thousands of idle devices cost a sweep nothing.
            wanted = sorted({r.device_id for r in claimed} | {r.device_id for r in waiting})
            devices = [detached(DeviceRow, m)
                       for start in range(0, len(wanted), SWEEP_DEVICES_PER_QUERY)
                       for m in conn.execute(_SELECT_DEVICES_IN,
                                             {"ids": wanted[start:start + SWEEP_DEVICES_PER_QUERY]}).mappings()]
            return SweepView(devices, claimed, waiting, incoming)

        return await self.read(work)

    async def hello_view(self, device_id: str, held: Iterable[int], software: str | None,
                         device: Mapping[str, object] | None = None
                         ) -> tuple[dict[int, JobRow], list[JobRow], list[JobRow]]:
        """What a device's ``hello`` is answered from, read in one hop: records its software
        (and the ``device`` columns given, e.g. its liveness), then (the held jobs that exist
        by id, its claimed active jobs, its fetchable jobs)."""
        ids = sorted(set(held))

        values = {**(device or {}), "software": software}
        single = self._postgresql

        def work(conn: Connection) -> tuple[dict[int, JobRow], list[JobRow], list[JobRow]]:
            if single:
                return _hello_in_one(conn, device_id, values, ids, HELLO_FETCHABLE)
            _set_device(conn, device_id, None, values)
            return ((_jobs_by_id(conn, ids) if ids else {}), _active(conn, device_id),
                    _fetchable(conn, device_id, HELLO_FETCHABLE))

        # No transaction around it on PostgreSQL: its one write (the device's row) is atomic on
        # its own, and the reads need no snapshot shared with it (a hello resent after a
        # failure writes the same values again).
        return await self._autocommit(work)

    async def job_info(self, row: JobRow, with_history: bool = True) -> JobInfo:
        """The job as clients read it: its documents, history and (while it waits) its device's
        presence, read in one hop, or in none if the change that made this version read them
        (``transition(view=True)``)."""
        parts = self._views.pop(row.id, None) if with_history else None
        if parts is None or parts[0] != row.version:
            parts = (row.version, await self.read(lambda conn: _view_parts(conn, row, with_history)))
        docs, events, device = parts[1]
        history = [JobEvent(at=e["at"], version=e["version"], state=JobState(e["state"]),
                            state_reasons=e["state_reasons"], message=e["message"]) for e in events]
        reasons, message = list(row.state_reasons), row.state_message
        if device is not None and not device.online:
            # Waiting for a device that is away: say so (the stored state is unchanged; this
            # is what a client reads, like the offline overlay on service states).
            reasons, message = job_overlay(row.state, reasons, message, device.online, device.last_seen)
        return JobInfo(id=row.id, uuid=row.uuid, kind=ServiceKind(row.kind), service=row.service_name,
                       device_id=row.device_id, owner=row.owner, state=JobState(row.state),
                       state_reasons=reasons, state_message=message, version=row.version,
                       created_at=row.created_at, updated_at=row.updated_at, completed_at=row.completed_at,
                       impressions_completed=row.impressions_completed, ticket=row.ticket,
                       documents=[DocumentInfo(number=d.number, name=d.name, format=d.format, size=d.size,
                                               sha256=d.sha256, state=DocumentState(d.state),
                                               impressions_completed=d.impressions_completed)
                                  for d in docs],
                       history=history, destination_statuses=await self.destination_statuses(row))

    # ------------------------------------------------------------------ devices and services

    async def device(self, device_id: str) -> DeviceRow | None:
        def work(conn: Connection) -> DeviceRow | None:
            found = _DEVICE.mappings(conn, {"device_id": device_id})
            return detached(DeviceRow, found[0]) if found else None

        return await self.read(work)

    async def set_device(self, device_id: str, check: Callable[[DeviceRow | None], None] | None = None,
                         **values: object) -> None:
        """Create or update a device row; ``check(row)`` may refuse (raise) inside the transaction."""
        await self.run(lambda conn: _set_device(conn, device_id, check, values))

    async def set_devices(self, values: Mapping[str, Mapping[str, object]]) -> None:
        """Create or update several devices' rows (device id -> columns) in one transaction. A
        device whose stored ``last_seen`` is later than the one given is left as it is: what was
        written meanwhile (an offline recorded by another path) is newer than these values."""
        def work(conn: Connection) -> None:
            for device_id, columns in values.items():
                given = columns.get("last_seen")

                def newer_stored(row: DeviceRow | None, given: object = given) -> None:
                    if (row is not None and row.last_seen is not None and isinstance(given, float)
                            and row.last_seen > given):
                        raise _StoredIsNewer

                with contextlib.suppress(_StoredIsNewer):
                    _set_device(conn, device_id, newer_stored, columns)

        await self.run(work)

    async def services(self, kind: str | None = None,
                       name: str | None = None) -> list[tuple[ServiceRow, DeviceRow, int]]:
        """Services (of ``kind``, named ``name``) with their device and the count of their
        not-ended jobs, in one hop. One named service is one row read, however many services
        there are: the service view and the IPP front's printer attributes ask for one."""
        query = _SELECT_SERVICES
        if kind:
            query = query.where(_services.c.kind == kind)
        if name is not None:
            query = query.where(_services.c.name == name)

        def work(conn: Connection) -> list[tuple[ServiceRow, DeviceRow, int]]:
            return [(detached(ServiceRow, {c.key: m[f"s_{c.key}"] for c in _services.c}),
                     detached(DeviceRow, {c.key: m[f"d_{c.key}"] for c in _devices.c}), int(m["queued"]))
                    for m in conn.execute(query).mappings()]

        return await self.read(work)

    async def service(self, kind: str, name: str) -> ServiceRow | None:
        def work(conn: Connection) -> ServiceRow | None:
            found = conn.execute(_SELECT_SERVICE, {"kind": kind, "name": name}).mappings().first()
            return None if found is None else detached(ServiceRow, found)

        return await self.read(work)

    async def upsert_service(self, device_id: str, kind: str, name: str, values: dict) -> bool:
        """Create or update a service; False if the name belongs to another device."""
        async with self.sessions.begin() as s:
            row = await s.scalar(select(ServiceRow).where(ServiceRow.kind == kind, ServiceRow.name == name))
            if row is None:
                s.add(ServiceRow(device_id=device_id, kind=kind, name=name, updated_at=time.time(), **values))
                return True
            if row.device_id != device_id:
                return False
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = time.time()
            return True

    async def upsert_services(self, device_id: str, services: list[tuple[str, str, dict]],
                              cap: int, device: Mapping[str, object] | None = None) -> ServicesRefused | None:
        """Create or update a device's services ``(kind, name, values)``, all or none; a
        service whose stored values are the same is not written (nor its ``updated_at``
        moved), so a device that reconnects with unchanged attributes writes no service.
        The ``device`` columns given (its liveness) are written in the same transaction,
        whether the services are refused or not.

        Refused whole (nothing written) if a name belongs to another device (names are
        first come, first served: the device that registered one keeps it until an operator
        deletes the device), or if the device would hold more than ``cap`` services. The
        device's row is locked (``FOR UPDATE`` where the database has it) so two replicas
        cannot both pass the count. One transaction, one hop; when the services are all the
        device's already and at most one changed (a state change while printing), one hop with
        no lock and no transaction around its read and its one UPDATE (tried for services this
        replica has written before; a new one goes to the locked path at once).
        """
        keys = {(device_id, kind, name) for kind, name, _ in services}
        if not device and keys <= self._known_services:
            # The common case, a device reporting a change of its own services' state: no
            # lock, no transaction (one UPDATE is atomic on its own).
            done = await self._autocommit(lambda conn: _update_owned_service(conn, device_id, services))
            if done:
                return None
        refused = await self.run(lambda conn: _upsert_services(conn, device_id, services, cap, device))
        if refused is None:
            if len(self._known_services) > MAX_KNOWN_SERVICES:
                self._known_services.clear()
            self._known_services |= keys
        return refused


class _StoredIsNewer(Exception):
    """A device row holds a later state than the values about to be written (nothing written)."""


def _new_document(job_id: int, number: int, name: str | None, document_format: str, object_key: str,
                  size: int | None = None, sha256: str | None = None) -> dict[str, Any]:
    """A new (pending) document row's columns."""
    return {"job_id": job_id, "number": number, "name": name, "format": document_format, "size": size,
            "sha256": sha256, "object_key": object_key, "state": DocumentState.PENDING.value,
            "impressions_completed": 0, "pages": None}


#: The columns ``create_job`` writes of a new document.
_NEW_DOC_KEYS = tuple(_new_document(0, 0, None, "", ""))


def created_event(row: JobRow) -> dict[str, Any]:
    """The history event ``create_job`` wrote of a job it just made (as ``_EVENTS`` reads it)."""
    return {"job_id": row.id, "version": row.version, "at": row.created_at, "state": row.state,
            "state_reasons": list(row.state_reasons), "message": None}


def new_document(job_id: int, number: int, name: str | None, document_format: str, object_key: str) -> DocumentRow:
    """The row ``create_job`` wrote for a document of a job it just made (to use it without reading it back)."""
    return detached(DocumentRow, {**_new_document(job_id, number, name, document_format, object_key),
                                  "transformed": None})


def write_document(conn: Connection, job_id: int, number: int, values: Mapping[str, Any]) -> None:
    """Set columns of document ``number`` of a job, inside the caller's transaction."""
    _update(conn, "documents", {"job_id": job_id, "number": number}, values)


def _jobs_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, JobRow]:
    rows = conn.execute(_SELECT_JOBS, {"ids": list(ids)}).mappings()
    return {m["id"]: _job_row(m) for m in rows}


def _fetchable(conn: Connection, device_id: str, limit: int) -> list[JobRow]:
    rows = conn.execute(_SELECT_FETCHABLE, {"device_id": device_id, "limit": limit}).mappings()
    return [_job_row(m) for m in rows if "job-fetchable" in m["state_reasons"]]


def _active(conn: Connection, device_id: str) -> list[JobRow]:
    return [_job_row(m) for m in conn.execute(_SELECT_ACTIVE, {"device_id": device_id}).mappings()]


def _transition_once(conn: Connection, job_id: int, event: Chooser,
                     message_id: str | None, extra: Callable[[JobRow], dict] | None,
                     view: bool = False, then: Callable[[Connection, JobRow], None] | None = None,
                     single: bool = False, documents: Mapping[int, Mapping[str, Any]] | None = None,
                     known: Known | None = None) -> Transition | _InTransaction | None:
    """One attempt of JobStore.transition inside one transaction (or, with ``single``, outside
    any, its write one statement); None if the version moved (or, judged on ``known``, if the
    change was not written: judge again on a fresh read), ``_IN_TRANSACTION`` if the write is
    too big for one statement."""
    if known is None:
        row, docs = _read_job_docs(conn, job_id)
    else:  # copies: the caller's rows stay as they were if this attempt writes nothing
        row = _job_row(_columns(known.row, _JOB_KEYS))
        docs = [detached(DocumentRow, _columns(d, _DOC_KEYS)) for d in known.documents]
    for doc in docs:
        if documents and doc.number in documents:
            doc.__dict__.update(documents[doc.number])
    before = core_job(row, docs)
    if isinstance(event, WithDocuments):
        chosen = event.decide(before, row, docs)
    else:
        chosen = event(before, row) if callable(event) else event
    if known is not None and (chosen is None or isinstance(chosen, Verdict)):
        return None  # answered from the caller's copy: judge it again on what is stored
    if chosen is None or isinstance(chosen, Verdict):
        _write_documents(conn, job_id, documents)
        return Transition(before, before, row, verdict=chosen)
    try:
        after = before.apply(chosen)
    except InvalidTransition:
        if known is not None:
            return None
        raise
    values: dict = {}
    if message_id:
        values["applied_ids"] = [*row.applied_ids, message_id][-APPLIED_IDS_KEPT:]
    if after.version == before.version and not values:
        if known is not None:
            return None
        _write_documents(conn, job_id, documents)
        return Transition(before, after, row)
    now = time.time()
    if after.version != before.version:
        values.update(state=after.state.value, state_reasons=list(after.reasons),
                      state_message=after.message, version=after.version, claimed=after.claimed,
                      cancel_requested=after.cancel_requested, started=after.started,
                      impressions_completed=after.impressions_completed, updated_at=now)
        if after.terminal:
            values["completed_at"] = now
    if extra:
        values.update(extra(row))
    history = ({"version": after.version, "at": now, "state": after.state.value,
                "state_reasons": list(after.reasons), "message": after.message}
               if len(after.history) > len(before.history) else None)  # the state moved (not only a document)
    written = {number: dict(columns) for number, columns in (documents or {}).items()}
    for old, new in zip(before.documents, after.documents, strict=True):
        if new != old:
            written.setdefault(new.number, {}).update(state=new.state.value,
                                                      impressions_completed=new.impressions_completed)
    if single and len(written) > CHANGE_STATEMENT_DOCS:
        return _IN_TRANSACTION
    if not _write_change(conn, job_id, before.version, values, history, written, single):
        return None
    row.__dict__.update(values)
    for doc in docs:  # the rows as just written
        doc.__dict__.update(written.get(doc.number, {}))
    if then is not None:
        then(conn, row)
    if not view:
        return Transition(before, after, row, written=True, documents=docs)
    if known is None or known.history is None:
        return Transition(before, after, row, written=True, view=_view_parts(conn, row, True), documents=docs)
    # The view of a job the caller holds: derived, not read.
    events = [*known.history, {"job_id": job_id, **history}] if history is not None else list(known.history)
    device = known.device if row.state == JobState.PENDING.value else None
    return Transition(before, after, row, written=True, view=(docs, events, device), documents=docs)


def _write_documents(conn: Connection, job_id: int, documents: Mapping[int, Mapping[str, Any]] | None) -> None:
    """The ``documents`` columns a transition was given, written when the job itself is not."""
    for number, columns in (documents or {}).items():
        write_document(conn, job_id, number, columns)


def save_destinations(conn: Connection, job_id: int, version: int, statuses: list[dict[str, Any]]) -> None:
    """Write a fax job's reported destination statuses unless a newer report's are there."""
    kept = conn.execute(_SELECT_DESTINATIONS_VERSION, {"job_id": job_id}).scalar()
    now = time.time()
    if kept is None:
        conn.execute(_INSERT_DESTINATIONS, {"job_id": job_id, "statuses": statuses, "updated_at": now,
                                            "version": version})
    elif version >= kept:
        conn.execute(_UPDATE_DESTINATIONS, {"b_job_id": job_id, "b_statuses": statuses, "b_at": now,
                                            "b_version": version})


def _view_parts(conn: Connection, row: JobRow, with_history: bool) -> ViewParts:
    docs = _doc_rows(conn, row.id)
    events = _EVENTS.mappings(conn, {"job_id": row.id}) if with_history else []
    found = (next(iter(_DEVICE.mappings(conn, {"device_id": row.device_id})), None)
             if row.state == JobState.PENDING.value else None)
    return docs, events, None if found is None else detached(DeviceRow, found)


def _set_device(conn: Connection, device_id: str, check: Callable[[DeviceRow | None], None] | None,
                values: Mapping[str, object]) -> None:
    found = next(iter(_DEVICE.mappings(conn, {"device_id": device_id})), None)
    if check is not None:
        check(None if found is None else detached(DeviceRow, found))
    if found is None:
        conn.execute(_INSERT_DEVICE, _new_device(device_id, values))
    elif any(found[key] != value for key, value in values.items()):
        _update(conn, "devices", {"id": device_id}, values)


def _new_device(device_id: str, values: Mapping[str, object]) -> dict[str, object]:
    """A device's row as ``_set_device`` first writes it: ``values`` over the defaults."""
    row: dict[str, object] = {c.key: None for c in _devices.columns}
    row.update(online=False, created_at=time.time())
    row.update(values)
    row["id"] = device_id
    return row


def _hello_in_one(conn: Connection, device_id: str, values: Mapping[str, object], ids: list[int],
                  limit: int) -> tuple[dict[int, JobRow], list[JobRow], list[JobRow]]:
    """PostgreSQL: ``JobStore.hello_view``'s work as one statement (``_hello_statement``)."""
    params: dict[str, object] = {f"n_{k}": v for k, v in _new_device(device_id, values).items()}
    params.update(device_id=device_id, limit=limit)
    if ids:
        params["ids"] = ids
    held: dict[int, JobRow] = {}
    claimed: list[JobRow] = []
    fetchable: list[JobRow] = []
    for m in _hello_statement(tuple(sorted(values)), bool(ids)).mappings(conn, params):
        part = m.pop("part")
        row = _job_row(m)
        if part == _HELD:
            held[row.id] = row
        elif part == _CLAIMED:
            claimed.append(row)
        elif "job-fetchable" in row.state_reasons:
            fetchable.append(row)
    return held, claimed, fetchable


def _update_owned_service(conn: Connection, device_id: str, services: list[tuple[str, str, dict]]) -> bool:
    """Apply ``services`` if they are all the device's already and at most one changed: one
    UPDATE, conditioned on the owner, needs no lock nor transaction. False: nothing written,
    take the locked path (a new service, several changes, the row gone meanwhile)."""
    owned = {(m["kind"], m["name"]): m for m in _SERVICES_OF_DEVICE.mappings(conn, {"device_id": device_id})}
    if len({(kind, name) for kind, name, _ in services}) != len(services):
        return False
    changed = []
    for kind, name, values in services:
        found = owned.get((kind, name))
        if found is None:
            return False
        if any(found[key] != value for key, value in values.items()):
            changed.append((kind, name, values))
    if not changed:
        return True
    if len(changed) > 1:
        return False
    kind, name, values = changed[0]
    where = {"device_id": device_id, "kind": kind, "name": name}
    return _update(conn, "services", where, {**values, "updated_at": time.time()}) == 1


def _services_of_or_named(conn: Connection, device_id: str,
                          services: Iterable[tuple[str, str, object]]) -> list[dict[str, Any]]:
    """The device's services and any other that bears the kind and name of one of
    ``services``, in one read: what a device's attributes are judged on (its own, and the
    names another device holds). A few more may come (another kind's service of one of those
    names); the caller matches pairs."""
    wanted = {(kind, name) for kind, name, _ in services}
    params = {"device_id": device_id, "kinds": sorted({k for k, _ in wanted}),
              "names": sorted({n for _, n in wanted})}
    if conn.dialect.name == "postgresql":
        return _OWNED_OR_NAMED.mappings(conn, params)
    return [dict(m) for m in conn.execute(_SELECT_OWNED_OR_NAMED, params).mappings()]


def _upsert_services(conn: Connection, device_id: str, services: list[tuple[str, str, dict]],
                     cap: int, device: Mapping[str, object] | None = None) -> ServicesRefused | None:
    if device:
        _set_device(conn, device_id, None, device)
    # The lock first, in a statement of its own: under READ COMMITTED the read after it takes
    # a new snapshot, so it sees what a writer that held the lock before committed.
    _LOCK.rows(conn, {"device_id": device_id})
    owned: dict[tuple[str, str], dict[str, Any]] = {}
    taken: set[tuple[str, str]] = set()
    for m in _services_of_or_named(conn, device_id, services):
        if m["device_id"] == device_id:
            owned[(m["kind"], m["name"])] = m
        else:
            taken.add((m["kind"], m["name"]))
    new: list[tuple[str, str, dict]] = []
    for kind, name, values in services:
        if (kind, name) in owned:
            continue
        if (kind, name) in taken:
            return ServicesRefused("not-yours", f"service name {name!r} belongs to another device")
        if all((kind, name) != (k, n) for k, n, _ in new):
            new.append((kind, name, values))
    if len(owned) + len(new) > cap:
        return ServicesRefused("too-many-services",
                               f"a device may register at most {cap} services; it has {len(owned)} "
                               f"and this message adds {len(new)}")
    now = time.time()
    written: set[tuple[str, str]] = set()
    for kind, name, values in services:
        found = owned.get((kind, name))
        if found is None and (kind, name) not in written:
            _INSERT_SERVICE_ROW.execute(conn, {**_NO_SERVICE_VALUES, **values, "device_id": device_id, "kind": kind,
                                               "name": name, "updated_at": now})
        elif (kind, name) in written or any(found[key] != value for key, value in values.items()):
            _update(conn, "services", {"kind": kind, "name": name}, {**values, "updated_at": now})
        written.add((kind, name))
    return None
