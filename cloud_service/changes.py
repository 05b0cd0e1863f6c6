"""The change feed across replicas: a job changed on one replica wakes waiters on all of them.

The store's in-process ``ChangeFeed`` wakes the SSE streams, ``--wait`` and IPP job waits of
its own replica. On PostgreSQL, ``ReplicatedFeed`` also tells the other replicas: every job
change committed here is announced with ``pg_notify`` on ``CHANNEL`` (payload
``<replica>:<job id>``), and every replica LISTENs on one dedicated connection and wakes its
local waiters when another replica's announcement arrives, typically within milliseconds.

A notification is a hint, never the data: waiters re-read the job from the database, and they
still re-read it periodically (``event_poll_interval``), so a notification lost with a dropped
connection or a replica that died between its commit and its announcement costs latency,
never correctness. After the listening connection is re-made every local waiter is woken once,
since announcements may have been missed while it was down. On SQLite (one replica) the plain
``ChangeFeed`` is used and nothing here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from typing import Any

from sqlalchemy.engine import make_url

from cloud_service.store import ChangeFeed

log = logging.getLogger("cloudimaging.changes")

#: The NOTIFY channel of job changes.
CHANNEL = "cloudimaging_jobs"
#: Job ids waiting to be announced; beyond this the oldest are dropped (the re-read covers them).
MAX_PENDING = 10_000
#: Server-side TCP keepalives: a listener whose peer vanished is noticed and re-made.
SERVER_SETTINGS = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
                   "application_name": "cloudimaging-changes"}


class ReplicatedFeed(ChangeFeed):
    """A ChangeFeed whose changes are announced to, and heard from, the other replicas."""

    def __init__(self, database_url: str, *, retry: float = 1.0, check_interval: float = 5.0) -> None:
        super().__init__()
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.retry = retry
        self.check_interval = check_interval
        #: Tells this replica's own announcements apart from the others'.
        self.origin = uuid.uuid4().hex[:16]
        self._pending: dict[int, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        #: Set while listening (tests wait for it).
        self.listening = asyncio.Event()
        #: Announcements heard from other replicas (a figure for logs and tests).
        self.heard = 0

    def notify(self, job_id: int) -> None:
        """Wake this replica's waiters now and announce the change to the others."""
        super().notify(job_id)
        self._pending[job_id] = None
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._wake.set()

    def _wake_local(self, job_id: int) -> None:
        ChangeFeed.notify(self, job_id)

    def _wake_all_local(self) -> None:
        for job_id in list(self._waiters):
            self._wake_local(job_id)

    def _lost(self, lost: asyncio.Event, _conn: Any) -> None:
        lost.set()
        self._wake.set()

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, job = payload.partition(":")
        if origin == self.origin:
            return
        try:
            job_id = int(job)
        except ValueError:
            return
        self.heard += 1
        self._wake_local(job_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._close()

    async def _close(self) -> None:
        self.listening.clear()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2.0)
            if not conn.is_closed():
                conn.terminate()

    async def _run(self) -> None:
        import asyncpg

        first = True
        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn, timeout=10, server_settings=SERVER_SETTINGS)
                lost = asyncio.Event()
                self._conn.add_termination_listener(functools.partial(self._lost, lost))
                await self._conn.add_listener(CHANNEL, self._heard)
                self.listening.set()
                if not first:
                    log.info("change feed: listening again; waking every local waiter once")
                    self._wake_all_local()
                first = False
                await self._serve(lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed: database connection failed (%s); retrying in %.0f s", exc, self.retry)
            await self._close()
            await asyncio.sleep(self.retry)

    async def _serve(self, lost: asyncio.Event) -> None:
        """Announce pending changes as they come; check the connection when idle."""
        while True:
            # Not ``wait_for``: on Python 3.11 it swallows a cancel that lands as the event is
            # set, and this loop would then outlive ``stop`` (which waits for it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.check_interval):
                    await self._wake.wait()
            self._wake.clear()
            if lost.is_set():
                raise ConnectionError("the listening connection was closed")
            if not self._pending:
                await self._conn.fetchval("SELECT 1", timeout=self.check_interval)
                continue
            ids, self._pending = list(self._pending), {}
            payloads = [f"{self.origin}:{job_id}" for job_id in ids]
            try:
                await self._conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads,
                                         timeout=self.check_interval)
            except Exception:
                for job_id in ids:  # announced after the reconnect instead (late, not lost)
                    self._pending.setdefault(job_id, None)
                raise


def replicated_feed(database_url: str, **options: Any) -> ReplicatedFeed | None:
    """The cross-replica feed for ``database_url``; None where there is one replica (SQLite)."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return ReplicatedFeed(database_url, **options)
    return None
