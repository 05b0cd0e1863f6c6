"""The store's autocommit connections on PostgreSQL, held between hops (cloud_service/held.py):
reused without a trip through the pool, never more than two thirds of the pool, checked after
idling, discarded when lost or cancelled mid-statement, given back on close. Real PostgreSQL,
real asyncpg, the real JobStore."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy import bindparam, event, exc, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud_service import db
from cloud_service.db import create_schema, make_engine
from cloud_service.held import HeldConnections, held_limit
from cloud_service.prepared import Prepared
from cloud_service.store import JobStore
from tests.support import pg


@dataclass
class Rig:
    engine: AsyncEngine
    store: JobStore
    held: HeldConnections
    #: Connections the pool handed out (its checkout event), counted.
    checkouts: list[object]


async def rig(url: str, pool_size: int) -> Rig:
    engine = make_engine(url, pool_size=pool_size)
    await create_schema(engine)
    checkouts: list[object] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda dbapi, record, proxy: checkouts.append(dbapi))
    store = JobStore(engine)
    assert store._held is not None
    return Rig(engine, store, store._held, checkouts)


@pytest.fixture
async def small(pg_database: str) -> AsyncIterator[Rig]:
    """A store on a pool of 3: 2 held for autocommit hops, 1 left in the pool."""
    r = await rig(pg_database, 3)
    try:
        yield r
    finally:
        await r.store.close()
        await r.engine.dispose()


def backend(conn):  # type: ignore[no-untyped-def]
    return conn.execute(text("SELECT pg_backend_pid()")).scalar()


async def _others(database: str, what: str) -> int:
    """``what`` counted over the other server processes on ``database``, asked by an admin session."""
    admin = await asyncpg.connect(pg.dsn())
    try:
        return int(await admin.fetchval(f"SELECT count({what}) FROM pg_stat_activity "
                                        "WHERE datname = $1 AND pid <> pg_backend_pid()", database))
    finally:
        await admin.close()


async def kill_all(database: str) -> int:
    return await _others(database, "pg_terminate_backend(pid)")


async def wait_sleeping(admin: asyncpg.Connection, pid: int, deadline: float, what: str) -> None:
    """Until server process ``pid`` runs a ``pg_sleep``."""
    while not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 "
                                   "AND query LIKE 'SELECT pg_sleep%'", pid):
        assert time.monotonic() < deadline, f"{what} never started"
        await asyncio.sleep(0.02)


async def sessions(database: str) -> int:
    return await _others(database, "*")


def test_two_thirds_of_the_pool_are_held() -> None:
    assert [held_limit(n) for n in (1, 2, 3, 4, 15, 30)] == [0, 1, 2, 2, 10, 20]


async def test_a_pool_of_one_holds_nothing_and_reads_go_through_the_pool(pg_database: str) -> None:
    engine = make_engine(pg_database, pool_size=1)
    store = JobStore(engine)
    try:
        await create_schema(engine)
        assert store._held is None
        assert await store.read(lambda conn: conn.execute(text("SELECT 7")).scalar()) == 7
        assert engine.sync_engine.pool.checkedout() == 0
    finally:
        await store.close()
        await engine.dispose()


async def test_back_to_back_reads_reuse_one_held_connection(small: Rig) -> None:
    """Twenty reads one after another: one checkout from the pool, one server process."""
    pids = [await small.store.read(backend) for _ in range(20)]
    assert len(set(pids)) == 1
    assert len(small.checkouts) == 1
    assert small.held.count == 1
    # Autocommit: each statement of a hop is a transaction of its own.
    ids = await small.store.read(lambda conn: [conn.execute(text("SELECT txid_current()")).scalar()
                                               for _ in range(2)])
    assert ids[0] != ids[1]


async def test_held_connections_stop_at_two_thirds_and_transactions_keep_the_rest(small: Rig) -> None:
    """Six slow reads at once on a pool of 3 share the 2 held connections (two at a time); a
    transaction started with them runs on the third and is done before the first pair is."""
    def slow(conn):  # type: ignore[no-untyped-def]
        pid = backend(conn)
        conn.execute(text("SELECT pg_sleep(0.4)"))
        return pid

    reads = [asyncio.create_task(small.store.read(slow)) for _ in range(6)]
    await asyncio.sleep(0.05)
    assert await small.store.run(lambda conn: conn.execute(text("SELECT 1")).scalar()) == 1
    assert not any(task.done() for task in reads), "the transaction waited for the reads"
    pids = await asyncio.gather(*reads)
    assert len(set(pids)) == 2
    assert small.held.count == 2
    assert small.engine.sync_engine.pool.checkedout() == 2  # the held ones; the third is back


async def test_an_idle_held_connection_the_server_dropped_is_replaced_before_use(
        small: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await small.store.read(backend)
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)  # every idle connection is checked
    assert await kill_all(small.engine.url.database) >= 1
    second = await small.store.read(backend)  # no error: checked, found dead, replaced
    assert second != first
    assert small.held.count == 1


#: The server process's id, on the driver's cursor (cloud_service.prepared): once its result
#: types are known, in autocommit it goes straight to asyncpg.
PID = Prepared(select(func.pg_backend_pid()))


@pytest.mark.parametrize("path", ["connection", "prepared"])
async def test_a_connection_lost_while_held_fails_one_hop_and_is_not_held_again(
        small: Rig, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Within the no-ping moment a dropped connection fails the one hop that uses it (as the
    pool's own connections do); it is discarded, and the next hop gets a new one. The same when
    the statement went straight to asyncpg."""
    def lookup(conn):  # type: ignore[no-untyped-def]
        return PID.rows(conn, {})[0][0] if path == "prepared" else backend(conn)

    first = await small.store.read(lookup)
    assert await small.store.read(lookup) == first
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 3600.0)
    assert await kill_all(small.engine.url.database) >= 1
    with pytest.raises(exc.DBAPIError) as lost:
        await small.store.read(lookup)
    assert lost.value.connection_invalidated
    assert small.held.count == 0
    assert await small.store.read(backend) != first
    assert small.held.count == 1


