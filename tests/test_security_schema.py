"""A database made before users and registration existed (schema 1) is upgraded in place: its
tokens keep working with the role they had, its devices stay unowned (admins only)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cloud_service.auth import authenticate, token_hash
from cloud_service.db import SCHEMA_VERSION, create_schema, make_engine
from cloud_service.store import JobStore


async def test_schema_1_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE tokens (token_hash VARCHAR(64) PRIMARY KEY, user VARCHAR(255), role VARCHAR(16),
                                 created_at FLOAT);
            CREATE TABLE devices (id VARCHAR(64) PRIMARY KEY, software VARCHAR(255), online BOOLEAN,
                                  last_seen FLOAT, session VARCHAR(64), created_at FLOAT);
        """)
        conn.execute("INSERT INTO tokens VALUES (?, 'root', 'admin', ?)", (token_hash("ci_old"), time.time()))
        conn.execute("INSERT INTO devices (id, online, created_at) VALUES ('old-dev', 0, ?)", (time.time(),))
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
        await create_schema(engine)  # idempotent
        store = JobStore(engine)
        user = await authenticate(store, "ci_old")
        assert user is not None and user.name == "root" and user.is_admin
        device = await store.device("old-dev")
        assert device is not None and device.owner is None and device.revoked_at is None
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
