"""Several replicas on one PostgreSQL database (each replica: its own engine, store, feed and
lease, as each ``cloudimaging service`` process has): concurrent writes settle through the
optimistic versions, a change on one replica wakes waiters on another, and exactly one replica
holds the lease for periodic work (the supervisor, the retention sweeper), which moves when its
holder goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from cloud_service.changes import CHANNEL, PEER_LIFETIMES, ReplicatedFeed
from cloud_service.clock import Clock
from cloud_service.config import ServiceConfig
from cloud_service.db import JobEventRow, create_schema, make_engine
from cloud_service.lease import AdvisoryLease, lock_key
from cloud_service.objects import LocalObjectStore, UrlSigner
from cloud_service.retention import Sweeper
from cloud_service.store import JobStore
from cloud_service.supervisor import Supervisor, SupervisorPolicy
from schemas.enums import JobState
from schemas.messages import JobFetchable, Message
from schemas.model.job import Accept, DeviceReport, Job, Release
from tests.support import pg
from tests.support.jobs import fetchable_job
from tests.support.stack import running_stack

#: Generous bounds (a loaded 2-core machine): the figures themselves are printed.
MOVE_BOUND = 20.0
CHANGE_BOUND = 2.0


@dataclass
class Replica:
    store: JobStore
    feed: ReplicatedFeed


@pytest.fixture
async def replicas(pg_database: str) -> AsyncIterator[tuple[Replica, Replica]]:
    engines = [make_engine(pg_database), make_engine(pg_database)]
    # Both replicas start together: the migration lock makes them take turns.
    revisions = await asyncio.gather(*(create_schema(engine) for engine in engines))
    assert revisions[0] == revisions[1]
    made = []
    for engine in engines:
        store = JobStore(engine)
        feed = ReplicatedFeed(pg_database)
        store.feed = feed
        await feed.start()
        made.append(Replica(store, feed))
    for replica in made:
        await asyncio.wait_for(replica.feed.listening.wait(), 20)
    try:
        yield made[0], made[1]
    finally:
        for replica in made:
            await replica.feed.stop()
            await replica.store.close()
        for engine in engines:
            await engine.dispose()


async def processing_job(store: JobStore) -> int:
    job_id = await fetchable_job(store)
    await store.transition(job_id, Accept())
    await store.transition(job_id, DeviceReport(JobState.PROCESSING))
    return job_id


async def wait_until(predicate, bound: float = MOVE_BOUND) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < bound, f"not within {bound} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_two_replicas_writing_one_job_lose_no_update(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    job_id = await processing_job(a.store)
    start = (await a.store.get_job(job_id)).version
    rounds = 25

    async def count_up(store: JobStore, who: str) -> list[int]:
        versions = []
        for i in range(rounds):
            def one_more(job: Job, _row: object, i: int = i) -> DeviceReport:
                return DeviceReport(JobState.PROCESSING, message=f"{who} {i}",
                                    impressions_completed=job.impressions_completed + 1)
            result = await store.transition(job_id, one_more, attempts=200)
            versions.append(result.after.version)
        return versions

    got_a, got_b = await asyncio.gather(count_up(a.store, "a"), count_up(b.store, "b"))
    row = await b.store.get_job(job_id)
    # Every increment of both replicas is in: none was written over.
    assert row.impressions_completed == 2 * rounds
    assert row.version == start + 2 * rounds
    # Each version was won by exactly one write, of one replica.
    assert sorted(got_a + got_b) == list(range(start + 1, start + 2 * rounds + 1))
    async with a.store.sessions() as s:
        events = await s.scalar(select(func.count()).select_from(JobEventRow)
                                .where(JobEventRow.job_id == job_id, JobEventRow.version > start))
    assert events == 2 * rounds


async def test_exactly_one_replica_wins_each_version(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    job_id = await processing_job(a.store)
    for i in range(20):
        seen = (await a.store.get_job(job_id)).version

        def only_from(job: Job, row: object, who: str, i: int = i, seen: int = seen) -> DeviceReport | None:
            if job.version != seen:
                return None  # somebody else won this version
            return DeviceReport(JobState.PROCESSING, message=f"{who} {i}", impressions_completed=i + 1)

        results = await asyncio.gather(a.store.transition(job_id, lambda j, r: only_from(j, r, "a")),
                                       b.store.transition(job_id, lambda j, r: only_from(j, r, "b")))
        winners = [r for r in results if r.after.version != r.before.version]
        assert len(winners) == 1, [(r.before.version, r.after.version) for r in results]
        assert winners[0].after.version == seen + 1
        assert (await b.store.get_job(job_id)).version == seen + 1


async def test_a_change_on_one_replica_wakes_a_waiter_on_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    job_id = await processing_job(a.store)
    delays, after_commit = [], []
    for i in range(100):
        async with a.store.feed.watch(job_id) as woken:
            started = time.perf_counter()
            await b.store.transition(job_id, DeviceReport(JobState.PROCESSING, impressions_completed=i + 1))
            committed = time.perf_counter()
            await asyncio.wait_for(woken.wait(), CHANGE_BOUND)
            delays.append(time.perf_counter() - started)
            after_commit.append(time.perf_counter() - committed)
    for label, figures in (("change made on B to wake-up on A", delays), ("commit on B to wake-up on A", after_commit)):
        figures.sort()
        print(f"\ncross-replica change feed, {label}, {len(figures)} changes: p50 "
              f"{statistics.median(figures) * 1000:.1f} ms, p99 {figures[98] * 1000:.1f} ms, "
              f"max {figures[-1] * 1000:.1f} ms")
    assert a.feed.heard >= 100


async def test_a_feed_stops_when_stopped_just_as_a_change_wakes_it(pg_database: str) -> None:
    """``stop`` cancels the feed's task just as a change wakes it (after 0-3 turns of the loop),
    20 times: each stop returns within its bound, none leaves the task running. Another replica
    listens throughout, so each change is one to announce."""
    hung = 0
    peer = ReplicatedFeed(pg_database)
    await peer.start()
    try:
        for turns in range(4):
            for _ in range(5):
                feed = ReplicatedFeed(pg_database)
                await feed.start()
                await asyncio.wait_for(feed.listening.wait(), 20)
                await wait_until(lambda f=feed: not f.alone, CHANGE_BOUND)  # type: ignore[misc]
                task = feed._task
                feed.notify(1)
                for _ in range(turns):
                    await asyncio.sleep(0)
                try:
                    await asyncio.wait_for(feed.stop(), 3.0)
                except TimeoutError:
                    hung += 1
                    feed._task = None
                    await feed._close()
                assert task is not None and (task.done() or hung)
                if task is not None and not task.done():
                    task.cancel()
    finally:
        await peer.stop()
    assert hung == 0, f"{hung} of 20 stops did not return"


@contextlib.asynccontextmanager
async def overheard(pg_database: str) -> AsyncIterator[list[str]]:
    """Every payload said on the feed's channel, heard by a plain listening connection (not a
    replica: it says nothing, so no feed counts it as one)."""
    import asyncpg

    said: list[str] = []
    conn = await asyncpg.connect(make_url(pg_database).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        await conn.add_listener(CHANNEL, lambda _c, _p, _ch, payload: said.append(payload))
        yield said
    finally:
        await conn.close()


def job_ids_said(said: list[str], feed: ReplicatedFeed) -> list[int]:
    return [int(word) for origin, _, word in (p.partition(":") for p in said)
            if origin == feed.origin and word.isdigit()]


async def test_a_replica_alone_announces_nothing_until_another_listens(pg_database: str) -> None:
    """Alone on its database, a replica asks who listens and then says only its periodic hello:
    none of its job changes is sent. The moment a second replica listens, the first hears of it,
    announces the changes of the last moments (so the newcomer misses none) and every later one;
    when the second says bye, the first is alone again."""
    async with overheard(pg_database) as said:
        # An interval long enough that neither counts the other gone while a loaded machine
        # runs the test (a lifetime is three intervals).
        a = ReplicatedFeed(pg_database, check_interval=1.0)
        b = ReplicatedFeed(pg_database, check_interval=1.0)
        await a.start()
        try:
            await wait_until(lambda: f"{a.origin}:hello?" in said, CHANGE_BOUND)
            for job_id in range(1, 51):
                a.notify(job_id)
            await wait_until(lambda: f"{a.origin}:hello" in said, 1.0 + CHANGE_BOUND)  # a later turn of its loop
            await asyncio.sleep(0.1)
            assert a.alone and a.announced == 0 and job_ids_said(said, a) == []

            async with b.watch(50) as missed, b.watch(51) as later:
                await b.start()
                await asyncio.wait_for(missed.wait(), CHANGE_BOUND)
                assert not a.alone
                await wait_until(lambda: not b.alone, CHANGE_BOUND)
                a.notify(51)
                await asyncio.wait_for(later.wait(), CHANGE_BOUND)
            # A counts an announcement once its statement returns, which may be after the others heard it.
            await wait_until(lambda: job_ids_said(said, a) == list(range(1, 52)) and a.announced >= 51, CHANGE_BOUND)
            assert a.announced == 51 and b.heard == 51

            await b.stop()
            await wait_until(lambda: a.alone, CHANGE_BOUND)
            hellos = said.count(f"{a.origin}:hello")
            a.notify(52)
            # A turn of A's loop after the change: had it been pending, it went with this hello.
            await wait_until(lambda: said.count(f"{a.origin}:hello") > hellos, 1.0 + CHANGE_BOUND)
            assert 52 not in job_ids_said(said, a) and a.announced == 51
        finally:
            await a.stop()
            await b.stop()


async def test_a_replica_unheard_for_its_lifetime_is_taken_to_be_gone(pg_database: str) -> None:
    """A replica whose connection vanishes without a bye (killed) is counted present until
    PEER_LIFETIMES of its intervals pass unheard, then no longer announced to."""
    import asyncpg

    a = ReplicatedFeed(pg_database, check_interval=0.2)
    b = ReplicatedFeed(pg_database, check_interval=0.2, retry=60.0)
    await a.start()
    await b.start()
    try:
        await wait_until(lambda: not a.alone and not b.alone, CHANGE_BOUND)
        admin = await asyncpg.connect(pg.dsn())
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", b._conn.get_server_pid())
        finally:
            await admin.close()
        await wait_until(lambda: not b.listening.is_set(), CHANGE_BOUND)
        # Still counted while its last hello is fresh, then gone.
        await wait_until(lambda: a.alone, PEER_LIFETIMES * 0.2 + CHANGE_BOUND)
        before = a.announced
        a.notify(7)
        await asyncio.sleep(0.5)  # two of A's intervals: a pending change would have been sent
        assert a.announced == before
    finally:
        await a.stop()
        await b.stop()


async def test_the_listener_comes_back_after_its_connection_is_killed(replicas: tuple[Replica, Replica]) -> None:
    import asyncpg

    a, b = replicas
    job_id = await processing_job(a.store)
    admin = await asyncpg.connect(pg.dsn())
    try:
        killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name = 'cloudimaging-changes' AND datname = $1",
                                      a.store.engine.url.database)
    finally:
        await admin.close()
    assert killed == 2
    deadline = time.monotonic() + MOVE_BOUND
    woke = False
    # Keep changing the job until a change made on B wakes A again (the listener is back).
    i = 0
    while time.monotonic() < deadline and not woke:
        i += 1
        async with a.store.feed.watch(job_id) as woken:
            await b.store.transition(job_id, DeviceReport(JobState.PROCESSING, impressions_completed=i))
            try:
                await asyncio.wait_for(woken.wait(), 0.5)
                woke = a.feed.listening.is_set()
            except TimeoutError:
                pass
    assert woke, "the change feed did not come back after its connection was killed"


# ------------------------------------------------------------------ leases


async def test_one_of_two_replicas_holds_the_lease_and_it_moves_when_the_holder_closes(pg_database: str) -> None:
    first, second = AdvisoryLease(pg_database, retry=0.2), AdvisoryLease(pg_database, retry=0.2)
    await first.start()
    await asyncio.wait_for(first.acquired.wait(), MOVE_BOUND)
    await second.start()
    try:
        await asyncio.sleep(1.0)  # several tries of the second
        assert first.held and not second.held
        await first.stop()  # the holder goes away (its connection closes)
        moved = await wait_until(lambda: second.held)
        print(f"\nlease moved {moved:.2f} s after its holder closed its connection")
        assert not first.held
    finally:
        await first.stop()
        await second.stop()


HOLDER = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", int(sys.argv[2]))
    print("held", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


async def test_the_lease_moves_when_its_holder_is_killed(pg_database: str) -> None:
    name = pg_database.rsplit("/", 1)[1]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg.dsn(name), str(lock_key("periodic-work"))],
                              stdout=subprocess.PIPE, text=True)
    lease = AdvisoryLease(pg_database, retry=0.2)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), MOVE_BOUND)
        assert line.strip() == "held"
        await lease.start()
        await asyncio.sleep(1.0)
        assert not lease.held
        os.kill(holder.pid, signal.SIGKILL)
        moved = await wait_until(lambda: lease.held)
        print(f"\nlease moved {moved:.2f} s after its holder was SIGKILLed")
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        await lease.stop()


async def test_only_the_lease_holder_supervises(replicas: tuple[Replica, Replica], pg_database: str) -> None:
    a, b = replicas
    job_id = await fetchable_job(a.store)
    await a.store.transition(job_id, Accept())
    await a.store.transition(job_id, Release())  # fetchable again: a doorbell to ring
    rung: dict[str, int] = {"a": 0, "b": 0}

    def ringer(who: str):  # type: ignore[no-untyped-def]
        def notify(_device: str, message: Message) -> None:
            assert isinstance(message, JobFetchable)
            rung[who] += 1
        return notify

    policy = SupervisorPolicy(redeliver_after=0.0)
    leases = {"a": AdvisoryLease(pg_database, retry=0.2), "b": AdvisoryLease(pg_database, retry=0.2)}
    await leases["a"].start()
    await asyncio.wait_for(leases["a"].acquired.wait(), MOVE_BOUND)
    await leases["b"].start()
    supervisors = {"a": Supervisor(a.store, policy, ringer("a"), leases["a"]),
                   "b": Supervisor(b.store, policy, ringer("b"), leases["b"])}
    for supervisor in supervisors.values():
        supervisor.start(0.1)
    try:
        await wait_until(lambda: rung["a"] >= 3)
        assert rung["b"] == 0
        await leases["a"].stop()
        before = rung["a"]
        await wait_until(lambda: rung["b"] >= 3)
        assert rung["a"] <= before + 1  # at most a sweep already under way when the lease went
    finally:
        for supervisor in supervisors.values():
            await supervisor.stop()
        for lease in leases.values():
            await lease.stop()


# ------------------------------------------------------------------ two real services


async def test_a_stream_on_one_service_sees_a_change_made_through_another(tmp_path: Path, pg_database: str) -> None:
    """Two service replicas (each with its own broker: no device takes part) on one database:
    a client streams a job's events from A while the job is canceled through B's API."""
    async with running_stack(tmp_path / "a", database_url=pg_database) as a, \
            running_stack(tmp_path / "b", database_url=pg_database) as b:
        assert a.service.feed is not None and b.service.feed is not None
        heard_before = a.service.feed.heard
        delays, answered = [], []
        for _ in range(100):
            job_id = await fetchable_job(a.service.store)
            async with a.http.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
                lines = response.aiter_lines()
                first = await _next_event(lines)
                assert first["state"] == "pending"
                started = time.perf_counter()
                canceled = await b.http.post(f"/api/v1/jobs/{job_id}/cancel")
                answered.append(time.perf_counter() - started)
                assert canceled.status_code == 200, canceled.text
                event = await asyncio.wait_for(_next_event(lines), CHANGE_BOUND)
                delays.append(time.perf_counter() - started)
                assert event["state"] == "canceled", event
        after_answer = sorted(max(0.0, total - answer) for total, answer in zip(delays, answered, strict=True))
        for label, figures in (("cancel sent to B to event on A", sorted(delays)),
                               ("B's answer to event on A", after_answer)):
            print(f"\nSSE on replica A, cancel through replica B's API, {label}, {len(figures)} changes: p50 "
                  f"{statistics.median(figures) * 1000:.1f} ms, p99 {figures[98] * 1000:.1f} ms, "
                  f"max {figures[-1] * 1000:.1f} ms")
        # The wake-ups came from B's announcements, not from A's periodic re-read.
        assert a.service.feed.heard - heard_before >= 100


async def _next_event(lines: AsyncIterator[str]) -> dict:
    import orjson

    async for line in lines:
        if line.startswith("data: "):
            return orjson.loads(line[6:])
    raise AssertionError("the event stream ended")


async def test_only_the_lease_holder_sweeps_retention(replicas: tuple[Replica, Replica], pg_database: str,
                                                      tmp_path: Path) -> None:
    a, b = replicas
    config = ServiceConfig(sweep_interval=0.1)
    leases = {"a": AdvisoryLease(pg_database, retry=0.2), "b": AdvisoryLease(pg_database, retry=0.2)}
    await leases["a"].start()
    await asyncio.wait_for(leases["a"].acquired.wait(), MOVE_BOUND)
    await leases["b"].start()
    swept = {"a": 0, "b": 0}
    sweepers = {}
    for who, replica in (("a", a), ("b", b)):
        sweeper = Sweeper(replica.store, LocalObjectStore(tmp_path / who, UrlSigner(b"k" * 32, "https://127.0.0.1:1")),
                          config, Clock(), leases[who])

        async def counted(sweep=sweeper.sweep, who: str = who) -> dict[str, int]:  # type: ignore[no-untyped-def]
            swept[who] += 1
            return await sweep()

        sweeper.sweep = counted  # type: ignore[method-assign]
        sweeper.start()
        sweepers[who] = sweeper
    try:
        await wait_until(lambda: swept["a"] >= 3)
        assert swept["b"] == 0
        await leases["a"].stop()
        before = swept["a"]
        await wait_until(lambda: swept["b"] >= 3)
        assert swept["a"] <= before + 1
    finally:
        for sweeper in sweepers.values():
            await sweeper.stop()
        for lease in leases.values():
            await lease.stop()
