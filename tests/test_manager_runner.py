"""The Manager's protocol logic without a broker: the real Runner paired with the real service.

``tests.support.devicelink`` hands what the Runner publishes to the service's own
``DeviceProtocol`` (real JobStore on SQLite, real object store, documents over HTTPS) and
the answers back, losing, duplicating or holding messages where a scenario asks, so every
reply code the Runner handles comes from the service's real rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.pki import Pki
from manager.config import ManagerConfig
from manager.drivers import make_driver
from manager.drivers.base import DeviceStatus
from manager.requests import Requester, RequestTimeout
from manager.runner import IDLE_SETTLE_SECONDS, Runner
from schemas.enums import JobState
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    DocumentStatus,
    FetchDocument,
    FetchJob,
    Hello,
    Identify,
    JobCanceled,
    JobFetchable,
    JobStatus,
    Message,
    PrintServiceAttributes,
    Reply,
    encode,
)
from schemas.model.job import Abort
from tests.support.devicelink import ServiceSide, service_side
from tests.support.docserver import DocServer
from tests.support.documents import make_pdf

DEVICE = "printer-1"

# ---------------------------------------------------------------------------- rig


@dataclass
class Rig:
    runner: Runner
    side: ServiceSide
    config: ManagerConfig

    @property
    def link(self) -> Any:
        return self.side.link

    @property
    def driver(self) -> Any:
        return self.runner.services["office"].driver

    @property
    def output(self) -> Path:
        return self.driver.output_dir

    def printed(self) -> list[int]:
        log = self.driver.printed_log
        return [int(x) for x in log.read_text().split()] if log.exists() else []

    def connect(self, session: str | None = None) -> None:
        self.runner.on_connected(session)

    def reconnect(self) -> None:
        self.runner.on_disconnected()
        self.runner.on_connected()

    def finished(self, job_id: int) -> bool:
        return job_id in self.runner.book.recent()


RigFactory = Callable[..., Any]


@pytest.fixture
async def make_rig(tmp_path: Path, pki: Pki, docs: DocServer, database_url: str) -> Any:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            driver: str = "file",
            options: dict[str, Any] | None = None,
            capabilities: dict[str, Any] | None = None,
            timeout: float = 0.3,
            url_ttl: float = 300.0,
            failing_docs: bool = False,
            other_services: tuple[str, ...] = (),
        ) -> Rig:
            if database_url.startswith("postgresql"):
                timeout *= 2  # a round trip over a socket per statement: slower than SQLite's file
            caps = {
                "document-format-supported": ["application/pdf", "text/plain"],
                "copies-supported": [1, 10],
                **(capabilities or {}),
            }
            config = ManagerConfig(
                device_id=DEVICE,
                ca_file=pki.ca_cert,
                state_dir=tmp_path / "state",
                request_timeout=timeout,
                request_attempts=3,
                services=[
                    {
                        "name": "office",
                        "driver": driver,
                        "driver_options": options or {},  # type: ignore[list-item]
                        "capabilities": caps,
                    }
                ],
            )
            side = await stack.enter_async_context(
                service_side(tmp_path / "service", pki, DEVICE, url_ttl=url_ttl, docs=docs if failing_docs else None,
                             database_url=database_url)
            )
            drivers = {"office": make_driver(driver, "office", options or {}, config.state_dir)}
            runner = Runner(config, drivers, side.link.publish)
            side.link.attach(runner)
            await runner.start()
            stack.push_async_callback(runner.shutdown)
            # The device announced its services on an earlier connection (not recorded).
            announced = [s.attributes() for s in runner.services.values()]
            announced += [PrintServiceAttributes(name=name, capabilities=announced[0].capabilities)
                          for name in other_services]
            assert all(m.ok for m in await side.link.inject(Attributes(services=announced)))  # type: ignore[attr-defined]
            return Rig(runner, side, config)

        yield make


def printer_states(rig: Rig) -> list[str]:
    """The state of the device's (first) service in each attributes message it sent."""
    return [a.services[0].state for a in rig.link.of(Attributes)]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


FAST = {"pages_per_second": 200}
SLOW = {"pages_per_second": 20}
PDF = "application/pdf"

# ---------------------------------------------------------------------------- the job flow


