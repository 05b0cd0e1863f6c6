"""The change feed across replicas: a job changed on one replica wakes waiters on all of them.

The store's in-process ``ChangeFeed`` wakes the SSE streams, ``--wait`` and IPP job waits of
its own replica. On PostgreSQL, ``ReplicatedFeed`` also tells the other replicas: every job
change committed here is announced with ``pg_notify`` on ``CHANNEL`` (payload
``<replica>:<job id>``), and every replica LISTENs on one dedicated connection and wakes its
local waiters when another replica's announcement arrives, typically within milliseconds.

Announcements are made only while another replica listens: a replica alone on its database
(the common deployment) would otherwise send a statement for every few job changes that
nobody hears, and hear each of them back. The replicas find one another on the same channel:

- on listening (and again after its connection is re-made) a replica says ``<replica>:hello?``;
  every replica that hears it answers ``<replica>:hello``;
- each replica says ``hello`` every ``check_interval`` seconds (it doubles as the listening
  connection's liveness check), and ``bye`` when it stops;
- a replica counts another as present from the first word heard from it until
  ``PEER_LIFETIMES`` intervals pass without one, or its ``bye``.

A change made while a replica believed itself alone is remembered for ``RECENT`` seconds and
announced as soon as a new replica is heard, so a replica that starts listening just after such
a change still hears of it.

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
import time
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
#: The words replicas say to one another on ``CHANNEL`` in place of a job id.
ASK, HELLO, BYE = "hello?", "hello", "bye"
#: A replica unheard for this many of its ``check_interval`` periods is taken to be gone.
PEER_LIFETIMES = 3
#: Seconds a change made while alone is kept, to be announced to a replica heard just after it.
RECENT = 2.0


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
        #: Changes made while alone (job id -> when), oldest first.
        self._recent: dict[int, float] = {}
        #: The other replicas heard (origin -> when last heard).
        self._peers: dict[str, float] = {}
        #: What this replica is to say next besides its announcements (ASK or HELLO), if anything.
        self._say: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        #: Set while listening (tests wait for it).
        self.listening = asyncio.Event()
        #: Announcements heard from other replicas (a figure for logs and tests).
        self.heard = 0
        #: Job changes announced to other replicas (a figure for logs and tests).
        self.announced = 0

    @property
    def peer_lifetime(self) -> float:
        return PEER_LIFETIMES * self.check_interval

    @property
    def alone(self) -> bool:
        """Whether no other replica has been heard within its lifetime."""
        last = max(self._peers.values(), default=None)
        return last is None or time.monotonic() >= last + self.peer_lifetime

    def notify(self, job_id: int) -> None:
        """Wake this replica's waiters now and announce the change to the others, if any."""
        super().notify(job_id)
        if self.alone:
            self._recent.pop(job_id, None)
            self._recent[job_id] = time.monotonic()
            if len(self._recent) > MAX_PENDING:
                del self._recent[next(iter(self._recent))]
            return
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
        origin, _, what = payload.partition(":")
        if origin == self.origin:
            return
        if what == BYE:
            self._peers.pop(origin, None)
            return
        now = time.monotonic()
        last = self._peers.get(origin)
        self._peers[origin] = now
        if last is None or last + self.peer_lifetime <= now:
            self._met()
        if what == ASK:
            self._say = self._say or HELLO
            self._wake.set()
        if what in (ASK, HELLO):
            return
        try:
            job_id = int(what)
        except ValueError:
            return
        self.heard += 1
        self._wake_local(job_id)

    def _met(self) -> None:
        """A replica newly heard: say hello to it, and announce the changes it may have missed."""
        self._say = self._say or HELLO
        since = time.monotonic() - RECENT
        for job_id, when in self._recent.items():
            if when >= since:
                self._pending[job_id] = None
        self._recent.clear()
        self._wake.set()

    def _forget(self, now: float) -> None:
        """Drop what is too old to matter: changes made alone, replicas long unheard."""
        recent = self._recent
        while recent:
            job_id = next(iter(recent))
            if recent[job_id] >= now - RECENT:
                break
            del recent[job_id]
        for origin, last in list(self._peers.items()):
            if last + self.peer_lifetime <= now:
                del self._peers[origin]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        conn = self._conn
        if conn is not None and not conn.is_closed():
            # The others stop announcing to this replica now rather than when it goes unheard.
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self.origin}:{BYE}", timeout=1.0)
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
        """Ask who else listens, then announce changes as they come and say hello every
        ``check_interval`` (which also checks the connection)."""
        self._say = ASK
        hello_at = time.monotonic()
        while True:
            # Not ``wait_for``: on Python 3.11 it swallows a cancel that lands as the event is
            # set, and this loop would then outlive ``stop`` (which waits for it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, hello_at - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            if lost.is_set():
                raise ConnectionError("the listening connection was closed")
            now = time.monotonic()
            payloads = []
            if self._say is not None or now >= hello_at:
                payloads.append(f"{self.origin}:{self._say or HELLO}")
                self._say = None
                hello_at = now + self.check_interval
                self._forget(now)
            ids, self._pending = list(self._pending), {}
            payloads.extend(f"{self.origin}:{job_id}" for job_id in ids)
            if not payloads:
                continue
            try:
                await self._conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads,
                                         timeout=self.check_interval)
            except Exception:
                for job_id in ids:  # announced after the reconnect instead (late, not lost)
                    self._pending.setdefault(job_id, None)
                raise
            self.announced += len(ids)


def replicated_feed(database_url: str, **options: Any) -> ReplicatedFeed | None:
    """The cross-replica feed for ``database_url``; None where there is one replica (SQLite)."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return ReplicatedFeed(database_url, **options)
    return None
