"""Core statements run on the driver's cursor: the store's hot path without SQLAlchemy's
per-statement execution machinery.

``Connection.execute`` of a cached Core statement costs SQLAlchemy about 70 us (SQLite) to
110 us (asyncpg) of Python before and after the driver's own work: an execution context, the
compiled-cache lookup, parameter processing through generic code, a ``CursorResult`` and its
row objects. A device message runs a handful of statements, so on the hot path that machinery
cost more than the database did. ``Prepared`` keeps what SQLAlchemy does that matters here, taken
from SQLAlchemy itself, once per dialect: the SQL string its compiler writes, the order of the
positional parameters, and each column type's bind and result processors (JSON, booleans). A
call is then the driver's ``cursor.execute`` and those processors, nothing else.

The statements run on the same DBAPI connection as the surrounding SQLAlchemy ``Connection``,
so they are part of its transaction (or of its autocommit). On PostgreSQL in autocommit (the
store's held connections), a query whose result types are known goes further, to asyncpg's own
``fetch`` (``_autocommit_asyncpg``): SQLAlchemy's asyncpg cursor adds about 25 us a statement
there (a lock, a statement cache of its own, a description and a status parse), for a
transaction that autocommit does not have. Where something listens to
SQLAlchemy's cursor events (tracing, a test counting statements) they run through
``Connection.execute`` instead, so nothing goes unseen. A driver error goes through
SQLAlchemy's own handling (wrapped in ``sqlalchemy.exc``, the connection invalidated if it was
lost). Only plain statements qualify: no expanding ``IN`` parameters, no defaults computed by
Python. Everything else stays on ``Connection.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util import await_only

Processor = Callable[[Any], Any] | None


class _Plan:
    """One statement compiled for one dialect."""

    __slots__ = ("binds", "columns", "dialect", "keys", "names", "positional", "results", "sql")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if any(b.expanding for b in compiled.binds.values()):
            raise ValueError("Prepared: expanding IN parameters need Connection.execute")
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        # Parameter names in the order the driver takes them (positional styles: ?, $1, %s).
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ()) if self.positional else ()
        self.binds: dict[str, Processor] = {}
        for name, bind in compiled.binds.items():
            self.binds[name] = bind.type.dialect_impl(dialect).bind_processor(dialect)
        self.dialect = dialect
        self.columns = tuple(getattr(statement, "selected_columns", ()))
        self.keys: tuple[str, ...] = tuple(c.key for c in self.columns)
        #: Set at the first run: some processors depend on the type the driver describes.
        self.results: tuple[Processor, ...] | None = None

    def result_processors(self, description: Sequence[Sequence[Any]]) -> tuple[Processor, ...]:
        dialect = self.dialect
        self.results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, d[1])
                             for c, d in zip(self.columns, description, strict=True))
        return self.results

    def parameters(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        binds = self.binds
        if self.positional:
            # Every processor sees None too: SQLAlchemy's JSON writes None as JSON null, not NULL.
            return [params[name] if (p := binds[name]) is None else p(params[name]) for name in self.names]
        return {name: params[name] if p is None else p(params[name]) for name, p in binds.items()}

    @staticmethod
    def row(processors: tuple[Processor, ...], raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(value if p is None else p(value) for p, value in zip(processors, raw, strict=True))


class Prepared:
    """A Core statement (built once, at import) run on the driver's cursor of a ``Connection``."""

    __slots__ = ("_plans", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def _plan(self, conn: Connection) -> _Plan:
        dialect = conn.dialect
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = _Plan(self.statement, dialect)
        return plan

    def _run(self, conn: Connection, plan: _Plan, params: Any, many: bool = False) -> Any:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if many:
                cursor.executemany(plan.sql, params)
            else:
                cursor.execute(plan.sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            # SQLAlchemy's own handling: the error wrapped as sqlalchemy.exc.*, a lost
            # connection invalidated so the pool does not hand it out again.
            conn._handle_dbapi_exception(exc, plan.sql, params, cursor, None)
            raise  # not reached: the call above raises
        return cursor

    @staticmethod
    def _watched(conn: Connection) -> bool:
        """Whether something listens to SQLAlchemy's cursor events on this connection or its
        engine (tracing, a test counting statements): then ``Connection.execute`` runs the
        statement, so the listeners see it as they see every other."""
        dispatch = conn.dispatch
        return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute)

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a write; the number of rows it matched."""
        if self._watched(conn):
            return int(conn.execute(self.statement, dict(params)).rowcount)  # type: ignore[attr-defined]
        plan = self._plan(conn)
        cursor = self._run(conn, plan, plan.parameters(params))
        count = cursor.rowcount
        cursor.close()
        return int(count)

    def execute_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a write once per parameter set, in one call to the driver."""
        if self._watched(conn):
            conn.execute(self.statement, [dict(p) for p in params])
            return
        plan = self._plan(conn)
        self._run(conn, plan, [plan.parameters(p) for p in params], many=True).close()

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a query; its rows as tuples of processed values (JSON parsed, booleans made)."""
        if self._watched(conn):
            return [tuple(r) for r in conn.execute(self.statement, dict(params))]
        plan = self._plan(conn)
        parameters = plan.parameters(params)
        processors = plan.results
        if processors is not None and (driver := _autocommit_asyncpg(conn)) is not None:
            raw = _fetch_asyncpg(conn, driver, plan, parameters)
        else:
            cursor = self._run(conn, plan, parameters)
            raw = cursor.fetchall()
            processors = plan.results if plan.results is not None else plan.result_processors(cursor.description)
            cursor.close()
        if not any(processors):
            return [tuple(r) for r in raw]
        return [plan.row(processors, r) for r in raw]

    def mappings(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run a query of one table's columns; its rows as dicts by column key."""
        keys = self._plan(conn).keys
        return [dict(zip(keys, r, strict=True)) for r in self.rows(conn, params)]


def _autocommit_asyncpg(conn: Connection) -> Any:
    """asyncpg's own connection under ``conn`` when it runs in autocommit, else None.

    SQLAlchemy's asyncpg cursor costs about 25 us a statement over asyncpg's own ``fetch``: a
    lock, its own statement cache, a description and a status parse per call. In autocommit
    (the store's held connections, cloud_service.held) there is no transaction for the cursor to
    begin, and one hop uses the connection at a time, so the statement can go straight to the
    driver, which prepares and caches it itself.
    """
    dbapi = conn.connection.dbapi_connection
    if getattr(dbapi, "isolation_level", None) != "autocommit" or getattr(dbapi, "_transaction", True) is not None:
        return None
    return conn.connection.driver_connection


def _fetch_asyncpg(conn: Connection, driver: Any, plan: _Plan, params: Any) -> list[Any]:
    """The rows of ``plan`` from asyncpg's ``fetch``; a driver error handled as SQLAlchemy handles
    its cursor's (translated to the DBAPI's, wrapped, the connection invalidated if lost)."""
    try:
        return await_only(driver.fetch(plan.sql, *params))
    except Exception as error:
        dbapi = conn.connection.dbapi_connection
        try:
            dbapi._handle_exception(error)  # type: ignore[union-attr]  # raises the DBAPI's error
        except conn.dialect.loaded_dbapi.Error as exc:
            conn._handle_dbapi_exception(exc, plan.sql, params, None, None)
        raise
