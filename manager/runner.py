"""The job runner: reacts to cloud messages and drives each job from doorbell to final report.

Everything here runs on one asyncio loop (the Manager's own thread); the MQTT network thread
only hands raw payloads over. The runner never trusts a single message to arrive: on every
connect it sends Hello with the jobs it holds and acts on the Sync answer (fetchable, stop,
unknown), doorbells are deduplicated against the JobBook, and every request is resent with
the same id until answered (manager.requests).

Per job (PWG 5100.18 Fetch-Job, Acknowledge-Job, Update-*-Status):

    fetch-job -> validate ticket against the service's capabilities -> acknowledge-job
    -> wait for the printer -> job-status processing -> per document: document-status
    processing, download (verified), print, document-status completed -> job-status completed

Reports for one job go one at a time (``JobRecord.lock``) and always carry the job version
from the last reply; a ``stale`` reply gives the current version and state, which the runner
adopts (stop if the job ended or is being canceled, else send the report again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from manager.config import FaxServiceConfig, ManagerConfig, PrintServiceConfig, ScanServiceConfig
from manager.download import DownloadError, download
from manager.drivers.base import (
    DeviceStatus,
    DocumentTask,
    DriverError,
    JobRefused,
    PrintCanceled,
    PrintDriver,
    PrintJob,
)
from manager.jobbook import JobBook, JobRecord, JobView, Phase
from manager.requests import Requester, RequestTimeout
from manager.scanfax import ScanFaxFlows
from manager.wirelog import describe, log_in, log_out
from schemas import topics
from schemas.enums import DocumentState, JobState, Reason, ServiceState
from schemas.messages import (
    MAX_JOBS_PER_HELLO,
    AcknowledgeJob,
    Attributes,
    Bye,
    DocumentAccess,
    DocumentStatus,
    FaxOutServiceAttributes,
    FetchDocument,
    FetchJob,
    Hello,
    Identify,
    JobCanceled,
    JobFetchable,
    JobStatus,
    Message,
    Presence,
    PrintServiceAttributes,
    ProtocolError,
    Reply,
    ScanServiceAttributes,
    StatusRequest,
    Sync,
    decode_down,
    encode,
)
from schemas.model.ticket import TicketError, validate_print_ticket
from schemas.tickets import PrintJobTicket, ticket_model

log = logging.getLogger("cloudimaging.manager")

#: Publishes a payload on a topic; False when it could not (offline). Thread-safe.
Publish = Callable[[str, bytes], bool]
#: How many jobs may be between fetch-job and acknowledge-job at once.
INTAKE_CONCURRENCY = 4
#: Stale replies followed in a row for one report before giving the report up.
MAX_STALE_ROUNDS = 8
#: A presigned URL this close to expiry is replaced before use.
URL_MARGIN_SECONDS = 5.0
#: While a document prints, report the growing impressions-completed at most this often, so
#: clients watching a long job see progress (and the cloud knows how far a job got).
PROGRESS_REPORT_SECONDS = 2.0
_DROP_CODES = frozenset({"not-found", "not-yours", "not-fetchable"})

Outcome = tuple[JobState, tuple[str, ...], str | None]


class _JobGone(Exception):
    """The cloud says the job is over or not ours: drop it locally, report nothing more."""

    def __init__(self, state: JobState | None, why: str) -> None:
        super().__init__(why)
        self.state = state


class _Canceled(Exception):
    """A cancel was requested while the job waited or ran."""


@dataclass(eq=False)
class ServiceRuntime:
    """One configured service with its driver, its printer slot and what it last published."""

    config: PrintServiceConfig | ScanServiceConfig | FaxServiceConfig
    driver: PrintDriver
    slot: asyncio.Lock = field(default_factory=asyncio.Lock)
    current_job: int | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> tuple[ServiceState, tuple[str, ...], str | None]:
        device: DeviceStatus = self.driver.status
        if device.stopped:
            return ServiceState.STOPPED, device.reasons, device.message
        # A running device's warnings (toner-low from the ipp driver) are published too.
        if self.current_job is not None:
            return ServiceState.PROCESSING, device.reasons, device.message
        return ServiceState.IDLE, device.reasons, device.message

    @property
    def capabilities(self) -> Any:
        """The driver's discovered capabilities (the ipp driver asks the printer), else the config's."""
        return getattr(self.driver, "discovered", None) or self.config.capabilities

    def attributes(self) -> PrintServiceAttributes:
        state, reasons, message = self.status()
        model = {"scan": ScanServiceAttributes, "faxout": FaxOutServiceAttributes}.get(self.config.kind,
                                                                                     PrintServiceAttributes)
        return model(
            name=self.name,
            info=self.config.info,
            location=self.config.location,
            make_and_model=self.config.make_and_model or getattr(self.driver, "make_and_model", None),
            state=state,
            state_reasons=list(reasons),
            state_message=message,
            capabilities=self.capabilities,  # type: ignore[arg-type]
        )


class Runner(ScanFaxFlows):
    """Device-side protocol logic; I/O goes through ``publish`` (MQTT) and the drivers."""

    def __init__(
        self, config: ManagerConfig, drivers: Mapping[str, PrintDriver], publish: Publish, book: JobBook | None = None
    ) -> None:
        self.config = config
        self.device_id = config.device_id
        self._publish = publish
        self.book = book if book is not None else JobBook()  # (an empty book is falsy)
        self.services = {s.name: ServiceRuntime(s, drivers[s.name]) for s in config.services}
        self.requester = Requester(self._send, config.request_timeout, config.request_attempts)
        self.spool = config.state_dir / "spool"
        self._ssl = config.ssl_context()
        self._intake_slots = asyncio.Semaphore(INTAKE_CONCURRENCY)
        self._background: set[asyncio.Task[None]] = set()
        self._hello_task: asyncio.Task[None] | None = None
        self._hello: Hello | None = None
        self._session: str | None = None
        #: Ids of recent Attributes messages: their replies are expected but have no waiter.
        self._attributes_sent: deque[str] = deque(maxlen=32)
        self._sync_seen = asyncio.Event()
        self._last_attributes: object = None
        self._closing = False
        #: Set while connected and subscribed (threading: tests wait on it from outside).
        self.connected = threading.Event()
        #: Set once a Sync answered the Hello of the current connection.
        self.synced = threading.Event()
        #: Notified whenever a job leaves the book (finished or dropped).
        self.changed = threading.Condition()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Prepare the spool and open the drivers; call once on the runner's loop."""
        self.spool.mkdir(parents=True, exist_ok=True)
        for leftover in self.spool.glob("*"):
            leftover.unlink(missing_ok=True)  # partial downloads: documents are fetched again
        for service in self.services.values():
            await service.driver.open()
            service.driver.add_listener(lambda status, s=service: self._on_device_status(s, status))
        self._recover()

    def _recover(self) -> None:
        """Finish the jobs the journal kept across a restart (policy: docs/reliability.md).

        - not claimed yet: forgotten; the service offers it again or takes the claim back;
        - final state decided but not confirmed: the final job-status is sent again;
        - a document was being printed: the job ends aborted with the impressions done, never
          printed again in full (the printer may have output part of it);
        - every document done: completed;
        - claimed, nothing on paper yet (queued, or between documents): printing goes on with
          the documents not yet done.
        """
        for record in self.book.load():
            if not record.claimed:
                self.book.forget(record.job_id, None, remember=False)
                continue
            loop = asyncio.get_running_loop()
            all_done = set(range(1, record.document_count + 1)) <= record.documents_done
            if record.phase is Phase.ENDING:
                log.info("job %d: recovered; resending its final state %s", record.job_id, record.state)
                coro = self._finish(record, record.state, record.reasons, record.message)
            elif record.printing_document is not None:
                message = (f"the Manager restarted while printing document {record.printing_document} after "
                           f"{record.impressions_completed} impression(s); not printed again to avoid duplicates")
                log.warning("job %d: %s", record.job_id, message)
                coro = self._finish(record, JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), message)
            elif all_done:
                log.info("job %d: recovered; all documents were printed", record.job_id)
                coro = self._finish(record, JobState.COMPLETED, (Reason.JOB_COMPLETED_SUCCESSFULLY,), None)
            else:
                log.info("job %d: recovered; printing the documents not yet done", record.job_id)
                record.phase = Phase.QUEUED
                coro = self._run_claimed(record)
            record.task = loop.create_task(coro, name=f"job-{record.job_id}-recovered")

    async def shutdown(self) -> None:
        """Stop all jobs without reporting them, then close the drivers.

        The jobs stay in the journal: the next start lists them in its Hello and finishes
        them by the recovery policy (``_recover``).
        """
        self._closing = True
        self.requester.set_online(False)
        tasks = [r.task for r in self.book.records() if r.task and not r.task.done()]
        for record in self.book.records():
            record.stop.set()
            service = self.services.get(record.service or "")
            if service and record.phase is Phase.PRINTING:
                service.driver.cancel(record.job_id)
        tasks += [t for t in self._background if not t.done()]
        if self._hello_task:
            tasks.append(self._hello_task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for service in self.services.values():
            try:
                await service.driver.close()
            except Exception:
                log.exception("driver of service %s failed to close", service.name)

    def goodbye(self) -> list[tuple[str, bytes]]:
        """The messages to publish before a clean disconnect: Bye and Presence offline."""
        bye = Bye()
        presence = Presence(state="offline", session=self._session)
        log_out(bye)
        log_out(presence)
        return [(topics.up(self.device_id), encode(bye)), (topics.presence(self.device_id), encode(presence))]

    # ------------------------------------------------------------------ connection events

    def on_connected(self, session: str | None = None) -> None:
        """Session up and subscribed: Presence online, Hello (held jobs), Attributes, in order.

        ``session`` is the connection's id, also in its Last Will (see schemas Presence).
        """
        if self._closing:
            return
        self.requester.set_online(True)
        self._session = session
        self._send_presence("online")
        if self._hello_task and not self._hello_task.done():
            self._hello_task.cancel()
        jobs = [r.held() for r in self.book.held()][:MAX_JOBS_PER_HELLO]
        self._hello = Hello(software=self.config.software, jobs=jobs)
        self._sync_seen.clear()
        self._send(self._hello)
        self._hello_task = asyncio.get_running_loop().create_task(self._repeat_hello(self._hello))
        self._publish_attributes(force=True)
        self.connected.set()

    def on_disconnected(self) -> None:
        self.requester.set_online(False)
        self.connected.clear()
        self.synced.clear()
        if self._hello_task and not self._hello_task.done():
            self._hello_task.cancel()

    async def _repeat_hello(self, hello: Hello) -> None:
        """Resend the same Hello until a Sync answers it (the service can dedupe by id)."""
        for attempt in range(1, self.config.request_attempts + 1):
            try:
                await asyncio.wait_for(self._sync_seen.wait(), self.config.request_timeout)
                return
            except TimeoutError:
                log.warning("no sync %.1f s after hello (send %d)", self.config.request_timeout, attempt)
            if attempt < self.config.request_attempts:
                self._send(hello)
        log.error("the service did not answer hello; waiting for doorbells")

    # ------------------------------------------------------------------ sending

    def _send_presence(self, state: Literal["online", "offline"]) -> bool:
        presence = Presence(state=state, session=self._session)
        log_out(presence)
        return self._publish(topics.presence(self.device_id), encode(presence))

    def _send(self, message: Message) -> bool:
        if self._closing and not isinstance(message, Bye):
            return False
        data = encode(message)
        log_out(message)
        sent = self._publish(topics.up(self.device_id), data)
        if not sent:
            log.info("   (not sent: offline) %s", describe(message))
        return sent

    def _publish_attributes(self, re: str | None = None, force: bool = False) -> None:
        services = [s.attributes() for s in self.services.values()]
        key = [s.model_dump() for s in services]
        if not force and re is None and key == self._last_attributes:
            return
        message = Attributes(services=services, re=re)
        self._attributes_sent.append(message.id)
        if self._send(message):
            self._last_attributes = key

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------ receiving

    def on_down(self, payload: bytes) -> None:
        """One message from the down topic (called on the runner's loop)."""
        if self._closing:
            return
        try:
            message = decode_down(payload)
        except ProtocolError as exc:
            log.warning("<- undecodable message (%s): %s", exc.code, exc.message)
            return
        log_in(message)
        match message:
            case Reply():
                if self.requester.resolve(message):
                    pass
                elif message.re in self._attributes_sent:
                    if not message.ok:
                        log.warning("attributes refused (%s): %s", message.code, message.message or "")
                else:
                    log.info("   reply re=%s matches no waiting request (late or duplicate)", message.re)
            case Sync():
                self._on_sync(message)
            case JobFetchable():
                self._intake(message.job_id)
            case JobCanceled():
                self._on_job_canceled(message)
            case StatusRequest():
                self._publish_attributes(re=message.id)
            case Identify():
                self._on_identify(message)

    def _on_sync(self, sync: Sync) -> None:
        if sync.re is None or self._hello is None or sync.re == self._hello.id:
            self._sync_seen.set()  # else it answers an older Hello: act on it, keep repeating ours
            self.synced.set()
        for stop in sync.stop:
            record = self.book.get(stop.job_id)
            if record is None:
                continue
            record.adopt_version(stop.version)
            if stop.state.terminal:
                self._drop(record, stop.state, f"the job is {stop.state} at the cloud")
            else:
                self._request_cancel(record)
        for job_id in sync.unknown:
            record = self.book.get(job_id)
            if record is None:
                continue
            if record.phase is Phase.FETCHING:
                # Listed while its acknowledge-job was in flight, before the service applied
                # it: the reply to that acknowledge decides, not this Sync.
                continue
            self._drop(record, None, "the cloud does not know the job")
        for job_id in sorted(sync.fetchable):
            self._intake(job_id)

    def _on_job_canceled(self, message: JobCanceled) -> None:
        record = self.book.get(message.job_id)
        if record is None:
            log.info("   job %d is not held here; nothing to cancel", message.job_id)
            return
        record.adopt_version(message.version)
        self._request_cancel(record)

    def _on_identify(self, message: Identify) -> None:
        log.info("identify requested: actions=%s message=%r", ",".join(message.actions), message.message)
        for service in self.services.values():
            self._spawn(self._identify(service, message))

    async def _identify(self, service: ServiceRuntime, message: Identify) -> None:
        try:
            await service.driver.identify(message.actions, message.message)
        except Exception:
            log.exception("identify failed on service %s", service.name)

    def _on_device_status(self, service: ServiceRuntime, status: DeviceStatus) -> None:
        log.info(
            "service %s device %s%s",
            service.name,
            "stopped" if status.stopped else "running",
            f" ({', '.join(status.reasons)})" if status.reasons else "",
        )
        self._publish_attributes()
        record = self.book.get(service.current_job) if service.current_job is not None else None
        if record is None or record.phase is not Phase.PRINTING or record.cancel_requested:
            return
        if status.stopped:
            message = "the printer is stopped: " + ", ".join(status.reasons) if status.reasons else None
            self._spawn(self._report_aside(record, JobState.PROCESSING_STOPPED, (Reason.PRINTER_STOPPED,), message))
        else:
            self._spawn(self._report_aside(record, JobState.PROCESSING, (Reason.JOB_PRINTING,)))

    async def _report_aside(
        self, record: JobRecord, state: JobState, reasons: tuple[str, ...], message: str | None = None
    ) -> None:
        """A job report sent outside the job's own task (device state changes)."""
        try:
            await self._report_job(record, state, reasons, message)
        except _JobGone as gone:
            self._drop(record, gone.state, str(gone))

    # ------------------------------------------------------------------ job control

    def _intake(self, job_id: int) -> None:
        if self.book.seen(job_id):
            log.info("   job %d already held or finished; doorbell ignored", job_id)
            return
        record = JobRecord(job_id)
        self.book.add(record)
        record.task = asyncio.get_running_loop().create_task(self._run_job(record), name=f"job-{job_id}")

    def _request_cancel(self, record: JobRecord) -> None:
        if record.phase is Phase.ENDING or record.cancel_requested:
            return
        log.info("job %d: cancel requested (phase %s)", record.job_id, record.phase)
        record.cancel_requested = True
        record.stop.set()
        record.wakeup.set()
        service = self.services.get(record.service or "")
        if service is not None and record.phase is Phase.PRINTING:
            service.driver.cancel(record.job_id)

    def _drop(self, record: JobRecord, state: JobState | None, why: str) -> None:
        log.info("job %d: dropped locally: %s", record.job_id, why)
        record.stop.set()
        record.wakeup.set()
        service = self.services.get(record.service or "")
        if service is not None and record.phase is Phase.PRINTING:
            service.driver.cancel(record.job_id)
        if record.task is not None and not record.task.done() and record.task is not asyncio.current_task():
            record.task.cancel()
        self._forget(record, state)

    def _forget(self, record: JobRecord, state: JobState | None, remember: bool = True) -> None:
        if self._closing:
            return  # stopping: jobs cut short stay journaled; the next start recovers them
        if self.book.get(record.job_id) is record:
            self.book.forget(record.job_id, state, remember)
        with self.changed:
            self.changed.notify_all()

    def view(self) -> dict[int, JobView]:
        return {r.job_id: JobView.of(r) for r in self.book.records()}

    # ------------------------------------------------------------------ the job flow

    async def _run_job(self, record: JobRecord) -> None:
        try:
            async with self._intake_slots:
                taken = await self._take(record)
        except _JobGone as gone:
            self._drop(record, gone.state, str(gone))
            return
        except Exception:
            log.exception("job %d: failed while fetching it", record.job_id)
            self._forget(record, None, remember=False)  # the service offers it again
            return
        if taken:
            await self._run_claimed(record)

    async def _run_claimed(self, record: JobRecord) -> None:
        """Wait for the printer, print, report the end: the part after the claim."""
        try:
            service = self.services.get(record.service or "")
            if service is None:
                await self._finish(record, JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,),
                                   f"this device has no service named {record.service!r}")
                return
            try:
                await self._wait_turn(record, service)
            except _Canceled:
                outcome: Outcome = (JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None)
            else:
                try:
                    if service.config.kind == "print":
                        outcome = await self._print(record, service)
                    else:
                        outcome = await self._imaging(record, service)  # scan, faxout: manager.scanfax
                finally:
                    service.current_job = None
                    service.slot.release()
                    self._publish_attributes()
            await self._finish(record, *outcome)
        except _JobGone as gone:
            self._drop(record, gone.state, str(gone))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %d: unexpected failure", record.job_id)
            if record.claimed and record.phase is not Phase.ENDING:
                with contextlib.suppress(Exception):
                    await self._finish(
                        record,
                        JobState.ABORTED,
                        (Reason.ABORTED_BY_SYSTEM,),
                        "the manager failed while handling the job",
                    )
            self._forget(record, JobState.ABORTED)

    async def _take(self, record: JobRecord) -> bool:
        """Fetch the job, check it, accept or reject it. True when it is ours to print."""
        try:
            reply = await self.requester.request(FetchJob(job_id=record.job_id))
            if reply.code == "duplicate" and reply.ticket is None:
                # A deduplicated answer without the ticket: fetching is read-only, so ask anew.
                reply = await self.requester.request(FetchJob(job_id=record.job_id))
        except RequestTimeout as exc:
            log.warning("job %d: %s; will retry on the next doorbell or sync", record.job_id, exc)
            self._forget(record, None, remember=False)
            return False
        if reply.code != "ok" and not (reply.code == "duplicate" and reply.ticket is not None):
            log.info("job %d: fetch-job refused (%s)", record.job_id, reply.code)
            self._forget(record, None, remember=False)
            return False
        record.adopt_version(reply.version)
        record.kind = reply.kind.value if reply.kind else "print"
        record.ticket = reply.ticket or ticket_model(record.kind)()
        record.document_count = max(1, reply.document_count or 1)
        record.service = reply.service or (next(iter(self.services)) if len(self.services) == 1 else None)
        self.book.save(record)
        if record.cancel_requested:
            log.info("job %d: canceled before it was accepted", record.job_id)
            self._forget(record, JobState.CANCELED)
            return False

        refusal = self._check(record)
        if refusal is not None:
            reason, message = refusal
            log.info("job %d: rejected: %s (%s)", record.job_id, reason, message)
            with contextlib.suppress(_JobGone):
                await self._locked_exchange(
                    record,
                    lambda v: AcknowledgeJob(
                        job_id=record.job_id, version=v, accept=False, reason=reason, message=message[:1000]
                    ),
                    final=True,
                    persistent=True,
                )
            self._forget(record, JobState.ABORTED)
            return False

        record.acknowledging = True
        try:
            reply = await self._locked_exchange(
                record,
                lambda v: AcknowledgeJob(job_id=record.job_id, version=v, accept=True),
                final=True,
                persistent=True,
            )
        finally:
            record.acknowledging = False
        if reply is None:
            log.warning("job %d: the service did not let this device claim it", record.job_id)
            self._forget(record, None, remember=False)
            return False
        record.claimed = True
        record.phase = Phase.QUEUED
        record.documents = {d.document_number: d for d in reply.documents}
        record.document_count = max(record.document_count, len(reply.documents))
        self.book.save(record)
        return True

    def _check(self, record: JobRecord) -> tuple[str, str] | None:
        """Why this device cannot do the job (fetch-status reason, message), or None."""
        service = self.services.get(record.service or "")
        if service is None:
            return Reason.UNSUPPORTED_ATTRIBUTES, f"this device has no service named {record.service!r}"
        if service.config.kind != "print" or record.kind != "print":
            return self._check_imaging(record, service)
        ticket = record.ticket or PrintJobTicket()
        try:
            validate_print_ticket(ticket, service.capabilities, ticket.document_format)
        except TicketError as exc:
            problem = exc.first
            reason = (
                Reason.UNSUPPORTED_DOCUMENT_FORMAT
                if problem.attribute == "document-format"
                else Reason.UNSUPPORTED_ATTRIBUTES
            )
            return reason, problem.message
        try:
            service.driver.check_job(self._print_job(record))
        except JobRefused as exc:
            return exc.reason, exc.message
        return None

    def _print_job(self, record: JobRecord) -> PrintJob:
        return PrintJob(
            job_id=record.job_id,
            service=record.service or "",
            ticket=record.ticket or PrintJobTicket(),
            document_count=record.document_count,
        )

    async def _wait_turn(self, record: JobRecord, service: ServiceRuntime) -> None:
        """Wait for the printer, or raise _Canceled if the job is canceled meanwhile."""
        if record.cancel_requested:
            raise _Canceled
        acquire = asyncio.ensure_future(service.slot.acquire())
        canceled = asyncio.ensure_future(record.wakeup.wait())
        try:
            await asyncio.wait({acquire, canceled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            canceled.cancel()
            acquire.cancel()  # a no-op once it holds the lock; a cancelled acquire never does
            got = acquire.done() and not acquire.cancelled() and acquire.exception() is None
            if got and (record.cancel_requested or not self._still_held(record)):
                service.slot.release()
                got = False
        if not got:
            raise _Canceled
        service.current_job = record.job_id

    def _still_held(self, record: JobRecord) -> bool:
        return self.book.get(record.job_id) is record

    async def _print(self, record: JobRecord, service: ServiceRuntime) -> Outcome:
        """Print a job that holds the printer, bracketed by the driver's start/end_job."""
        driver = service.driver
        record.phase = Phase.PRINTING
        self.book.save(record)
        self._publish_attributes()
        job = self._print_job(record)
        await driver.start_job(job)
        outcome: Outcome = (JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), "interrupted")
        try:
            outcome = await self._print_documents(record, driver, job)
            return outcome
        finally:
            try:
                await driver.end_job(record.job_id, outcome[0])
            except Exception:
                log.exception("job %d: driver end_job failed", record.job_id)

    async def _print_documents(self, record: JobRecord, driver: PrintDriver, job: PrintJob) -> Outcome:
        try:
            if driver.status.stopped:
                await self._report_job(record, JobState.PROCESSING_STOPPED, (Reason.PRINTER_STOPPED,))
            else:
                await self._report_job(record, JobState.PROCESSING, (Reason.JOB_PRINTING,))
            for number in range(1, record.document_count + 1):
                if number in record.documents_done:
                    continue
                outcome = await self._print_document(record, driver, job, number)
                if outcome is not None:
                    return outcome
            return JobState.COMPLETED, (Reason.JOB_COMPLETED_SUCCESSFULLY,), None
        except _Canceled:
            return JobState.CANCELED, (Reason.JOB_CANCELED_BY_USER,), None

    async def _print_document(
        self, record: JobRecord, driver: PrintDriver, job: PrintJob, number: int
    ) -> Outcome | None:
        """Download and print one document; an Outcome if the job ends here, else None."""
        if record.cancel_requested:
            raise _Canceled
        await self._report_document(record, number, DocumentState.PROCESSING)
        if record.cancel_requested:
            raise _Canceled
        try:
            path, access = await self._download(record, number)
        except DownloadError as exc:
            if exc.kind == "canceled" or record.cancel_requested:
                await self._report_document(record, number, DocumentState.CANCELED)
                raise _Canceled from None
            log.warning("job %d doc %d: %s", record.job_id, number, exc.message)
            reasons = (Reason.DOCUMENT_ACCESS_ERROR,)
            await self._report_document(record, number, DocumentState.ABORTED, reasons, exc.message)
            return JobState.ABORTED, reasons, exc.message
        base = record.impressions_completed
        last_report = time.monotonic()

        def progress(impressions: int) -> None:
            nonlocal last_report
            record.impressions_completed = max(record.impressions_completed, base + impressions)
            now = time.monotonic()
            if now - last_report >= PROGRESS_REPORT_SECONDS and not record.cancel_requested:
                last_report = now
                self._spawn(self._report_job(record, JobState.PROCESSING, (Reason.JOB_PRINTING,)))

        task = DocumentTask(
            job=job,
            document_number=number,
            document_format=access.document_format,
            size=access.size,
            document_name=access.document_name,
        )
        record.printing_document = number
        self.book.save(record)  # from here on, paper may come out: journaled first
        try:
            impressions = await driver.print_document(task, path, progress)
        except PrintCanceled:
            await self._report_document(
                record, number, DocumentState.CANCELED, impressions=record.impressions_completed - base
            )
            raise _Canceled from None
        except DriverError as exc:
            log.warning("job %d doc %d: driver failed: %s", record.job_id, number, exc.message)
            await self._report_document(
                record,
                number,
                DocumentState.ABORTED,
                exc.reasons,
                exc.message,
                impressions=record.impressions_completed - base,
            )
            return JobState.ABORTED, exc.reasons, exc.message
        except Exception as exc:
            log.exception("job %d doc %d: driver crashed", record.job_id, number)
            message = f"driver error: {type(exc).__name__}"
            await self._report_document(
                record,
                number,
                DocumentState.ABORTED,
                (Reason.ABORTED_BY_SYSTEM,),
                message,
                impressions=record.impressions_completed - base,
            )
            return JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,), message
        finally:
            path.unlink(missing_ok=True)
        record.impressions_completed = max(record.impressions_completed, base + impressions)
        record.documents_done.add(number)
        record.printing_document = None
        self.book.save(record)
        await self._report_document(
            record, number, DocumentState.COMPLETED, impressions=record.impressions_completed - base
        )
        return None

    async def _download(self, record: JobRecord, number: int) -> tuple[Path, DocumentAccess]:
        """Fetch one document into the spool; on failure get a fresh URL and try once more."""
        access = record.documents.get(number)
        if access is None or access.expires_at < time.time() + URL_MARGIN_SECONDS:
            access = await self._fetch_document(record, number)
        dest = self.spool / f"job-{record.job_id}-doc-{number}"
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(
                    download,
                    access.url,
                    dest,
                    size=access.size,
                    sha256=access.sha256,
                    verify=self._ssl,
                    timeout=max(30.0, self.config.request_timeout),
                    allow_http=self.config.allow_http_documents,
                    abort=record.stop,
                )
                return dest, access
            except DownloadError as exc:
                if exc.kind in ("canceled", "refused") or attempt == 2:
                    raise
                log.warning("job %d doc %d: %s; asking for a fresh URL", record.job_id, number, exc.message)
            access = await self._fetch_document(record, number)
        raise AssertionError("unreachable")

    async def _fetch_document(self, record: JobRecord, number: int) -> DocumentAccess:
        try:
            reply = await self._locked_exchange(
                record,
                lambda _v: FetchDocument(job_id=record.job_id, document_number=number),
                final=False,
                persistent=False,
            )
        except RequestTimeout:
            reply = None
        access = None
        if reply is not None:
            access = next((d for d in reply.documents if d.document_number == number), None)
        if access is None:
            raise DownloadError("http", f"no URL for document {number} from the service")
        record.documents[number] = access
        return access

    async def _finish(self, record: JobRecord, state: JobState, reasons: tuple[str, ...], message: str | None) -> None:
        """Send the final job-status until it is answered, then let the job go."""
        async with record.lock:
            if self._closing or not self._still_held(record):
                return  # stopping, or dropped meanwhile (the cloud ended it or does not know it)
            record.phase = Phase.ENDING
            record.state = state
            record.reasons = reasons
            record.message = message
            self.book.save(record)
            log.info("job %d: %s (%d impressions)", record.job_id, state, record.impressions_completed)
            with contextlib.suppress(_JobGone):
                await self._exchange(
                    record,
                    lambda v: JobStatus(
                        job_id=record.job_id,
                        version=v,
                        state=state,
                        reasons=list(reasons),
                        message=message,
                        impressions_completed=record.impressions_completed,
                        destination_statuses=self.final_destinations(record, state),
                    ),
                    final=True,
                    persistent=True,
                )
        self._forget(record, state)

    # ------------------------------------------------------------------ reports

    async def _report_job(
        self, record: JobRecord, state: JobState, reasons: tuple[str, ...], message: str | None = None
    ) -> None:
        async with record.lock:
            if record.phase is Phase.ENDING or not self._still_held(record):
                return
            record.state = state
            record.reasons = reasons
            self.book.save(record)
            try:
                await self._exchange(
                    record,
                    lambda v: JobStatus(
                        job_id=record.job_id,
                        version=v,
                        state=state,
                        reasons=list(reasons),
                        message=message,
                        impressions_completed=record.impressions_completed,
                    ),
                    final=False,
                    persistent=False,
                )
            except RequestTimeout as exc:
                log.warning("job %d: %s; going on", record.job_id, exc)

    async def _report_document(
        self,
        record: JobRecord,
        number: int,
        state: DocumentState,
        reasons: tuple[str, ...] = (),
        message: str | None = None,
        impressions: int = 0,
    ) -> None:
        async with record.lock:
            if record.phase is Phase.ENDING or not self._still_held(record):
                return
            try:
                await self._exchange(
                    record,
                    lambda v: DocumentStatus(
                        job_id=record.job_id,
                        document_number=number,
                        version=v,
                        state=state,
                        reasons=list(reasons),
                        message=message,
                        impressions_completed=max(0, impressions),
                    ),
                    final=False,
                    persistent=False,
                )
            except RequestTimeout as exc:
                log.warning("job %d: %s; going on", record.job_id, exc)

    async def _locked_exchange(
        self, record: JobRecord, build: Callable[[int], Message], *, final: bool, persistent: bool
    ) -> Reply | None:
        async with record.lock:
            return await self._exchange(record, build, final=final, persistent=persistent)

    async def _exchange(
        self, record: JobRecord, build: Callable[[int], Message], *, final: bool, persistent: bool
    ) -> Reply | None:
        """Send a job request/report and apply the reply code (caller holds record.lock).

        Returns the Reply on ok/duplicate, None if the report was refused and dropped.
        Raises _JobGone when the job ended at the cloud or is not ours, RequestTimeout when
        a non-persistent request got no answer. ``final`` marks reports that end the job,
        which are resent with the new version even while a cancel is pending.
        """
        for _ in range(MAX_STALE_ROUNDS):
            message = build(record.version)
            reply = await self.requester.request(message, attempts=None if persistent else 0)
            code = reply.code
            if code in ("ok", "duplicate"):
                record.adopt_version(reply.version)
                return reply
            if code == "stale":
                record.adopt_version(reply.version)
                if reply.state is not None and reply.state.terminal:
                    raise _JobGone(reply.state, f"the job is already {reply.state} at the cloud")
                if not final and Reason.PROCESSING_TO_STOP_POINT in reply.reasons:
                    self._request_cancel(record)
                    return None
                if reply.version is None or (getattr(message, "version", None) or 0) >= reply.version:
                    log.warning("job %d: stale reply without a newer version; report dropped", record.job_id)
                    return None
                continue
            if code in _DROP_CODES:
                raise _JobGone(None, f"{describe(message).split()[0]} refused: {code}")
            log.warning(
                "job %d: %s refused with %s: %s; report dropped",
                record.job_id,
                describe(message).split()[0],
                code,
                reply.message or "",
            )
            return None
        log.warning("job %d: still stale after %d rounds; report dropped", record.job_id, MAX_STALE_ROUNDS)
        return None
