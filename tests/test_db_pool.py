"""The PostgreSQL connection pool (cloud_service/db.py): a connection used a moment ago is used
without a ping; one idle longer is pinged first, and one the server dropped meanwhile is replaced
before any statement of the store's runs on it. Real PostgreSQL, real asyncpg."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

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
    try:
        await create_schema(engine)
        store = JobStore(engine)
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
        await engine.dispose()