async def test_happy_path_prints_and_reports_in_order(make_rig: RigFactory) -> None:
    rig = await make_rig()
    pdf = make_pdf(3)
    job = await rig.side.add_job([(pdf, PDF), (b"a\nb\n", "text/plain")], {"copies": 2})
    rig.connect()
    await until(lambda: rig.finished(job))
    link = rig.link
    assert link.presence[0].state == "online"
    assert link.types(job) == [
        "fetch-job",
        "acknowledge-job",
        "job-status:processing",
        "document-status:processing",
        "document-status:completed",
        "document-status:processing",
        "document-status:completed",
        "job-status:completed",
    ]
    assert all(code == "ok" for code in link.codes(resends=False)), link.codes()
    row = await rig.side.job(job)
    assert row.state == JobState.COMPLETED and row.impressions_completed == 8
    assert await rig.side.document_states(job) == {1: "completed", 2: "completed"}
    final = link.of(JobStatus, job)[-1]
    assert final.impressions_completed == 8 and final.reasons == ["job-completed-successfully"]
    assert (rig.output / f"job-{job}-doc-1.pdf").read_bytes() == pdf
    assert (rig.output / f"job-{job}-doc-2.txt").read_bytes() == b"a\nb\n"
    assert not list((rig.config.state_dir / "spool").iterdir())  # downloads cleaned up
    assert rig.runner.book.recent()[job] is JobState.COMPLETED
    await until(lambda: printer_states(rig)[-1] == "idle")  # once it has settled
    assert printer_states(rig) == ["idle", "processing", "idle"]


async def test_the_printer_is_reported_idle_after_the_job_once_it_has_settled(make_rig: RigFactory) -> None:
    rig = await make_rig()
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    ended = time.monotonic()
    up = rig.link.up
    # The printer went processing after the job's reports had been answered, not before them.
    processing = next(i for i, m in enumerate(up) if isinstance(m, Attributes) and m.services[0].state == "processing")
    assert [m.type for m in up[:processing] if getattr(m, "job_id", None) == job][-1] == "document-status"
    # The final job-status went out without an attributes message in front of it; idle follows.
    assert printer_states(rig) == ["idle", "processing"]
    await until(lambda: printer_states(rig)[-1] == "idle")
    assert time.monotonic() - ended >= IDLE_SETTLE_SECONDS - 0.1
    assert printer_states(rig) == ["idle", "processing", "idle"]


async def test_back_to_back_jobs_keep_the_printer_processing(make_rig: RigFactory) -> None:
    rig = await make_rig()
    jobs = [await rig.side.add_job([(make_pdf(1), PDF)]) for _ in range(3)]
    rig.connect()
    await until(lambda: all(rig.finished(job) for job in jobs))
    await until(lambda: printer_states(rig)[-1] == "idle")
    # One processing for the three jobs, not a processing and an idle each.
    assert printer_states(rig) == ["idle", "processing", "idle"]
    assert all((rig.output / f"job-{job}-doc-1.pdf").exists() for job in jobs)


async def test_a_stop_is_reported_at_once_while_idle_waits(make_rig: RigFactory) -> None:
    rig = await make_rig()
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    assert printer_states(rig) == ["idle", "processing"]
    rig.driver.set_status(DeviceStatus(stopped=True, reasons=("media-empty",)))  # within the settle time
    await until(lambda: printer_states(rig)[-1] == "stopped", timeout=IDLE_SETTLE_SECONDS / 2)
    await asyncio.sleep(IDLE_SETTLE_SECONDS + 0.2)
    assert printer_states(rig) == ["idle", "processing", "stopped"]  # no late idle after the stop


