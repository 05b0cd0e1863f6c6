"""Leases: which replica does the periodic work (supervisor, retention sweeper) right now.

Several replicas of the service share one database; each periodic duty must be done by one of
them at a time, and by another as soon as that one dies. On PostgreSQL the lease is a
session-level advisory lock (``pg_try_advisory_lock``) held on a connection of its own: the
server releases it the moment that connection ends, which is when the holder's process dies
(its socket closes) or, for a host that vanished, when TCP keepalives give up on it (set
short here). Every other replica tries to take it every ``retry`` seconds, so the lease moves
within about ``retry`` seconds of the holder's connection ending. The holder checks its
connection as often and lets the lease go as soon as a check fails, so two holders can only
overlap for that long; the work they do is idempotent anyway (the supervisor's changes go
through the jobs' optimistic versions, the sweeper's deletions are repeatable).

On SQLite there is a single replica, and the lease is always held.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any, Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger("cloudimaging.lease")

#: The lease the service's periodic duties share (one database connection per replica).
PERIODIC = "periodic-work"

#: Server-side TCP keepalives on the lease connection: a holder whose host vanished without
#: closing its socket loses the lease after about idle + interval x count seconds.
KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
              "application_name": "cloudimaging-lease"}


def lock_key(name: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of the lease called ``name``."""
    digest = hashlib.sha256(b"cloudimaging-lease:" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Lease(Protocol):
    name: str

    @property
    def held(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class AlwaysHeld:
    """The lease of a single replica (SQLite): always held."""

    def __init__(self, name: str = PERIODIC) -> None:
        self.name = name

    @property
    def held(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class AdvisoryLease:
    """A lease on PostgreSQL: an advisory lock held on a dedicated asyncpg connection."""

    def __init__(self, database_url: str, name: str = PERIODIC, *, retry: float = 1.0,
                 check_timeout: float = 5.0) -> None:
        self.name = name
        self.key = lock_key(name)
        self.retry = retry
        self.check_timeout = check_timeout
        url = make_url(database_url)
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: Any = None
        self._held = False
        self._task: asyncio.Task[None] | None = None
        #: Set while held; tests and callers wait on it.
        self.acquired = asyncio.Event()

    @property
    def held(self) -> bool:
        return self._held and self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def stop(self) -> None:
        """Give the lease up (closing the connection releases the lock at once)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._drop()

    async def _drop(self) -> None:
        was = self._held
        self._held = False
        self.acquired.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=self.check_timeout)
            if not conn.is_closed():
                conn.terminate()
        if was:
            log.warning("lease %s: released", self.name)

    async def _run(self) -> None:
        import asyncpg

        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._held = False
                    self._conn = await asyncpg.connect(self._dsn, timeout=self.check_timeout,
                                                       server_settings=KEEPALIVES)
                if not self._held:
                    if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key,
                                                 timeout=self.check_timeout):
                        self._held = True
                        self.acquired.set()
                        log.info("lease %s: held by this replica", self.name)
                else:
                    await self._conn.fetchval("SELECT 1", timeout=self.check_timeout)
            except Exception as exc:  # connection refused, dropped, timed out: drop and retry
                log.warning("lease %s: database connection failed (%s); trying again", self.name, exc)
                await self._drop()
            await asyncio.sleep(self.retry)


def lease_for(database_url: str, name: str = PERIODIC, **options: Any) -> Lease:
    """The lease ``name`` for the replicas sharing ``database_url``."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return AdvisoryLease(database_url, name, **options)
    return AlwaysHeld(name)
