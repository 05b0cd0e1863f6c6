"""A database is an identity: job ids are unique only within one service database, and the
Manager never confuses the jobs of two. The exact case: a Manager prints jobs 1 and 2 on
database A; the service restarts on a new database B whose jobs are 1 and 2 again: both print.
A restored backup of A (same instance id, older state: jobs 1 and 2 pending again) does not make
the Manager print either of them a second time: it reports again the state it gave them, so they
end there too; and a new job of the restored database that reuses an id the Manager finished
(the id sequence went back with the backup) is told apart by its job-uuid and prints."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from broker.credentials import generate_password
from cloud_service.db import make_engine
from cloud_service.instance import database_instance
from manager.jobbook import JobRecord, Phase
from manager.journal import JournalJobBook
from schemas.enums import JobState
from tests.support.brokers import embedded_broker
from tests.support.documents import pdf_bytes
from tests.support.stack import Stack, serving

DEVICE = "identity-printer"


def test_journal_rebase_closes_out_and_forgets_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    book = JournalJobBook(path)
    assert book.instance is None
    book.set_instance("a" * 32)
    book.add(JobRecord(3, claimed=True, phase=Phase.QUEUED, service="p"))
    book.add(JobRecord(1, claimed=True, phase=Phase.QUEUED, service="p"))
    book.forget(1, JobState.COMPLETED)
    book.close()

    again = JournalJobBook(path)
    assert again.instance == "a" * 32 and again.seen(1)
    again.load()
    closed = again.rebase("b" * 32)
    assert [r.job_id for r in closed] == [3]
    assert not again.seen(1) and not again.seen(3) and again.instance == "b" * 32
    again.close()

    third = JournalJobBook(path)
    assert third.instance == "b" * 32 and third.load() == [] and not third.seen(1)
    import sqlite3

    with sqlite3.connect(path) as db:  # kept aside for the operator, never loaded again
        assert db.execute("SELECT instance, job_id FROM closed_out").fetchall() == [("a" * 32, 3)]
    third.close()


async def test_instance_id_is_made_once_and_kept(tmp_path: Path) -> None:
    from cloud_service.db import create_schema

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    await create_schema(engine)
    first, again = await asyncio.gather(database_instance(engine), database_instance(engine))
    assert first == again and len(first) == 32
    assert await database_instance(engine) == first
    await engine.dispose()
    other = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    await create_schema(other)
    assert await database_instance(other) != first
    await other.dispose()


def printer_config(broker_url: str, ca_file: str, password: str, device_dir: Path, *, request_timeout: float,
                   pages_per_second: float | None = None) -> Any:
    """The Manager config of the one simulated printer these tests restore databases under:
    its state (the journal) in ``device_dir/state``, its printed.log in ``device_dir/output``."""
    from manager.config import ManagerConfig
    from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES

    options: dict[str, Any] = {"output_dir": str(device_dir / "output")}
    if pages_per_second is not None:
        options["pages_per_second"] = pages_per_second
    return ManagerConfig.model_validate({
        "device_id": DEVICE, "broker_url": broker_url, "password": password, "ca_file": ca_file,
        "state_dir": str(device_dir / "state"), "keepalive": 5, "request_timeout": request_timeout,
        "services": [{"kind": "print", "name": DEVICE, "driver": "simulated", "driver_options": options,
                      "capabilities": SIMULATED_PRINTER_CAPABILITIES, "make_and_model": "test printer"}]})


def _printed(out: Path) -> list[str]:
    log = out / "printed.log"
    return log.read_text().split() if log.exists() else []


async def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.mark.timeout(300)
async def test_new_database_jobs_print_and_a_restored_one_prints_nothing_twice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from manager.app import Manager

    caplog.set_level(logging.INFO, logger="cloudimaging.manager")
    service_password, device_password = generate_password(), generate_password()
    out = tmp_path / "device" / "output"
    async with embedded_broker(tmp_path / "broker") as b:
        await asyncio.to_thread(b.add_user, "cloud-service", service_password)
        await asyncio.to_thread(b.add_user, DEVICE, device_password)
        config = printer_config(b.url, str(b.pki.ca_cert), device_password, tmp_path / "device", request_timeout=3.0)

        def manager() -> Manager:
            return Manager(config)

        async def submit(stack: Stack, count: int) -> list[int]:
            ids = []
            for _ in range(count):
                response = await stack.submit(pdf_bytes(pages=1, size=10), {}, service=DEVICE)
                assert response.status_code in (200, 201), response.text
                ids.append(response.json()["id"])
            return ids

        # Database A: the device registers its printer, then goes away; jobs 1 and 2 wait.
        first = manager()
        async with serving(Stack, tmp_path / "a", b, service_password) as a:
            instance_a = a.service.instance
            await asyncio.to_thread(first.start)
            await a.wait_service(DEVICE)
            await asyncio.to_thread(first.stop, 10.0)
            assert await submit(a, 2) == [1, 2]
        # The backup of A is taken now (service stopped: the files are consistent).
        shutil.copytree(tmp_path / "a" / "service", tmp_path / "backup" / "service")

        printer = manager()
        try:
            async with serving(Stack, tmp_path / "a", b, service_password) as a:
                await asyncio.to_thread(printer.start)
                ids_a = [1, 2, *await submit(a, 1)]  # job 3 is made after the backup
                assert ids_a == [1, 2, 3]
                uuids_a = {}
                for job_id in ids_a:
                    job = await a.wait_job(job_id, timeout=60)
                    assert job["state"] == "completed"
                    uuids_a[job_id] = job["uuid"]
            assert sorted(_printed(out)) == ["1", "2", "3"]

            # The restored backup: same instance id, jobs 1 and 2 pending again, no job 3.
            caplog.clear()
            async with serving(Stack, tmp_path / "backup", b, service_password, redeliver_after=1.0,
                               supervise_interval=0.5) as restored:
                assert restored.service.instance == instance_a
                assert (await restored.wait_job(1, timeout=5, until=lambda j: True))["state"] == "pending"
                # The restored database last saw the device offline; once it answers a status
                # request the supervisor rings the doorbells of jobs 1 and 2 again. The Manager
                # finished them for this same database: the same job-uuid tells it they
                # are the same jobs, so it reports again what it reported then, printing nothing.
                assert await restored.service.devices.request_status(DEVICE, restored.service.mqtt.publish, 20.0)
                for job_id in (1, 2):
                    job = await restored.wait_job(job_id, timeout=90)
                    assert job["state"] == "completed" and job["uuid"] == uuids_a[job_id], job
                    assert "before the service's database was restored" in job["state_message"], job
                assert sorted(_printed(out)) == ["1", "2", "3"], "a restored database made a job print twice"
                # A new job of the restored database takes id 3 again (the sequence went back
                # with the backup): another job-uuid, so it is a new job, and it prints.
                assert await submit(restored, 1) == [3]
                job = await restored.wait_job(3, timeout=90)
                assert job["state"] == "completed" and job["uuid"] != uuids_a[3], job
                assert "restored" not in (job["state_message"] or ""), job
                assert sorted(_printed(out)) == ["1", "2", "3", "3"]
                await asyncio.sleep(1.0)
                assert sorted(_printed(out)) == ["1", "2", "3", "3"]
            messages = [r.getMessage() for r in caplog.records]
            for job_id in (1, 2):
                assert any(m.startswith(f"job {job_id}: offered again by a restored database") for m in messages), \
                    messages
            assert any(m.startswith("job 3: a new job with the id of one finished here") for m in messages), messages

            # A new database B: jobs 1 and 2 again, and both print.
            caplog.clear()
            async with serving(Stack, tmp_path / "b", b, service_password) as new:
                assert new.service.instance != instance_a
                new_instance = new.service.instance
                # The Manager stayed connected to the broker, so B learns of its printer by
                # asking for its status (the operator's refresh); the doorbells of B's jobs
                # then name database B, and the Manager sends hello to resync.
                assert await new.service.devices.request_status(DEVICE, new.service.mqtt.publish, 20.0)
                await new.wait_service(DEVICE, timeout=60)
                ids_b = await submit(new, 2)
                assert ids_b == [1, 2]
                for job_id in ids_b:
                    assert (await new.wait_job(job_id, timeout=60))["state"] == "completed"
                assert sorted(_printed(out)) == ["1", "1", "2", "2", "3", "3"]
            messages = [r.getMessage() for r in caplog.records]
            assert any("the service's database changed" in m for m in messages), messages
            # B's doorbells named database B: the Manager resynced rather than judge job 1
            # against the ids of A.
            assert any("of database " + new_instance in m and "sending hello again" in m for m in messages), messages
        finally:
            await asyncio.to_thread(printer.stop, 10.0)


def test_journal_keeps_job_uuids_and_migrates_an_old_journal(tmp_path: Path) -> None:
    import sqlite3

    from manager import recovery
    from manager.jobbook import Finished

    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:  # a journal of the release before job uuids were kept
        db.executescript("""
            CREATE TABLE jobs (job_id INTEGER PRIMARY KEY, data TEXT NOT NULL, updated REAL NOT NULL);
            CREATE TABLE finished (job_id INTEGER PRIMARY KEY, state TEXT, at REAL NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """)
        db.execute("INSERT INTO finished (job_id, state, at) VALUES (4, 'completed', ?)", (time.time(),))
    book = JournalJobBook(path)
    assert book.finished(4) == Finished(JobState.COMPLETED, None, 0, False)  # uuid unknown: judged as before
    uuid = "urn:uuid:6b1a1bde-7d0b-4f3e-9c1e-0d9b0f4f2a11"
    book.forget(5, JobState.ABORTED, finished=Finished(JobState.ABORTED, uuid, 3, True))
    # A job claimed only to report again the end it had (a restored database): journaled so.
    replay = JobRecord(6, claimed=True, phase=Phase.QUEUED, service="p", uuid=uuid, replay=JobState.COMPLETED)
    book.add(replay)
    book.unfinish(4)
    book.close()

    again = JournalJobBook(path)
    assert again.finished(4) is None
    assert again.finished(5) == Finished(JobState.ABORTED, uuid, 3, True)
    (loaded,) = again.load()
    assert (loaded.job_id, loaded.uuid, loaded.replay) == (6, uuid, JobState.COMPLETED)
    # After a restart it is finished with that state, never resumed (printed).
    decision = recovery.plan(loaded)
    assert isinstance(decision, recovery.Finish) and decision.outcome[0] is JobState.COMPLETED
    again.close()


@pytest.mark.timeout(300)
async def test_jobs_held_while_the_database_is_restored_end_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A backup taken while the device held jobs (one printing, one claimed and waiting), restored
    while the device goes on: the restored copies are older (lower versions); the device's reports
    build on the restored versions, both jobs complete there, each printed once."""
    import sqlite3

    from manager.app import Manager

    caplog.set_level(logging.INFO, logger="cloudimaging.manager")
    service_password, device_password = generate_password(), generate_password()
    out = tmp_path / "device" / "output"
    async with embedded_broker(tmp_path / "broker") as b:
        await asyncio.to_thread(b.add_user, "cloud-service", service_password)
        await asyncio.to_thread(b.add_user, DEVICE, device_password)
        config = printer_config(b.url, str(b.pki.ca_cert), device_password, tmp_path / "device",
                                request_timeout=2.0, pages_per_second=2)
        printer = Manager(config)
        try:
            async with serving(Stack, tmp_path / "a", b, service_password) as a:
                await asyncio.to_thread(printer.start)
                await a.wait_service(DEVICE)
                ids = []
                for _ in range(2):
                    response = await a.submit(pdf_bytes(pages=16, size=10), {}, service=DEVICE)
                    assert response.status_code in (200, 201), response.text
                    ids.append(response.json()["id"])
                assert ids == [1, 2]
                await a.wait_job(1, until=lambda j: j["state"] == "processing" and j["impressions_completed"] >= 1,
                                 timeout=60)
                await a.wait_job(2, until=lambda j: "job-queued" in j["state_reasons"], timeout=60)
                # An online backup (SQLite's backup API: consistent while the service runs).
                shutil.copytree(tmp_path / "a" / "service", tmp_path / "backup" / "service",
                                ignore=shutil.ignore_patterns("service.db*"))

                def backup() -> None:
                    with sqlite3.connect(tmp_path / "a" / "service" / "service.db") as src, \
                            sqlite3.connect(tmp_path / "backup" / "service" / "service.db") as dst:
                        src.backup(dst)

                await asyncio.to_thread(backup)
                # The device goes on: job 1 prints on, its reports move the job past the backup.
                await a.wait_job(1, until=lambda j: j["impressions_completed"] >= 3, timeout=60)
                assert _printed(out) == []

            # The restored backup, while job 1 is still printing and job 2 waits for the printer.
            async with serving(Stack, tmp_path / "backup", b, service_password, redeliver_after=1.0,
                               supervise_interval=0.5) as restored:
                for job_id in ids:
                    job = await restored.wait_job(job_id, timeout=120)
                    assert job["state"] == "completed", job
                assert sorted(_printed(out)) == ["1", "2"]
                await asyncio.sleep(1.0)
                assert sorted(_printed(out)) == ["1", "2"], "a job held during the restore printed twice"
            messages = [r.getMessage() for r in caplog.records]
            assert any(m.startswith("job 1: the service's version went back") for m in messages), messages
        finally:
            await asyncio.to_thread(printer.stop, 10.0)


@pytest.mark.timeout(300)
async def test_a_job_printing_while_a_backup_from_before_its_claim_is_restored_ends_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The backup holds the job still pending (taken before the device claimed it); it is restored
    while the device prints the job. The restored service refuses the device's reports (no device
    holds the job there); once the job ended here, the restored copy, offered again, is ended with
    the state the device gave it: completed there, printed once."""
    from manager.app import Manager

    caplog.set_level(logging.INFO, logger="cloudimaging.manager")
    service_password, device_password = generate_password(), generate_password()
    out = tmp_path / "device" / "output"
    async with embedded_broker(tmp_path / "broker") as b:
        await asyncio.to_thread(b.add_user, "cloud-service", service_password)
        await asyncio.to_thread(b.add_user, DEVICE, device_password)
        config = printer_config(b.url, str(b.pki.ca_cert), device_password, tmp_path / "device",
                                request_timeout=2.0, pages_per_second=2)
        first = Manager(config)
        async with serving(Stack, tmp_path / "a", b, service_password) as a:
            await asyncio.to_thread(first.start)
            await a.wait_service(DEVICE)
            await asyncio.to_thread(first.stop, 10.0)
            response = await a.submit(pdf_bytes(pages=16, size=10), {}, service=DEVICE)
            assert response.status_code in (200, 201) and response.json()["id"] == 1, response.text
            uuid = response.json()["uuid"]
        shutil.copytree(tmp_path / "a" / "service", tmp_path / "backup" / "service")  # job 1 pending

        printer = Manager(config)
        try:
            async with serving(Stack, tmp_path / "a", b, service_password) as a:
                await asyncio.to_thread(printer.start)
                await a.wait_job(1, until=lambda j: j["state"] == "processing" and j["impressions_completed"] >= 1,
                                 timeout=60)
            # Restored while the device prints job 1 on.
            async with serving(Stack, tmp_path / "backup", b, service_password, redeliver_after=1.0,
                               supervise_interval=0.5) as restored:
                assert (await restored.wait_job(1, timeout=5, until=lambda j: True))["state"] == "pending"
                assert await restored.service.devices.request_status(DEVICE, restored.service.mqtt.publish, 20.0)
                job = await restored.wait_job(1, timeout=120)
                assert job["state"] == "completed" and job["uuid"] == uuid, job
                assert "before the service's database was restored" in job["state_message"], job
                assert job["impressions_completed"] == 16, job
                await asyncio.sleep(1.0)
                assert _printed(out) == ["1"], "the restored copy of a job being printed printed again"
            messages = [r.getMessage() for r in caplog.records]
            assert any(m.startswith("job 1: offered again by a restored database") for m in messages), messages
        finally:
            await asyncio.to_thread(printer.stop, 10.0)
