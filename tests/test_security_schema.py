"""A database made before users and registration existed (schema 1) is upgraded in place: its
tokens keep working with the role they had, its devices stay unowned (admins only). On SQLite
and on PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import text

from cloud_service.auth import authenticate, token_hash
from cloud_service.db import SCHEMA_VERSION, create_schema, make_engine
from cloud_service.store import JobStore

SCHEMA_1 = (
    "CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT)",
    "INSERT INTO meta VALUES ('schema_version', '1')",
    'CREATE TABLE tokens (token_hash VARCHAR(64) PRIMARY KEY, "user" VARCHAR(255), role VARCHAR(16), '
    "created_at FLOAT)",
    "CREATE TABLE devices (id VARCHAR(64) PRIMARY KEY, software VARCHAR(255), online BOOLEAN, "
    "last_seen FLOAT, session VARCHAR(64), created_at FLOAT)",
)


async def test_schema_1_database_is_upgraded(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            for statement in SCHEMA_1:
                await conn.execute(text(statement))
            await conn.execute(text("INSERT INTO tokens VALUES (:hash, 'root', 'admin', :at)"),
                               {"hash": token_hash("ci_old"), "at": time.time()})
            await conn.execute(text("INSERT INTO devices (id, online, created_at) VALUES ('old-dev', false, :at)"),
                               {"at": time.time()})
        await create_schema(engine)
        await create_schema(engine)  # idempotent
        store = JobStore(engine)
        user = await authenticate(store, "ci_old")
        assert user is not None and user.name == "root" and user.is_admin
        device = await store.device("old-dev")
        assert device is not None and device.owner is None and device.revoked_at is None
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'"))).scalar()
        assert version == str(SCHEMA_VERSION)
        await store.close()
    finally:
        await engine.dispose()