async def test_a_statement_error_keeps_the_connection(small: Rig) -> None:
    first = await small.store.read(backend)
    with pytest.raises(exc.DBAPIError, match="division by zero"):
        await small.store.read(lambda conn: conn.execute(text("SELECT 1 / 0")).scalar())
    assert await small.store.read(backend) == first
    assert small.held.count == 1


#: The same sleep run on the driver's cursor (cloud_service.prepared), as the hot path runs its
#: statements: SQLAlchemy's own error handling does not see what happens there.
SLEEP = Prepared(select(func.pg_sleep(bindparam("seconds"))))


@pytest.mark.parametrize("path", ["connection", "prepared"])
async def test_a_hop_cancelled_mid_statement_discards_its_connection(small: Rig, path: str) -> None:
    """Cancelled while its statement runs, a hop's connection is closed (the server process
    goes), not held again; through ``Connection.execute`` and on the driver's cursor alike."""
    first = await small.store.read(backend)

    def sleep(conn):  # type: ignore[no-untyped-def]
        if path == "prepared":
            return SLEEP.rows(conn, {"seconds": 30})
        return conn.execute(text("SELECT pg_sleep(30)")).scalar()

    task = asyncio.create_task(small.store.read(sleep))
    deadline = time.monotonic() + 10
    admin = await asyncpg.connect(pg.dsn())
    try:
        await wait_sleeping(admin, first, deadline, "the slow statement")
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 10  # not after the 30 s sleep
        assert small.held.count == 0
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first):
            assert time.monotonic() < deadline, "the cancelled connection was kept open"
            await asyncio.sleep(0.02)
    finally:
        await admin.close()
    assert await small.store.read(backend) != first


async def test_a_waiter_that_gives_up_passes_the_connection_on(pg_database: str) -> None:
    """A pool of 2 holds 1: two hops wait behind a slow one; the first gives up, the second
    gets the connection when the slow one is done."""
    r = await rig(pg_database, 2)
    try:
        assert r.held.limit == 1
        slow = asyncio.create_task(r.store.read(lambda conn: conn.execute(text("SELECT pg_sleep(0.3)")).scalar()))
        await asyncio.sleep(0.05)
        quitter = asyncio.create_task(r.store.read(backend))
        patient = asyncio.create_task(r.store.read(backend))
        await asyncio.sleep(0.05)
        quitter.cancel()
        await slow
        pid = await asyncio.wait_for(patient, 10)
        assert quitter.cancelled()
        assert await r.store.read(backend) == pid
        assert r.held.count == 1 and len(r.checkouts) == 1
    finally:
        await r.store.close()
        await r.engine.dispose()


async def test_close_gives_the_held_connections_back_and_dispose_closes_them(pg_database: str) -> None:
    r = await rig(pg_database, 3)
    name = r.engine.url.database
    try:
        await asyncio.gather(*(r.store.read(lambda conn: conn.execute(text("SELECT pg_sleep(0.1)")).scalar())
                               for _ in range(4)))
        assert r.held.count == 2
        await r.store.close()
        assert r.held.count == 0 and r.engine.sync_engine.pool.checkedout() == 0
        # After close a read still works, through the pool.
        assert await r.store.read(lambda conn: conn.execute(text("SELECT 3")).scalar()) == 3
        assert r.engine.sync_engine.pool.checkedout() == 0
    finally:
        await r.engine.dispose()
    deadline = time.monotonic() + 10
    while await sessions(name):
        assert time.monotonic() < deadline, "connections were left open after dispose"
        await asyncio.sleep(0.05)


async def test_a_hop_cancelled_during_the_idle_check_frees_its_place(
        small: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of a connection that sat idle is part of the hop: cancelled there, the
    connection is closed, its place is freed, and the next hop works."""
    first = await small.store.read(backend)
    dialect = small.engine.sync_engine.dialect
    real_ping = dialect.do_ping

    def slow_ping(dbapi_connection):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_sleep(30)")
        cursor.close()
        return True

    monkeypatch.setattr(dialect, "do_ping", slow_ping)
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)
    task = asyncio.create_task(small.store.read(backend))
    deadline = time.monotonic() + 10
    admin = await asyncpg.connect(pg.dsn())
    try:
        await wait_sleeping(admin, first, deadline, "the check")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert small.held.count == 0
    finally:
        await admin.close()
    monkeypatch.setattr(dialect, "do_ping", real_ping)
    assert await small.store.read(backend) != first
    assert small.held.count == 1
