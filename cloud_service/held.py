"""PostgreSQL: the store's autocommit connections, held between hops instead of pooled per hop.

Nearly every hop of a device message or a submit is one autocommit statement (``JobStore.read``
and the single-statement change of ``JobStore.transition``). Through SQLAlchemy's pool each one
took a connection out and gave it back: a ``Connection`` made, the checkout and checkin events,
the isolation level set to AUTOCOMMIT and reset, a reset-on-return. Measured on a local
PostgreSQL, that came to about 45 us of CPU around a statement whose own cost (asyncpg, the
socket) is about 50 us, and to 0.8 ms of a print job's 4.6 ms in process.

``HeldConnections`` takes connections out of the engine's pool once, in autocommit, and keeps
them: a hop takes an idle one from a list (or waits for one) and puts it back. It holds at most
``limit``, two thirds of the pool, so transactions and ORM sessions always find the rest in the
pool. What the pool gave its connections is kept:

- one idle longer than ``db.PING_IDLE_AFTER`` is pinged before use and replaced if the server
  dropped it (``db._ping_idle_connections`` does the same at checkout);
- one whose work failed on a lost connection (SQLAlchemy invalidates it) or that was cancelled
  mid-statement (the driver's state is then unknown) is discarded, not held again;
- ``close`` gives every held connection back to the pool, so the engine's ``dispose`` closes it.

No library offers this: SQLAlchemy's pool is per checkout by design, and asyncpg's own pool
would bypass the dialect's type handling and error wrapping the store's statements rely on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine

from cloud_service import db
from cloud_service.greenlets import spawn

T = TypeVar("T")


def held_limit(pool_size: int) -> int:
    """How many connections of a pool of ``pool_size`` are held: two thirds, rounded down (0 for
    a pool of one: then every hop goes through the pool, as before)."""
    return pool_size * 2 // 3


class _Held:
    __slots__ = ("conn", "used")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.used = time.monotonic()


def _discard(conn: Connection) -> None:
    """Inside a greenlet: close a connection not fit to hold again (invalidated first, so the
    pool does not take it back either)."""
    if not conn.invalidated:
        conn.invalidate()
    conn.close()


def _use(held: _Held, work: Callable[[Connection], T]) -> T:
    """Inside the hop's greenlet: ``work`` on the held connection; a connection SQLAlchemy
    invalidated, or one cancelled mid-statement, is closed here (it can still await)."""
    conn = held.conn
    try:
        return work(conn)
    except Exception:
        if conn.invalidated:
            conn.close()
        raise
    except BaseException:
        _discard(conn)  # the driver may be mid-statement: not fit to hold
        raise


def _checked(held: _Held) -> bool:
    """Inside a greenlet: whether a connection idle a while still answers (if not, closed; if the
    hop is cancelled during the ping, closed too, and the cancellation goes on)."""
    conn = held.conn
    try:
        alive = conn.dialect.do_ping(conn.connection.dbapi_connection)  # type: ignore[arg-type]
    except Exception:
        alive = False
    except BaseException:
        _discard(conn)
        raise
    if not alive:
        _discard(conn)
    return alive


class HeldConnections:
    """At most ``limit`` autocommit connections of ``engine`` (a synchronous face of the async
    engine, with ``isolation_level="AUTOCOMMIT"``), held between uses."""

    def __init__(self, engine: Engine, limit: int) -> None:
        if limit < 1:
            raise ValueError("HeldConnections needs a limit of at least 1")
        self.engine = engine
        self.limit = limit
        self._idle: list[_Held] = []
        #: Connections taken out of the pool and not yet closed (idle or in use).
        self.count = 0
        self._waiters: deque[asyncio.Future[_Held | None]] = deque()
        self._closed = False

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in one greenlet on a held connection; its result."""
        held = await self._take()
        try:
            return await spawn(_use, held, work)
        finally:
            self._give(held)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _take(self) -> _Held:
        while True:
            if self._closed:
                raise RuntimeError("the held connections are closed")
            if self._idle:
                held = self._idle.pop()
                if time.monotonic() - held.used < db.PING_IDLE_AFTER:
                    return held
                try:
                    alive = await spawn(_checked, held)
                except BaseException:
                    self._give(held)  # closed by the check: its place is freed
                    raise
                if alive:
                    return held
                self.count -= 1  # dropped by the server while idle: make another
                continue
            if self.count < self.limit:
                self.count += 1
                try:
                    conn = await spawn(self.engine.connect)
                except BaseException:
                    self.count -= 1
                    self._wake_one()
                    raise
                return _Held(conn)
            waiter: asyncio.Future[_Held | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                held_or_none = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # answered as this waiter gave up
                    handed = waiter.result()
                    if handed is not None:
                        self._give(handed)  # pass the connection on
                    else:
                        self._wake_one()  # pass the room on
                raise
            if held_or_none is not None:
                return held_or_none
            # None: a connection was discarded; there is room to make one

    def _give(self, held: _Held) -> None:
        """Back from a use: to the first waiter, else idle; a discarded one frees its place."""
        if held.conn.closed or held.conn.invalidated or self._closed:
            self.count -= 1
            if not held.conn.closed:
                self._close_later(held)
            self._wake_one()
            return
        held.used = time.monotonic()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(held)
                return
        self._idle.append(held)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_later(self, held: _Held) -> None:
        task = asyncio.get_running_loop().create_task(spawn(held.conn.close))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def close(self) -> None:
        """Give every idle connection back to the pool; one in use goes back when its work ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for held in idle:
            self.count -= 1
            await spawn(held.conn.close)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
