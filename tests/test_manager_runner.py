"""The Manager's protocol logic without a broker: the Runner talks to a scripted fake service.

The fake plays the Cloud Service's side through the publish function the Runner is given,
keeping each job in the pure core's Job state machine (schemas.model.job), so version
checks and transitions are the real ones. Documents come from a real HTTPS server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.pki import Pki
from manager.config import ManagerConfig
from manager.drivers import make_driver
from manager.requests import Requester, RequestTimeout
from manager.runner import Runner
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
    Reply,
    StatusRequest,
    StopJob,
    Sync,
    encode,
)
from schemas.model.job import Abort
from tests.support.docserver import DocServer
from tests.support.documents import make_pdf
from tests.support.fakeservice import FakeService

# ---------------------------------------------------------------------------- the fake service


# ---------------------------------------------------------------------------- rig


@dataclass
class Rig:
    runner: Runner
    service: FakeService
    config: ManagerConfig

    @property
    def driver(self) -> Any:
        return self.runner.services["office"].driver

    @property
    def output(self) -> Path:
        return self.driver.output_dir

    def printed(self) -> list[int]:
        log = self.driver.printed_log
        return [int(x) for x in log.read_text().split()] if log.exists() else []

    def connect(self) -> None:
        self.runner.on_connected()

    def finished(self, job_id: int) -> bool:
        return job_id in self.runner.book.recent()


RigFactory = Callable[..., Any]


@pytest.fixture
async def make_rig(tmp_path: Path, pki: Pki, docs: DocServer) -> Any:
    runners: list[Runner] = []

    async def make(
        driver: str = "file",
        options: dict[str, Any] | None = None,
        capabilities: dict[str, Any] | None = None,
        timeout: float = 0.3,
    ) -> Rig:
        caps = {
            "document-format-supported": ["application/pdf", "text/plain"],
            "copies-supported": [1, 10],
            **(capabilities or {}),
        }
        config = ManagerConfig(
            device_id="printer-1",
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
        fake = FakeService(docs)
        drivers = {"office": make_driver(driver, "office", options or {}, config.state_dir)}
        runner = Runner(config, drivers, fake.publish)
        fake.runner = runner
        await runner.start()
        runners.append(runner)
        return Rig(runner, fake, config)

    yield make
    for runner in runners:
        await runner.shutdown()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


FAST = {"pages_per_second": 200}
SLOW = {"pages_per_second": 20}

# ---------------------------------------------------------------------------- the job flow


async def test_happy_path_prints_and_reports_in_order(make_rig: RigFactory) -> None:
    rig = await make_rig()
    pdf = make_pdf(3)
    rig.service.add(1, [(pdf, "application/pdf"), (b"a\nb\n", "text/plain")], {"copies": 2})
    rig.connect()
    await until(lambda: rig.finished(1))
    s = rig.service
    assert s.presence[0].state == "online"
    assert s.types(1) == [
        "fetch-job",
        "acknowledge-job",
        "job-status:processing",
        "document-status:processing",
        "document-status:completed",
        "document-status:processing",
        "document-status:completed",
        "job-status:completed",
    ]
    assert all(r.code == "ok" for r in s.replies), [r.code for r in s.replies]
    fake = s.jobs[1].job
    assert fake.state is JobState.COMPLETED and fake.impressions_completed == 8
    final = s.of(JobStatus, 1)[-1]
    assert final.impressions_completed == 8 and final.reasons == ["job-completed-successfully"]
    assert (rig.output / "job-1-doc-1.pdf").read_bytes() == pdf
    assert (rig.output / "job-1-doc-2.txt").read_bytes() == b"a\nb\n"
    assert not list((rig.config.state_dir / "spool").iterdir())  # downloads cleaned up
    states = [a.services[0].state for a in s.of(Attributes)]
    assert states[0] == "idle" and "processing" in states and states[-1] == "idle"
    assert rig.runner.book.recent()[1] is JobState.COMPLETED


async def test_duplicate_doorbells_print_exactly_once(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", FAST)
    rig.service.add(5, [(make_pdf(2), "application/pdf")])
    rig.connect()  # sync lists job 5 as fetchable
    for _ in range(4):
        rig.service.send(JobFetchable(job_id=5))
    await until(lambda: rig.finished(5))
    for _ in range(2):
        rig.service.send(JobFetchable(job_id=5))
    rig.service.send(Sync(fetchable=[5]))
    await asyncio.sleep(0.1)
    assert len(rig.service.of(FetchJob, 5)) == 1
    assert rig.printed() == [5]


async def test_unsupported_attribute_is_rejected_with_its_name(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.service.add(2, [(make_pdf(1), "application/pdf")], {"sides": "two-sided-long-edge"})
    rig.service.add(3, [(b"\x89PNG", "image/png")])
    rig.connect()
    await until(lambda: rig.finished(2) and rig.finished(3))
    (ack2,) = rig.service.of(AcknowledgeJob, 2)
    assert not ack2.accept and ack2.reason == "unsupported-attributes-or-values" and "sides" in ack2.message
    (ack3,) = rig.service.of(AcknowledgeJob, 3)
    assert ack3.reason == "unsupported-document-format" and "image/png" in ack3.message
    assert rig.service.jobs[2].job.state is JobState.ABORTED
    assert not list(rig.output.iterdir())


async def test_driver_refusal_and_unknown_service(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", {"reject": True})
    rig.service.add(4, [(make_pdf(1), "application/pdf")])
    rig.service.add(6, [(make_pdf(1), "application/pdf")], service="elsewhere")
    rig.connect()
    await until(lambda: rig.finished(4) and rig.finished(6))
    assert rig.service.of(AcknowledgeJob, 4)[0].reason == "aborted-by-system"
    assert "elsewhere" in rig.service.of(AcknowledgeJob, 6)[0].message
    assert rig.printed() == []


async def test_lost_reply_means_same_message_again(make_rig: RigFactory) -> None:
    rig = await make_rig()
    lost: set[str] = set()

    def lose_first_processing_reply(m: Message) -> bool:
        if isinstance(m, JobStatus) and m.state == "processing" and not lost:
            lost.add(m.id)
            return True
        return False

    rig.service.lose_reply = lose_first_processing_reply
    rig.service.add(1, [(make_pdf(1), "application/pdf")])
    rig.connect()
    await until(lambda: rig.finished(1))
    processing = [m for m in rig.service.of(JobStatus, 1) if m.state == "processing"]
    assert len(processing) == 2 and processing[0].id == processing[1].id  # the same message, resent
    assert "duplicate" in [r.code for r in rig.service.replies]
    assert rig.service.jobs[1].job.state is JobState.COMPLETED


async def test_duplicate_replies_without_payload_are_made_good(make_rig: RigFactory) -> None:
    rig = await make_rig()
    lost: set[str] = set()

    def lose_first_fetch_and_ack_replies(m: Message) -> bool:
        kind = m.type  # type: ignore[attr-defined]
        if kind in ("fetch-job", "acknowledge-job") and kind not in lost:
            lost.add(kind)
            return True
        return False

    rig.service.lose_reply = lose_first_fetch_and_ack_replies
    rig.service.add(1, [(make_pdf(2), "application/pdf")], {"copies": 3})
    rig.connect()
    await until(lambda: rig.finished(1))
    fetches = rig.service.of(FetchJob, 1)
    # Same id resent (answered "duplicate" without a ticket), then a fresh fetch.
    assert len(fetches) == 3 and fetches[0].id == fetches[1].id != fetches[2].id
    acks = rig.service.of(AcknowledgeJob, 1)
    assert len(acks) == 2 and acks[0].id == acks[1].id
    assert len(rig.service.of(FetchDocument, 1)) == 1  # the duplicate ack carried no URLs
    assert rig.service.jobs[1].job.state is JobState.COMPLETED
    assert rig.service.jobs[1].job.impressions_completed == 6  # the ticket was not lost


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

    rig.service.lose = lose_first_ack_and_reconnect
    rig.service.add(1, [(make_pdf(1), "application/pdf")])
    rig.connect()
    await until(lambda: rig.finished(1))
    hellos = rig.service.of(Hello)
    assert [(j.job_id, j.state) for j in hellos[1].jobs] == [(1, "pending")]
    assert rig.service.presence[-1].session == "session-2"
    assert rig.service.jobs[1].job.state is JobState.COMPLETED


async def test_lost_request_is_resent_and_hello_too(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen: set[str] = set()

    def lose_first_of_each_kind(m: Message) -> bool:
        kind = m.type  # type: ignore[attr-defined]
        if kind in ("hello", "fetch-job", "acknowledge-job") and kind not in seen:
            seen.add(kind)
            return True
        return False

    rig.service.lose = lose_first_of_each_kind
    rig.service.add(1, [(make_pdf(1), "application/pdf")])
    rig.connect()
    await until(lambda: rig.finished(1))
    hellos = rig.service.of(Hello)
    assert len(hellos) == 2 and hellos[0].id == hellos[1].id
    assert rig.service.jobs[1].job.state is JobState.COMPLETED


async def test_stale_reply_adopts_version_and_resends(make_rig: RigFactory) -> None:
    rig = await make_rig()
    fake = rig.service.add(1, [(make_pdf(1), "application/pdf")])

    def bump_after_accept(m: Message) -> Reply | None:
        if isinstance(m, JobStatus) and m.state == "processing" and len(rig.service.of(JobStatus, 1)) == 1:
            fake.job = dataclasses.replace(fake.job, version=fake.job.version + 3)  # changed behind our back
        return None

    rig.service.override = bump_after_accept
    rig.connect()
    await until(lambda: rig.finished(1))
    first, second = [m for m in rig.service.of(JobStatus, 1) if m.state == "processing"]
    assert first.id != second.id and second.version == first.version + 3
    assert [r.code for r in rig.service.replies].count("stale") == 1
    assert fake.job.state is JobState.COMPLETED


async def test_stale_reply_with_terminal_state_stops_the_job(make_rig: RigFactory) -> None:
    jam = [{"at_page": 3, "event": "media-jam", "seconds": 0.1}]
    rig = await make_rig("simulated", {"pages_per_second": 20, "script": jam})
    fake = rig.service.add(1, [(make_pdf(20), "application/pdf")])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1)
    fake.job = fake.job.apply(Abort(message="operator"))  # the device is not told...
    # ...so its next report (processing-stopped at the jam) gets a stale reply: aborted.
    await until(lambda: rig.finished(1))
    assert rig.runner.book.recent()[1] is JobState.ABORTED
    assert [r.code for r in rig.service.replies][-1] == "stale"
    pages = rig.driver.pages_printed
    await asyncio.sleep(0.3)
    assert rig.driver.pages_printed == pages < 20  # printing stopped
    assert rig.printed() == []
    assert rig.service.types(1)[-1] == "job-status:processing-stopped"  # nothing reported after


async def test_stale_reply_with_cancel_pending_cancels(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", FAST)
    fake = rig.service.add(1, [(make_pdf(2), "application/pdf"), (make_pdf(2), "application/pdf")])

    def cancel_quietly(m: Message) -> Reply | None:
        if (
            isinstance(m, DocumentStatus)
            and m.state == "completed"
            and m.document_number == 1
            and not fake.job.cancel_requested
        ):
            rig.service.cancel(1, notify=False)  # job-canceled lost: only the stale reply tells
        return None

    rig.service.override = cancel_quietly
    rig.connect()
    await until(lambda: rig.finished(1))
    assert fake.job.state is JobState.CANCELED
    assert rig.service.types(1)[-1] == "job-status:canceled"
    assert 2 not in fake.doc_states  # the second document was never started
    assert rig.printed() == []


async def test_cancel_while_printing_stops_promptly(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    fake = rig.service.add(1, [(make_pdf(100), "application/pdf")])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 2)
    started = time.monotonic()
    rig.service.cancel(1)
    await until(lambda: rig.finished(1))
    assert time.monotonic() - started < 1.0
    assert fake.job.state is JobState.CANCELED and rig.driver.pages_printed < 10
    final = rig.service.of(JobStatus, 1)[-1]
    assert final.state == "canceled" and final.version == fake.job.version - 1
    assert fake.doc_states[1] == "canceled"
    assert rig.printed() == []


async def test_cancel_of_a_queued_job_reports_canceled_without_printing(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    rig.service.add(1, [(make_pdf(20), "application/pdf")])
    rig.service.add(2, [(make_pdf(1), "application/pdf")])
    rig.connect()
    await until(lambda: bool(rig.service.of(AcknowledgeJob, 2)) and rig.driver.pages_printed >= 1)
    await asyncio.sleep(0.05)
    rig.service.cancel(2)
    await until(lambda: rig.finished(2))
    assert not rig.finished(1)  # job 1 still printing
    assert rig.service.types(2) == ["fetch-job", "acknowledge-job", "job-status:canceled"]
    assert rig.service.jobs[2].job.state is JobState.CANCELED
    await until(lambda: rig.finished(1), timeout=5)
    assert rig.printed() == [1]


async def test_job_canceled_for_unknown_job_is_ignored(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.connect()
    rig.service.send(JobCanceled(job_id=99, version=3))
    await asyncio.sleep(0.05)
    assert rig.service.of(JobStatus) == []


async def test_corrupt_download_gets_a_fresh_url_once(make_rig: RigFactory) -> None:
    rig = await make_rig()
    pdf = make_pdf(1)
    rig.service.add(1, [(pdf, "application/pdf")])
    rig.service.docs.corrupt["j1d1"] = 1
    rig.connect()
    await until(lambda: rig.finished(1))
    assert len(rig.service.of(FetchDocument, 1)) == 1
    assert rig.service.docs.hits.count("j1d1") == 2
    assert (rig.output / "job-1-doc-1.pdf").read_bytes() == pdf
    assert rig.service.jobs[1].job.state is JobState.COMPLETED


async def test_download_failing_twice_aborts_with_document_access_error(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.service.add(1, [(make_pdf(1), "application/pdf")])
    rig.service.docs.expired.add("j1d1")
    rig.connect()
    await until(lambda: rig.finished(1))
    assert len(rig.service.of(FetchDocument, 1)) == 1
    assert rig.service.docs.hits.count("j1d1") == 2
    doc = rig.service.of(DocumentStatus, 1)[-1]
    assert doc.state == "aborted" and doc.reasons == ["document-access-error"]
    final = rig.service.of(JobStatus, 1)[-1]
    assert final.state == "aborted" and final.reasons == ["document-access-error"]
    assert rig.service.jobs[1].job.state is JobState.ABORTED


async def test_expired_url_is_replaced_before_use(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.service.url_ttl = -1
    rig.service.add(1, [(make_pdf(1), "application/pdf")])
    rig.connect()
    await until(lambda: len(rig.service.of(FetchDocument, 1)) >= 1)
    rig.service.url_ttl = 300
    await until(lambda: rig.finished(1))
    assert rig.service.docs.hits.count("j1d1") == 1


async def test_not_found_drops_the_job(make_rig: RigFactory) -> None:
    jam = [{"at_page": 3, "event": "media-empty", "seconds": 0.1}]
    rig = await make_rig("simulated", {"pages_per_second": 20, "script": jam})
    rig.service.add(1, [(make_pdf(30), "application/pdf")])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1)
    del rig.service.jobs[1]  # deleted at the cloud: the next report gets not-found
    await until(lambda: rig.finished(1))
    assert rig.runner.book.recent()[1] is None
    pages = rig.driver.pages_printed
    await asyncio.sleep(0.2)
    assert rig.driver.pages_printed == pages and rig.printed() == []


async def test_device_stop_and_resume_are_reported(make_rig: RigFactory) -> None:
    rig = await make_rig(
        "simulated", {"pages_per_second": 50, "script": [{"at_page": 2, "event": "media-jam", "seconds": 0.3}]}
    )
    rig.service.add(1, [(make_pdf(4), "application/pdf")])
    rig.connect()
    await until(lambda: rig.finished(1))
    assert rig.service.types(1) == [
        "fetch-job",
        "acknowledge-job",
        "job-status:processing",
        "document-status:processing",
        "job-status:processing-stopped",
        "job-status:processing",
        "document-status:completed",
        "job-status:completed",
    ]
    stopped = next(m for m in rig.service.of(JobStatus, 1) if m.state == "processing-stopped")
    assert stopped.reasons == ["printer-stopped"] and "media-jam" in stopped.message
    services = [(a.services[0].state, tuple(a.services[0].state_reasons)) for a in rig.service.of(Attributes)]
    assert services == [("idle", ()), ("processing", ()), ("stopped", ("media-jam",)), ("processing", ()), ("idle", ())]
    assert rig.service.jobs[1].job.state is JobState.COMPLETED and rig.printed() == [1]


async def test_printer_failure_aborts_the_job(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", {**FAST, "script": [{"at_page": 2, "event": "fail"}]})
    rig.service.add(1, [(make_pdf(3), "application/pdf")])
    rig.connect()
    await until(lambda: rig.finished(1))
    final = rig.service.of(JobStatus, 1)[-1]
    assert final.state == "aborted" and "page 2" in final.message
    assert rig.service.of(DocumentStatus, 1)[-1].state == "aborted"
    assert rig.service.jobs[1].job.state is JobState.ABORTED and rig.printed() == []


# ---------------------------------------------------------------------------- sync, reconnect, requests


async def test_reconnect_reports_held_jobs_and_sync_stops_them(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    fake = rig.service.add(1, [(make_pdf(50), "application/pdf")])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1)
    rig.runner.on_disconnected()
    rig.service.sync_fetchable = False
    rig.connect()
    await until(lambda: len(rig.service.of(Hello)) == 2)
    held = rig.service.of(Hello)[1].jobs
    assert [(j.job_id, j.state) for j in held] == [(1, "processing")] and held[0].version == fake.job.version
    fake.job = fake.job.apply(Abort())
    rig.service.send(Sync(stop=[StopJob(job_id=1, version=fake.job.version, state=fake.job.state)]))
    await until(lambda: rig.finished(1))
    assert rig.runner.book.recent()[1] is JobState.ABORTED
    await asyncio.sleep(0.1)
    assert rig.printed() == [] and rig.service.types(1)[-1] == "document-status:processing"


async def test_sync_stop_of_a_job_being_canceled_and_unknown(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", SLOW)
    fake = rig.service.add(1, [(make_pdf(50), "application/pdf")])
    rig.service.add(2, [(make_pdf(50), "application/pdf")])
    rig.connect()
    await until(lambda: rig.driver.pages_printed >= 1 and bool(rig.service.of(AcknowledgeJob, 2)))
    rig.service.cancel(1, notify=False)
    rig.service.send(Sync(stop=[StopJob(job_id=1, version=fake.job.version, state=fake.job.state)], unknown=[2]))
    await until(lambda: rig.finished(1) and rig.finished(2))
    assert fake.job.state is JobState.CANCELED  # reported canceled with the version from sync
    assert rig.runner.book.recent()[2] is None  # dropped without a report
    assert rig.service.types(2) == ["fetch-job", "acknowledge-job"]


async def test_requests_wait_while_offline(make_rig: RigFactory) -> None:
    rig = await make_rig(timeout=0.1)
    rig.service.add(1, [(make_pdf(1), "application/pdf")])
    offline_at: list[str] = []

    def go_offline_on_processing(m: Message) -> bool:
        if isinstance(m, JobStatus) and m.state == "processing" and not offline_at:
            offline_at.append(m.id)
            asyncio.get_running_loop().call_soon(rig.runner.on_disconnected)
            return True
        return False

    rig.service.lose = go_offline_on_processing
    rig.connect()
    await until(lambda: bool(offline_at))
    await asyncio.sleep(0.6)  # many timeouts' worth, offline: nothing given up
    assert not rig.finished(1)
    assert len(rig.service.of(JobStatus, 1)) == 1
    rig.connect()
    await until(lambda: rig.finished(1))
    assert rig.service.jobs[1].job.state is JobState.COMPLETED


async def test_status_request_and_identify(make_rig: RigFactory) -> None:
    rig = await make_rig("simulated", FAST)
    rig.connect()
    request = StatusRequest()
    rig.service.send(request)
    rig.service.send(Identify(actions=["display", "sound"], message="here"))
    await until(lambda: any(a.re == request.id for a in rig.service.of(Attributes)))
    await until(lambda: bool(rig.driver.identified))
    assert rig.driver.identified == [(("display", "sound"), "here")]
    attributes = rig.service.of(Attributes)[-1]
    assert attributes.services[0].name == "office" and attributes.services[0].state == "idle"
    assert "text/plain" in attributes.services[0].capabilities.document_format_supported


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
