"""Statements run on the driver's cursor (cloud_service/prepared.py) read and write exactly what
SQLAlchemy's own execution does, on SQLite (the store's thread) and on PostgreSQL (asyncpg):
JSON (None as JSON null, as SQLAlchemy writes it), booleans, floats, NULLs; matched-row counts;
driver errors wrapped as SQLAlchemy's and rolled back with their transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cloud_service.db import create_schema, make_engine
from cloud_service.prepared import Prepared
from cloud_service.store import JobStore

_meta = MetaData()
_things = Table("prepared_things", _meta,
                Column("id", Integer, primary_key=True, autoincrement=False),
                Column("data", JSON), Column("flag", Boolean), Column("ratio", Float), Column("note", Text))
_COLUMNS = ("id", "data", "flag", "ratio", "note")
_INSERT = Prepared(insert(_things).values({k: bindparam(k) for k in _COLUMNS}))
_SELECT = select(_things).where(_things.c.id >= bindparam("low")).order_by(_things.c.id)
_ROWS = Prepared(_SELECT)
_UPDATE = Prepared(update(_things).where(_things.c.id == bindparam("b_id")).values(note=bindparam("b_note")))

ROWS = [
    {"id": 1, "data": {"a": [1, 2], "b": "é"}, "flag": True, "ratio": 0.5, "note": "x"},
    {"id": 2, "data": None, "flag": False, "ratio": None, "note": None},
    {"id": 3, "data": ["job-fetchable", "none"], "flag": None, "ratio": 1e-9, "note": 'a "quoted" note'},
]


@pytest.fixture
async def store(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
    store = JobStore(engine)
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


async def test_rows_written_and_read_as_sqlalchemy_does(store: JobStore) -> None:
    # The same rows, once through the driver's cursor and once through SQLAlchemy (ids + 10).
    await store.run(lambda conn: [_INSERT.execute(conn, r) for r in ROWS])
    await store.run(lambda conn: conn.execute(insert(_things), [{**r, "id": r["id"] + 10} for r in ROWS]))

    fast = await store.read(lambda conn: _ROWS.rows(conn, {"low": 0}))
    slow = await store.read(lambda conn: [tuple(r) for r in conn.execute(_SELECT, {"low": 0})])
    assert fast == slow[:3] + [(i + 10, *rest) for i, *rest in slow[:3]]
    assert [dict(zip(_COLUMNS, r, strict=True)) for r in fast[:3]] == ROWS
    assert fast[3:] == [(r[0] + 10, *r[1:]) for r in fast[:3]]

    # None in a JSON column is JSON null both ways (SQLAlchemy's default), not SQL NULL.
    nulls = await store.read(lambda conn: [tuple(r) for r in conn.execute(
        select(_things.c.id, _things.c.data.is_(None), _things.c.ratio.is_(None)).order_by(_things.c.id))])
    assert [n[1:] for n in nulls[:3]] == [n[1:] for n in nulls[3:]] == [(False, False), (False, True),
                                                                        (False, False)]


async def test_counts_many_and_errors(store: JobStore) -> None:
    await store.run(lambda conn: [_INSERT.execute(conn, r) for r in ROWS])
    assert await store.run(lambda conn: _UPDATE.execute(conn, {"b_id": 2, "b_note": "two"})) == 1
    assert await store.run(lambda conn: _UPDATE.execute(conn, {"b_id": 99, "b_note": "none"})) == 0
    await store.run(lambda conn: _UPDATE.execute_many(conn, [{"b_id": 1, "b_note": "one"},
                                                            {"b_id": 3, "b_note": "three"}]))
    notes = await store.read(lambda conn: [r[4] for r in _ROWS.rows(conn, {"low": 0})])
    assert notes == ["one", "two", "three"]

    # A driver error is SQLAlchemy's, and the transaction it broke writes nothing.
    def clash(conn):  # type: ignore[no-untyped-def]
        _UPDATE.execute(conn, {"b_id": 1, "b_note": "rolled back"})
        _INSERT.execute(conn, ROWS[1])

    with pytest.raises(IntegrityError):
        await store.run(clash)
    assert await store.read(lambda conn: _ROWS.rows(conn, {"low": 1})[0][4]) == "one"
    # The connection is usable after it, and a missing parameter is a KeyError before any I/O.
    assert len(await store.read(lambda conn: _ROWS.rows(conn, {"low": 2}))) == 2
    with pytest.raises(KeyError):
        await store.run(lambda conn: _UPDATE.execute(conn, {"b_id": 1}))


def test_expanding_parameters_are_refused() -> None:
    statement = Prepared(select(_things).where(_things.c.id.in_(bindparam("ids", expanding=True))))
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn, pytest.raises(ValueError, match="expanding"):
            statement.rows(conn, {"ids": [1]})
    finally:
        engine.dispose()


async def test_listeners_of_cursor_events_see_every_statement(store: JobStore) -> None:
    """Tracing or a test counting statements hooks SQLAlchemy's cursor events: with a listener
    there, the statements run through ``Connection.execute`` and the listener sees each one,
    with the same results."""
    seen: list[str] = []

    def listener(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    await store.run(lambda conn: [_INSERT.execute(conn, r) for r in ROWS])
    assert seen == []
    unwatched = await store.read(lambda conn: _ROWS.rows(conn, {"low": 0}))
    sync_engine = store.engine.sync_engine
    engines = [sync_engine, *([store._thread_engine] if store._thread_engine is not None else [])]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", listener)
    try:
        watched = await store.read(lambda conn: _ROWS.rows(conn, {"low": 0}))
        assert await store.run(lambda conn: _UPDATE.execute(conn, {"b_id": 3, "b_note": "seen"})) == 1
        await store.run(lambda conn: _UPDATE.execute_many(conn, [{"b_id": 1, "b_note": "a"},
                                                                 {"b_id": 2, "b_note": "b"}]))
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", listener)
    assert watched == unwatched
    assert [s.split()[0] for s in seen] == ["SELECT", "UPDATE", "UPDATE"]
    assert [r[4] for r in await store.read(lambda conn: _ROWS.rows(conn, {"low": 0}))] == ["a", "b", "seen"]


async def test_autocommit_statements_on_postgresql_go_straight_to_asyncpg_and_read_the_same(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In autocommit (``JobStore.read``, the held connections) a statement whose result types are
    known goes to asyncpg's own ``fetch``, not SQLAlchemy's cursor; in a transaction (``run``) it
    still goes through the cursor, which begins it. The rows are the same either way, and a
    driver error is SQLAlchemy's, the connection fit for the next statement."""
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_cursor
    from sqlalchemy.exc import DBAPIError

    engine = make_engine(pg_database)
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
    store = JobStore(engine)
    calls = {"driver": 0, "cursor": 0}
    real_fetch, real_execute = asyncpg.connection.Connection.fetch, AsyncAdapt_asyncpg_cursor._prepare_and_execute

    def fetch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["driver"] += 1
        return real_fetch(self, *args, **kwargs)

    def through_cursor(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["cursor"] += 1
        return real_execute(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch)
    monkeypatch.setattr(AsyncAdapt_asyncpg_cursor, "_prepare_and_execute", through_cursor)
    listed = Prepared(_SELECT)  # its own: the module's statements learnt their types in other tests
    quotient = Prepared(select((bindparam("n", type_=Integer) / bindparam("d", type_=Integer)).label("q")))
    try:
        await store.run(lambda conn: [_INSERT.execute(conn, r) for r in ROWS])
        first = await store.read(lambda conn: listed.rows(conn, {"low": 0}))  # learns the result types
        assert calls == {"driver": 0, "cursor": 4}
        again = await store.read(lambda conn: listed.rows(conn, {"low": 0}))
        assert calls == {"driver": 1, "cursor": 4}
        assert again == first and [dict(zip(_COLUMNS, r, strict=True)) for r in again] == ROWS
        in_transaction = await store.run(lambda conn: listed.rows(conn, {"low": 0}))
        assert in_transaction == first and calls == {"driver": 1, "cursor": 5}

        assert await store.read(lambda conn: quotient.rows(conn, {"n": 6, "d": 3})) == [(2,)]
        with pytest.raises(DBAPIError, match="division by zero") as raised:
            await store.read(lambda conn: quotient.rows(conn, {"n": 1, "d": 0}))
        assert calls["driver"] == 2 and not raised.value.connection_invalidated
        assert await store.read(lambda conn: quotient.rows(conn, {"n": 9, "d": 3})) == [(3,)]
    finally:
        await store.close()
        await engine.dispose()