async def test_duplicate_doorbells_print_exactly_once(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", FAST)
    job = await rig.side.add_job([(make_pdf(2), PDF)])
    rig.connect()  # the doorbell kept for the device, and the sync listing the job as fetchable
    for _ in range(4):
        rig.link.notify(DEVICE, JobFetchable(job_id=job))  # redelivered doorbells
    await until(lambda: rig.finished(job))
    for _ in range(2):
        rig.link.notify(DEVICE, JobFetchable(job_id=job))
    rig.reconnect()  # and a late sync
    # The reconnect's hello and its sync (generous: on PostgreSQL under a loaded CI this takes seconds).
    await until(lambda: len(rig.link.of(Hello)) >= 2 and rig.runner.synced.is_set(), timeout=20.0)
    await asyncio.sleep(0.1)
    # One fetch-job request: a resend after a slow reply carries the same id and is the same request.
    assert len({m.id for m in rig.link.of(FetchJob, job)}) == 1
    assert rig.printed() == [job]


async def test_unsupported_attribute_is_rejected_with_its_name(make_rig: RigFactory) -> None:
    rig = await make_rig()
    # Accepted by the service when the device's capabilities were wider; the device checks again.
    two = await rig.side.add_job([(make_pdf(1), PDF)], {"sides": "two-sided-long-edge"})
    png = await rig.side.add_job([(b"II*\x00", "image/tiff")])  # a format the service cannot transform
    rig.connect()
    await until(lambda: rig.finished(two) and rig.finished(png))
    (ack2,) = rig.link.of(AcknowledgeJob, two)
    assert not ack2.accept and ack2.reason == "unsupported-attributes-or-values" and "sides" in ack2.message
    (ack3,) = rig.link.of(AcknowledgeJob, png)
    assert ack3.reason == "unsupported-document-format" and "image/tiff" in ack3.message
    assert await rig.side.state(two) == JobState.ABORTED
    assert not list(rig.output.iterdir())


async def test_driver_refusal_and_unknown_service(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", {"reject": True}, other_services=("elsewhere",))
    refused = await rig.side.add_job([(make_pdf(1), PDF)])
    # A service this device announced once and no longer has in its config.
    gone = await rig.side.add_job([(make_pdf(1), PDF)], service="elsewhere")
    rig.connect()
    await until(lambda: rig.finished(refused) and rig.finished(gone))
    assert rig.link.of(AcknowledgeJob, refused)[0].reason == "aborted-by-system"
    assert "elsewhere" in rig.link.of(AcknowledgeJob, gone)[0].message
    assert await rig.side.state(gone) == JobState.ABORTED
    assert rig.printed() == []


async def test_lost_reply_means_same_message_again(make_rig: RigFactory) -> None:
    rig = await make_rig()
    lost: set[str] = set()

    def lose_first_processing_reply(m: Message) -> bool:
        if isinstance(m, JobStatus) and m.state == "processing" and not lost:
            lost.add(m.id)
            return True
        return False

    rig.link.lose_reply = lose_first_processing_reply
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    processing = [m for m in rig.link.of(JobStatus, job) if m.state == "processing"]
    assert len(processing) == 2 and processing[0].id == processing[1].id  # the same message, resent
    assert "duplicate" in rig.link.codes(job)
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_lost_fetch_and_acknowledge_replies(make_rig: RigFactory) -> None:
    rig = await make_rig()
    lost: set[str] = set()

    def lose_first_fetch_and_ack_replies(m: Message) -> bool:
        kind = m.type  # type: ignore[attr-defined]
        if kind in ("fetch-job", "acknowledge-job") and kind not in lost:
            lost.add(kind)
            return True
        return False

    rig.link.lose_reply = lose_first_fetch_and_ack_replies
    job = await rig.side.add_job([(make_pdf(2), PDF)], {"copies": 3})
    rig.connect()
    await until(lambda: rig.finished(job))
    fetches = rig.link.of(FetchJob, job)
    # The same id resent; fetching is read-only, so the service answers it in full again.
    assert len(fetches) == 2 and fetches[0].id == fetches[1].id
    acks = rig.link.of(AcknowledgeJob, job)
    assert len(acks) == 2 and acks[0].id == acks[1].id
    assert [r.code for r in rig.link.replies if r.re == acks[0].id] == ["ok", "duplicate"]
    assert rig.link.of(FetchDocument, job) == []  # the duplicate acknowledgement carried the URLs
    row = await rig.side.job(job)
    assert row.state == JobState.COMPLETED and row.impressions_completed == 6  # the ticket was not lost


async def test_hello_lists_a_job_whose_acknowledge_is_in_flight(make_rig: RigFactory) -> None:
    rig = await make_rig()
    reconnected: list[bool] = []

    def lose_first_ack_and_reconnect(m: Message) -> bool:
        if isinstance(m, AcknowledgeJob) and not reconnected:
            reconnected.append(True)
            loop = asyncio.get_running_loop()
            loop.call_soon(rig.runner.on_disconnected)
            loop.call_soon(rig.runner.on_connected, "session-2")
            return True
        return False

    rig.link.lose = lose_first_ack_and_reconnect
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    hellos = rig.link.of(Hello)
    assert [(j.job_id, j.state) for j in hellos[1].jobs] == [(job, "pending")]
    assert rig.link.presence[-1].session == "session-2"
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_lost_request_is_resent_and_hello_too(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen: set[str] = set()

    def lose_first_of_each_kind(m: Message) -> bool:
        kind = m.type  # type: ignore[attr-defined]
        if kind in ("hello", "fetch-job", "acknowledge-job") and kind not in seen:
            seen.add(kind)
            return True
        return False

    rig.link.lose = lose_first_of_each_kind
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    hellos = rig.link.of(Hello)
    assert len(hellos) == 2 and hellos[0].id == hellos[1].id
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_stale_reply_adopts_version_and_resends(make_rig: RigFactory) -> None:
    rig = await make_rig()
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    raced: list[bool] = []

    async def another_report_first(m: Message) -> None:
        # A processing report of this job reaches the service first (as one sent by an
        # earlier connection would): the job's version moves on behind the runner's back.
        if isinstance(m, JobStatus) and m.state == "processing" and not raced:
            raced.append(True)
            row = await rig.side.job(job)
            replies = await rig.link.inject(JobStatus(job_id=job, version=row.version, state=JobState.PROCESSING,
                                                      reasons=["job-printing"]))
            assert [r.code for r in replies] == ["ok"]  # type: ignore[attr-defined]

    rig.link.before = another_report_first
    rig.connect()
    await until(lambda: rig.finished(job))
    first, second = [m for m in rig.link.of(JobStatus, job) if m.state == "processing"]
    assert first.id != second.id and second.version == first.version + 1
    assert rig.link.codes(job, resends=False).count("stale") == 1
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_stale_reply_with_terminal_state_stops_the_job(make_rig: RigFactory) -> None:
    jam = [{"at_page": 3, "event": "media-jam", "seconds": 0.1}]
    rig = await make_rig("simulated", {"pages_per_second": 20, "script": jam})
    job = await rig.side.add_job([(make_pdf(20), PDF)])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1)
    await rig.side.store.transition(job, Abort(message="operator"))  # as the supervisor does: the device is not told...
    # ...so its next report (processing-stopped at the jam) gets a stale reply: aborted.
    await until(lambda: rig.finished(job))
    assert rig.runner.book.recent()[job] is JobState.ABORTED
    assert rig.link.codes(job)[-1] == "stale"
    pages = rig.driver.pages_printed
    await asyncio.sleep(0.3)
    assert rig.driver.pages_printed == pages < 20  # printing stopped
    assert rig.printed() == []
    assert rig.link.types(job)[-1] == "job-status:processing-stopped"  # nothing reported after


async def test_stale_reply_with_cancel_pending_cancels(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", FAST)
    job = await rig.side.add_job([(make_pdf(2), PDF), (make_pdf(2), PDF)])
    rig.link.lose_down = lambda m: isinstance(m, JobCanceled)  # job-canceled lost: only the stale reply tells
    canceled: list[bool] = []

    async def cancel_quietly(m: Message) -> None:
        if isinstance(m, DocumentStatus) and m.state == "completed" and m.document_number == 1 and not canceled:
            canceled.append(True)
            await rig.side.cancel(job)

    rig.link.before = cancel_quietly
    rig.connect()
    await until(lambda: rig.finished(job))
    assert await rig.side.state(job) == JobState.CANCELED
    assert rig.link.types(job)[-1] == "job-status:canceled"
    assert not [m for m in rig.link.of(DocumentStatus, job) if m.document_number == 2]  # never started
    assert rig.printed() == []


async def test_cancel_while_printing_stops_promptly(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    job = await rig.side.add_job([(make_pdf(100), PDF)])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 2)
    started = time.monotonic()
    await rig.side.cancel(job)
    await until(lambda: rig.finished(job))
    assert time.monotonic() - started < 1.0
    row = await rig.side.job(job)
    assert row.state == JobState.CANCELED and rig.driver.pages_printed < 10
    final = rig.link.of(JobStatus, job)[-1]
    assert final.state == "canceled" and final.version == row.version - 1
    assert [m.state for m in rig.link.of(DocumentStatus, job, resends=False)] == ["processing", "canceled"]
    assert (await rig.side.document_states(job))[1] == "canceled"
    assert rig.printed() == []


async def test_cancel_of_a_queued_job_reports_canceled_without_printing(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    first = await rig.side.add_job([(make_pdf(20), PDF)])
    second = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: bool(rig.link.of(AcknowledgeJob, second)) and rig.driver.pages_printed >= 1)
    await asyncio.sleep(0.05)
    await rig.side.cancel(second)
    await until(lambda: rig.finished(second))
    assert not rig.finished(first)  # still printing
    assert rig.link.types(second) == ["fetch-job", "acknowledge-job", "job-status:canceled"]
    assert await rig.side.state(second) == JobState.CANCELED
    await until(lambda: rig.finished(first), timeout=5)
    assert rig.printed() == [first]


async def test_job_canceled_for_a_job_not_held_is_ignored(make_rig: RigFactory) -> None:
    rig = await make_rig()
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    await rig.side.cancel(job)  # before the device connects: it gets the doorbell and job-canceled
    rig.connect()
    await until(lambda: rig.runner.synced.is_set() and len(rig.link.down) >= 3)
    await asyncio.sleep(0.05)
    assert [m.type for m in rig.link.down if not isinstance(m, Reply)][:2] == ["job-fetchable", "job-canceled"]
    assert rig.link.of(JobStatus) == [] and rig.link.of(AcknowledgeJob) == []


async def test_corrupt_download_gets_a_fresh_url_once(make_rig: RigFactory) -> None:
    rig = await make_rig(failing_docs=True)
    pdf = make_pdf(1)
    job = await rig.side.add_job([(pdf, PDF)])
    name = f"objects/jobs/{job}/doc-1"
    rig.side.docs.corrupt[name] = 1
    rig.connect()
    await until(lambda: rig.finished(job))
    assert len(rig.link.of(FetchDocument, job, resends=False)) == 1
    assert rig.side.docs.hits.count(name) == 2
    assert (rig.output / f"job-{job}-doc-1.pdf").read_bytes() == pdf
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_download_failing_twice_aborts_with_document_access_error(make_rig: RigFactory) -> None:
    rig = await make_rig(failing_docs=True)
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    name = f"objects/jobs/{job}/doc-1"
    rig.side.docs.expired.add(name)
    rig.connect()
    await until(lambda: rig.finished(job))
    assert len(rig.link.of(FetchDocument, job, resends=False)) == 1
    assert rig.side.docs.hits.count(name) == 2
    doc = rig.link.of(DocumentStatus, job)[-1]
    assert doc.state == "aborted" and doc.reasons == ["document-access-error"]
    final = rig.link.of(JobStatus, job)[-1]
    assert final.state == "aborted" and final.reasons == ["document-access-error"]
    assert await rig.side.state(job) == JobState.ABORTED


async def test_url_near_expiry_is_replaced_before_use(make_rig: RigFactory) -> None:
    rig = await make_rig(url_ttl=2, failing_docs=True)  # every URL is within the runner's margin
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    assert len(rig.link.of(FetchDocument, job, resends=False)) == 1
    assert rig.side.docs.hits.count(f"objects/jobs/{job}/doc-1") == 1
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_not_found_drops_the_job(make_rig: RigFactory) -> None:
    jam = [{"at_page": 3, "event": "media-empty", "seconds": 0.1}]
    rig = await make_rig("simulated", {"pages_per_second": 20, "script": jam})
    job = await rig.side.add_job([(make_pdf(30), PDF)])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1)
    await rig.side.delete_job(job)  # gone at the cloud: the next report gets not-found
    await until(lambda: rig.finished(job))
    assert rig.runner.book.recent()[job] is None
    assert rig.link.codes(job)[-1] == "not-found"
    pages = rig.driver.pages_printed
    await asyncio.sleep(0.2)
    assert rig.driver.pages_printed == pages and rig.printed() == []


async def test_device_stop_and_resume_are_reported(make_rig: RigFactory) -> None:
    rig = await make_rig(
        "simulated", {"pages_per_second": 50, "script": [{"at_page": 2, "event": "media-jam", "seconds": 0.3}]}
    )
    job = await rig.side.add_job([(make_pdf(4), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    assert rig.link.types(job) == [
        "fetch-job",
        "acknowledge-job",
        "job-status:processing",
        "document-status:processing",
        "job-status:processing-stopped",
        "job-status:processing",
        "document-status:completed",
        "job-status:completed",
    ]
    stopped = next(m for m in rig.link.of(JobStatus, job) if m.state == "processing-stopped")
    assert stopped.reasons == ["printer-stopped"] and "media-jam" in stopped.message
    await until(lambda: printer_states(rig)[-1] == "idle")
    services = [(a.services[0].state, tuple(a.services[0].state_reasons)) for a in rig.link.of(Attributes)]
    assert services == [("idle", ()), ("processing", ()), ("stopped", ("media-jam",)), ("processing", ()), ("idle", ())]
    assert await rig.side.state(job) == JobState.COMPLETED and rig.printed() == [job]


async def test_a_slow_reply_is_resent_and_reported_once(make_rig: RigFactory) -> None:
    # The reply to the report of the jam is held past the request timeout (a loaded machine):
    # the runner sends the same message again, the service answers the resend "duplicate",
    # and the job's sequence of reports is the same as with a prompt reply.
    rig = await make_rig(
        "simulated", {"pages_per_second": 50, "script": [{"at_page": 2, "event": "media-jam", "seconds": 0.3}]}
    )
    held: list[str] = []

    def hold_the_stopped_reply(reply: Message) -> float:
        sent = {m.id: m for m in rig.link.up}.get(reply.re or "")  # type: ignore[attr-defined]
        if isinstance(sent, JobStatus) and sent.state == "processing-stopped" and not held:
            held.append(sent.id)
            return rig.config.request_timeout * 1.5
        return 0.0

    rig.link.delay = hold_the_stopped_reply
    job = await rig.side.add_job([(make_pdf(4), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    stopped = [m for m in rig.link.of(JobStatus, job) if m.state == "processing-stopped"]
    assert len(stopped) == 2 and stopped[0].id == stopped[1].id == held[0]  # the same message, sent twice
    assert [r.code for r in rig.link.replies if r.re == held[0]] == ["ok", "duplicate"]
    assert rig.link.types(job) == [
        "fetch-job",
        "acknowledge-job",
        "job-status:processing",
        "document-status:processing",
        "job-status:processing-stopped",
        "job-status:processing",
        "document-status:completed",
        "job-status:completed",
    ]
    assert rig.link.codes(job, resends=False) == ["ok"] * 8
    assert await rig.side.state(job) == JobState.COMPLETED and rig.printed() == [job]


async def test_printer_failure_aborts_the_job(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", {**FAST, "script": [{"at_page": 2, "event": "fail"}]})
    job = await rig.side.add_job([(make_pdf(3), PDF)])
    rig.connect()
    await until(lambda: rig.finished(job))
    final = rig.link.of(JobStatus, job)[-1]
    assert final.state == "aborted" and "page 2" in final.message
    assert rig.link.of(DocumentStatus, job)[-1].state == "aborted"
    assert await rig.side.state(job) == JobState.ABORTED and rig.printed() == []


# ---------------------------------------------------------------------------- sync, reconnect, requests


async def test_reconnect_reports_held_jobs_and_sync_stops_them(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    job = await rig.side.add_job([(make_pdf(50), PDF)])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1)
    rig.reconnect()
    await until(lambda: len(rig.link.of(Hello)) == 2 and rig.runner.synced.is_set())
    held = rig.link.of(Hello)[1].jobs
    assert [(j.job_id, j.state) for j in held] == [(job, "processing")]
    assert held[0].version == (await rig.side.job(job)).version
    await rig.side.store.transition(job, Abort())  # as the supervisor does; the next sync says stop
    rig.reconnect()
    await until(lambda: rig.finished(job))
    assert rig.runner.book.recent()[job] is JobState.ABORTED
    await asyncio.sleep(0.1)
    assert rig.printed() == [] and rig.link.types(job)[-1] == "document-status:processing"


async def test_sync_stop_of_a_job_being_canceled_and_unknown(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    first = await rig.side.add_job([(make_pdf(50), PDF)])
    second = await rig.side.add_job([(make_pdf(50), PDF)])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1 and bool(rig.link.of(AcknowledgeJob, second)))
    rig.link.lose_down = lambda m: isinstance(m, JobCanceled)
    await rig.side.cancel(first)  # job-canceled lost: the sync's stop list tells
    await rig.side.delete_job(second)  # gone at the cloud: the sync lists it unknown
    rig.reconnect()
    await until(lambda: rig.finished(first) and rig.finished(second))
    assert await rig.side.state(first) == JobState.CANCELED  # reported canceled with the version from sync
    assert rig.runner.book.recent()[second] is None  # dropped without a report
    assert rig.link.types(second) == ["fetch-job", "acknowledge-job"]


async def test_requests_wait_while_offline(make_rig: RigFactory) -> None:
    rig = await make_rig(timeout=0.1)
    job = await rig.side.add_job([(make_pdf(1), PDF)])
    offline_at: list[str] = []

    def go_offline_on_processing(m: Message) -> bool:
        if isinstance(m, JobStatus) and m.state == "processing" and not offline_at:
            offline_at.append(m.id)
            asyncio.get_running_loop().call_soon(rig.runner.on_disconnected)
            return True
        return False

    rig.link.lose = go_offline_on_processing
    rig.connect()
    await until(lambda: bool(offline_at))
    await asyncio.sleep(0.6)  # many timeouts' worth, offline: nothing given up
    assert not rig.finished(job)
    assert len(rig.link.of(JobStatus, job)) == 1
    rig.connect()
    await until(lambda: rig.finished(job))
    assert await rig.side.state(job) == JobState.COMPLETED


async def test_status_request_and_identify(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", FAST)
    rig.connect()
    await until(rig.runner.synced.is_set)
    assert await rig.side.protocol.request_status(DEVICE, rig.link.notify, 5.0)
    rig.link.notify(DEVICE, Identify(actions=["display", "sound"], message="here"))
    await until(lambda: bool(rig.driver.identified))
    assert rig.driver.identified == [(("display", "sound"), "here")]
    attributes = rig.link.of(Attributes)[-1]
    assert attributes.re is not None
    assert attributes.services[0].name == "office" and attributes.services[0].state == "idle"
    assert "text/plain" in attributes.services[0].capabilities.document_format_supported
    assert (await rig.side.store.service("print", "office")).state == "idle"


async def test_undecodable_messages_are_ignored(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.connect()
    rig.runner.on_down(b"\xc1 not msgpack")
    rig.runner.on_down(encode(Reply(re="nobody-waits", ok=True, code="ok")))
    assert rig.runner.connected.is_set()


async def test_requester_resends_same_id_then_gives_up() -> None:
    sent: list[Message] = []
    requester = Requester(lambda m: sent.append(m) or True, timeout=0.05, attempts=3)
    requester.set_online(True)
    message = FetchJob(job_id=1)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await requester.request(message)
    assert 0.14 <= time.monotonic() - started < 1.0
    assert [m.id for m in sent] == [message.id] * 3
    assert requester.outstanding == 0


async def test_requester_matches_reply_and_ignores_late_ones() -> None:
    requester: Requester

    def send(m: Message) -> bool:
        asyncio.get_running_loop().call_later(0.02, requester.resolve, Reply(re=m.id, ok=True, code="ok"))
        return True

    requester = Requester(send, timeout=1, attempts=1)
    requester.set_online(True)
    reply = await requester.request(FetchJob(job_id=1))
    assert reply.code == "ok"
    assert not requester.resolve(Reply(re=reply.re, ok=True, code="duplicate"))


async def test_requester_does_not_count_offline_time() -> None:
    sent: list[Message] = []
    requester = Requester(lambda m: requester.online and (sent.append(m) or True), timeout=0.05, attempts=2)
    task = asyncio.create_task(requester.request(FetchJob(job_id=1)))
    await asyncio.sleep(0.3)  # offline: nothing sent, nothing given up
    assert sent == [] and not task.done()
    requester.set_online(True)
    await asyncio.sleep(0.02)
    requester.resolve(Reply(re=sent[0].id, ok=True, code="ok"))
    assert (await asyncio.wait_for(task, 1)).code == "ok"
