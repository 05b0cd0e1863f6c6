"""The PostgreSQL connection pool (cloud_service/db.py): a connection used a moment ago is used
without a ping; one idle longer is pinged first, and one the server dropped meanwhile is replaced
before any statement of the store's runs on it. Real PostgreSQL, real asyncpg."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import event, text

from cloud_service import db
from cloud_service.db import create_schema, make_engine
from cloud_service.store import JobStore
from tests.support import pg


async def test_recent_connections_skip_the_ping_idle_ones_are_checked_and_replaced(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_database)
    name = engine.url.database
    pings: list[object] = []
    real_ping = engine.sync_engine.dialect.do_ping

    def counted(dbapi_connection):  # type: ignore[no-untyped-def]
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.sync_engine.dialect, "do_ping", counted)
    store = JobStore(engine)
    try:
        await create_schema(engine)
        for _ in range(5):  # back to back: no ping at all
            assert await store.run(lambda conn: conn.execute(text("SELECT 1")).scalar()) == 1
        assert pings == []
        # The server drops every connection of this database while the pool holds them idle.
        monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)
        admin = await asyncpg.connect(pg.dsn())
        try:
            killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                          "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        finally:
            await admin.close()
        assert killed >= 1
        assert await store.run(lambda conn: conn.execute(text("SELECT 2")).scalar()) == 2
        assert pings, "an idle connection was used without a check"
    finally:
        await store.close()
        await engine.dispose()


async def test_reads_run_outside_a_transaction_writes_inside_one(pg_database: str) -> None:
    """``JobStore.read`` runs its statements in autocommit (no BEGIN and COMMIT around a SELECT:
    one round trip, not three); ``run`` keeps them in one transaction. ``txid_current()`` tells:
    each autocommit statement is a transaction of its own, the statements of ``run`` share one."""
    engine = make_engine(pg_database)
    store = JobStore(engine)
    try:
        await create_schema(engine)

        def two_ids(conn):  # type: ignore[no-untyped-def]
            return [conn.execute(text("SELECT txid_current()")).scalar() for _ in range(2)]

        read_ids = await store.read(two_ids)
        assert read_ids[0] != read_ids[1]
        run_ids = await store.run(two_ids)
        assert run_ids[0] == run_ids[1]
        # The pool's connection is back in its transactional mode after a read.
        assert len(set(await store.run(two_ids))) == 1
        async with store.reads() as session:  # the ORM's read-only sessions too
            ids = [(await session.execute(text("SELECT txid_current()"))).scalar() for _ in range(2)]
        assert ids[0] != ids[1]
    finally:
        await store.close()
        await engine.dispose()


async def test_a_cancelled_transaction_is_rolled_back_and_its_connection_returned(pg_database: str) -> None:
    """``run`` drives a whole transaction from one greenlet: cancelled in the middle of a
    statement, it writes nothing, gives its connection back to the pool, and the next
    transaction runs as usual."""
    engine = make_engine(pg_database)
    store = JobStore(engine)
    try:
        await create_schema(engine)
        await store.run(lambda conn: conn.execute(text("CREATE TABLE marks (n integer)")))

        def slow(conn):  # type: ignore[no-untyped-def]
            conn.execute(text("INSERT INTO marks VALUES (1)"))
            conn.execute(text("SELECT pg_sleep(30)"))

        task = asyncio.create_task(store.run(slow))
        deadline = time.monotonic() + 10
        admin = await asyncpg.connect(pg.dsn())
        try:
            while not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                                           "AND query LIKE 'SELECT pg_sleep%'", engine.url.database):
                assert time.monotonic() < deadline, "the slow statement never started"
                await asyncio.sleep(0.02)
        finally:
            await admin.close()
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 10  # not after the 30 s sleep
        assert engine.sync_engine.pool.checkedout() == 0
        assert await store.read(lambda conn: conn.execute(text("SELECT count(*) FROM marks")).scalar()) == 0
        await store.run(lambda conn: conn.execute(text("INSERT INTO marks VALUES (2)")))
        assert await store.read(lambda conn: conn.execute(text("SELECT array_agg(n) FROM marks")).scalar()) == [2]
    finally:
        await store.close()
        await engine.dispose()


async def test_the_pool_keeps_its_connections_across_bursts_and_never_opens_more(pg_database: str) -> None:
    """Bursts of more concurrent transactions than the pool holds wait for a connection; no
    connection is opened beyond the pool's size, and none is closed between bursts (each new one
    would cost PostgreSQL a process and the driver its prepared statements again)."""
    engine = make_engine(pg_database, pool_size=3)
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda dbapi_connection, record: opened.append(dbapi_connection))
    store = JobStore(engine)
    try:
        await create_schema(engine)
        busiest = 0

        def held(conn):  # type: ignore[no-untyped-def]
            nonlocal busiest
            busiest = max(busiest, engine.sync_engine.pool.checkedout())
            return conn.execute(text("SELECT pg_sleep(0.02)")).scalar()

        for _ in range(3):  # three bursts of 10, reads and transactions mixed
            await asyncio.gather(*(store.read(held) if n % 2 else store.run(held) for n in range(10)))
        assert busiest == 3
        assert len(opened) <= 3, f"{len(opened)} connections opened for a pool of 3"
        # Every one is kept: in the pool, or held for autocommit hops (cloud_service.held).
        assert store._held is not None and 1 <= store._held.count <= 2
        assert engine.sync_engine.pool.checkedin() + store._held.count == len(opened)
    finally:
        await store.close()
        await engine.dispose()
