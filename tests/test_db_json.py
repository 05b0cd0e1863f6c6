"""JSON columns: written by orjson where it can, by the standard library where orjson refuses,
and read back the same on SQLite and PostgreSQL through the store's own paths."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from cloud_service.db import create_schema, make_engine, read_json, write_json
from cloud_service.store import JobStore


@pytest.mark.parametrize("value", [
    {"copies": 2, "media": "iso_a4_210x297mm", "finishings": [3, 4], "name": "r\u00e9sum\u00e9 \u2603"},
    ["none"], None, 1.5, {"nested": {"deep": [True, False, None]}},
])
def test_orjson_writes_what_the_standard_library_reads(value: object) -> None:
    assert json.loads(write_json(value)) == value == read_json(write_json(value))


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    assert json.loads(write_json({1: "x"})) == {"1": "x"}  # keys that are not strings
    assert json.loads(write_json([2**70])) == [2**70]  # integers beyond 64 bits


async def test_json_columns_round_trip_through_the_store(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await create_schema(engine)
        store = JobStore(engine)
        capabilities = {"media-supported": ["iso_a4_210x297mm"], "copies-supported": [1, 99], "note": "\u00e9\u2603"}
        await store.set_device("dev-j", online=True, last_seen=time.time())
        assert await store.upsert_service("dev-j", "print", "json-office", {
            "state": "idle", "state_reasons": ["none"], "state_message": None, "capabilities": capabilities})
        service = await store.service("print", "json-office")
        assert service is not None and service.capabilities == capabilities and service.state_reasons == ["none"]
        stored = await store.read(lambda conn: conn.execute(
            text("SELECT capabilities FROM services WHERE name = 'json-office'")).scalar())
        assert (json.loads(stored) if isinstance(stored, str) else stored) == capabilities
    finally:
        await store.close()
        await engine.dispose()
