"""The job runner: the device's connection to the service, and where each job starts.

Everything here runs on one asyncio loop (the Manager's own thread); the MQTT network thread
only hands raw payloads over. The runner never trusts a single message to arrive: on every
connect it sends Hello with the jobs it holds and acts on the Sync answer (fetchable, stop,
unknown), doorbells are deduplicated against the JobBook, and every request is resent with
the same id until answered (manager.requests).

Per job (PWG 5100.18 Fetch-Job, Acknowledge-Job, Update-*-Status), each part in its module:

    claim (manager.claim: fetch-job, local check, acknowledge-job) -> wait for the device
    (manager.services) -> the kind's flow (manager.flows: print, scan, fax) -> final job-status

A job's exchanges go through its JobChannel (manager.channel: versions, stale replies), and
after a restart the journal's jobs are finished by the policy in manager.recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal

from manager import recovery
from manager.channel import JobChannel, JobGone
from manager.claim import claim
from manager.config import ManagerConfig
from manager.drivers.base import DeviceDriver, DeviceStatus
from manager.flows.base import CANCELED, Flow, FlowContext, Outcome
from manager.flows.fax import FaxFlow, final_destinations
from manager.flows.print import PrintFlow
from manager.flows.scan import ScanFlow
from manager.jobbook import Finished, JobBook, JobRecord, JobView, Phase
from manager.requests import Requester, RequestTimeout
from manager.services import KindDriver, ServiceRuntime
from manager.wirelog import describe, log_in, log_out
from schemas import topics
from schemas.enums import JobState, Reason, ServiceState
from schemas.messages import (
    MAX_JOBS_PER_HELLO,
    AcknowledgeJob,
    Attributes,
    Bye,
    Hello,
    Identify,
    JobCanceled,
    JobFetchable,
    JobStatus,
    Message,
    Presence,
    ProtocolError,
    Reply,
    StatusRequest,
    Sync,
    decode_down,
    encode,
)
from schemas.tickets import ticket_model

log = logging.getLogger("cloudimaging.manager")

#: Publishes a payload on a topic; False when it could not (offline). Thread-safe.
Publish = Callable[[str, bytes], bool]
#: How many jobs may be between fetch-job and acknowledge-job at once.
INTAKE_CONCURRENCY = 4
#: A doorbell for a job finished (or asked about) less than this long ago is a late duplicate:
#: ignored without asking the service. Later ones are asked about once more (a restored
#: database offers finished jobs again; its supervisor rings their doorbells again).
RECHECK_FINISHED_AFTER = 10.0
#: A service that goes back to idle when a job ends is reported idle once it has stayed idle
#: this long: back-to-back jobs keep it processing without two attributes messages a job, and
#: the idle report never waits in front of the job's final job-status at the service.
IDLE_SETTLE_SECONDS = 0.5


class Runner:
    """Device-side protocol logic; I/O goes through ``publish`` (MQTT) and the drivers."""

    def __init__(
        self, config: ManagerConfig, drivers: Mapping[str, DeviceDriver], publish: Publish, book: JobBook | None = None
    ) -> None:
        self.config = config
        self.device_id = config.device_id
        self._publish = publish
        self.book = book if book is not None else JobBook()  # (an empty book is falsy)
        self.services = {s.name: ServiceRuntime(s, _kind_driver(drivers[s.name])) for s in config.services}
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
        #: When each job id was last let go or asked about (monotonic): see RECHECK_FINISHED_AFTER.
        self._checked: dict[int, float] = {}
        self._sync_seen = asyncio.Event()
        #: Set by the first Sync: recovered jobs wait for it, so that nothing is reported for
        #: them before the service's database is known to be theirs.
        self._first_sync = asyncio.Event()
        self._last_attributes: list[dict[str, Any]] | None = None
        #: The pending report of services gone idle (IDLE_SETTLE_SECONDS), if any.
        self._settle: asyncio.TimerHandle | None = None
        self._closing = False
        #: Set while connected and subscribed (threading: tests wait on it from outside).
        self.connected = threading.Event()
        #: Set once a Sync answered the Hello of the current connection.
        self.synced = threading.Event()
        #: Notified whenever a job leaves the book (finished or dropped).
        self.changed = threading.Condition()
        context = FlowContext(config, self.book, self.spool, self._ssl, self._publish_attributes, self._spawn)
        self._connections = context.connections
        #: The job flow of each service kind.
        self.flows: dict[str, Flow] = {"print": PrintFlow(context), "scan": ScanFlow(context),
                                       "faxout": FaxFlow(context)}

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
        """Finish the jobs the journal kept across a restart (manager.recovery decides how)."""
        loop = asyncio.get_running_loop()
        for record in self.book.load():
            decision = recovery.plan(record)
            if isinstance(decision, recovery.Forget):
                self.book.forget(record.job_id, None, remember=False)
                continue
            if isinstance(decision, recovery.Finish):
                log.info("job %d: recovered; %s", record.job_id, decision.why)
                work = functools.partial(self._finish, record, *decision.outcome)
            else:
                log.info("job %d: recovered; printing the documents not yet done", record.job_id)
                record.resume()
                work = functools.partial(self._run_claimed, record)
            record.task = loop.create_task(self._after_first_sync(record, work),
                                           name=f"job-{record.job_id}-recovered")

    async def _after_first_sync(self, record: JobRecord, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a recovered job once the service answered (and its database is known to be
        the journal's: another one closes the job out instead)."""
        await self._first_sync.wait()
        if self._still_held(record):
            await work()

    async def shutdown(self) -> None:
        """Stop all jobs without reporting them, then close the drivers.

        The jobs stay in the journal: the next start lists them in its Hello and finishes
        them by the recovery policy (manager.recovery).
        """
        self._closing = True
        self._cancel_settle()
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
        self._connections.clear()  # a server stopping after us must not wait for them

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
        self._resync()
        self._publish_attributes(force=True)
        self.connected.set()

    def _resync(self) -> None:
        """Send Hello (the jobs held) and repeat it until a Sync answers."""
        if self._hello_task and not self._hello_task.done():
            self._hello_task.cancel()
        jobs = [r.held() for r in self.book.held()][:MAX_JOBS_PER_HELLO]
        self._hello = Hello(software=self.config.software, jobs=jobs)
        self._sync_seen.clear()
        self._send(self._hello)
        self._hello_task = asyncio.get_running_loop().create_task(self._repeat_hello(self._hello))

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

    def _publish_attributes(self, re: str | None = None, force: bool = False, settled: bool = False) -> None:
        """Send the services' Attributes if they changed (always with ``force`` or ``re``).

        A change that only takes services from processing back to idle waits
        IDLE_SETTLE_SECONDS first (a new job in the meantime cancels it); every other change,
        a stop included, goes out at once and carries any idle state with it.
        """
        services = [s.attributes() for s in self.services.values()]
        key = [s.model_dump() for s in services]
        if not force and re is None:
            if key == self._last_attributes:
                self._cancel_settle()
                return
            if not settled and _only_went_idle(self._last_attributes, key):
                if self._settle is None:
                    self._settle = asyncio.get_running_loop().call_later(IDLE_SETTLE_SECONDS, self._settle_due)
                return
        self._cancel_settle()
        message = Attributes(services=services, re=re)
        self._attributes_sent.append(message.id)
        if self._send(message):
            self._last_attributes = key

    def _settle_due(self) -> None:
        self._settle = None
        if not self._closing:
            self._publish_attributes(settled=True)

    def _cancel_settle(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
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
                if message.instance is not None and self.book.instance not in (None, message.instance):
                    # A doorbell from another database: its job ids are not ours to judge
                    # until a Sync has closed the old ones out.
                    log.warning("doorbell for job %d of database %s (ours: %s): sending hello again",
                                message.job_id, message.instance, self.book.instance)
                    self._resync()
                else:
                    self._intake(message.job_id, doorbell=True)
            case JobCanceled():
                self._on_job_canceled(message)
            case StatusRequest():
                self._publish_attributes(re=message.id)
            case Identify():
                self._on_identify(message)

    def _on_sync(self, sync: Sync) -> None:
        if sync.instance is not None and sync.instance != self.book.instance:
            self._change_database(sync.instance)
        self._first_sync.set()
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
            # A job whose final state was decided keeps it: if a restored database offers the
            # job again, that state is what ends it there (see _reconcile).
            self._drop(record, record.state if record.phase is Phase.ENDING else None,
                       "the cloud does not know the job")
        for job_id in sorted(sync.fetchable):
            self._intake(job_id)

    def _change_database(self, instance: str) -> None:
        """Job ids belong to one service database (Sync.instance). The first one seen is
        recorded; another one means a new or swapped database: the old one's jobs are closed
        out here (stopped, never reported to the new one, never printed again; each logged and
        kept aside in the journal) and its finished ids forgotten, so the new database's jobs
        1, 2, ... are fetched as the new jobs they are."""
        old = self.book.instance
        if old is None:
            log.info("service database %s", instance)
            self.book.set_instance(instance)
            return
        closed = self.book.rebase(instance)
        log.warning("the service's database changed (%s -> %s): %d job(s) of the old one closed out, "
                    "its finished job ids forgotten", old, instance, len(closed))
        for record in closed:
            log.warning("job %d of database %s closed out (phase %s, state %s, %d impression(s)): the service "
                        "no longer knows it", record.job_id, old, record.phase, record.state,
                        record.impressions_completed)
            record.stop.set()
            record.wakeup.set()
            service = self.services.get(record.service or "")
            if service is not None and record.phase is Phase.PRINTING:
                service.driver.cancel(record.job_id)
            if record.task is not None and not record.task.done():
                record.task.cancel()
        with self.changed:
            self.changed.notify_all()

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
            await self._channel(record).report_job(state, reasons, message)
        except JobGone as gone:
            self._drop(record, gone.state, str(gone))

    # ------------------------------------------------------------------ job control

    def _intake(self, job_id: int, doorbell: bool = False) -> None:
        """A job offered by a doorbell or a Sync: run it, or judge it again if it was finished."""
        if job_id in self.book:
            log.info("   job %d already held or finished; doorbell ignored", job_id)
            return
        finished = self.book.finished(job_id)
        now = time.monotonic()
        if finished is not None and doorbell and now - self._checked.get(job_id, 0.0) < RECHECK_FINISHED_AFTER:
            log.info("   job %d already held or finished; doorbell ignored", job_id)
            return
        if finished is not None:
            self._checked[job_id] = now
        record = JobRecord(job_id)
        self.book.add(record)
        if finished is None:
            record.task = asyncio.get_running_loop().create_task(self._run_job(record), name=f"job-{job_id}")
        else:
            record.task = asyncio.get_running_loop().create_task(self._reconcile(record, finished),
                                                                 name=f"job-{job_id}-finished")

    async def _reconcile(self, record: JobRecord, finished: Finished) -> None:
        try:
            await self._judge_finished(record, finished)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %d: failed while judging it again", record.job_id)
            if record.phase is not Phase.ENDING:
                self._forget(record, None, remember=False)  # the finished entry stays

    async def _judge_finished(self, record: JobRecord, finished: Finished) -> None:
        """The service offers a job id this device let go already. Usually a late or duplicated
        doorbell (fetch-job refuses it: nothing to do). When the job is fetchable again the
        job-uuid tells which job it is: the same (a database restored from a backup taken
        before the job ended) is claimed only to report again the final state this device gave
        it, never printed a second time; another (the restored database's id sequence gave the
        id to a new job) or one never output here is a job to do, printed as any other."""
        job_id = record.job_id
        channel = self._channel(record)
        try:
            async with self._intake_slots:
                reply = await channel.fetch()
        except RequestTimeout as exc:
            log.warning("job %d: %s; will retry on the next doorbell or sync", job_id, exc)
            reply = None
        except Exception:
            log.exception("job %d: failed while fetching it", job_id)
            reply = None
        if reply is None or reply.job_uuid is None or finished.uuid is None:
            # Not fetchable (ended there too), or no job-uuid to judge by: the old rule.
            log.info("   job %d already finished; doorbell ignored", job_id)
            self._forget(record, None, remember=False)
            return
        if reply.job_uuid != finished.uuid or (finished.state is None and not finished.on_paper):
            why = ("a new job with the id of one finished here" if reply.job_uuid != finished.uuid
                   else "offered again and never output here")
            log.warning("job %d: %s: running it", job_id, why)
            self._forget(record, None, remember=False)
            self.book.unfinish(job_id)
            self._intake(job_id)
            return
        state = finished.state or JobState.ABORTED
        log.warning("job %d: offered again by a restored database; this device ended it already (%s, %d "
                    "impression(s)): reporting that again, not printing it", job_id, state, finished.impressions)
        kind = reply.kind.value if reply.kind else "print"
        record.fetched(kind, reply.ticket or ticket_model(kind)(), reply.document_count or 1, reply.service,
                       reply.job_uuid)
        record.replay = state
        record.progress(finished.impressions)
        self.book.save(record)
        record.acknowledge(in_flight=True)
        try:
            answer = await channel.locked_exchange(
                lambda v: AcknowledgeJob(job_id=job_id, version=v, accept=True), final=True, persistent=True)
        except JobGone as gone:
            log.info("job %d: %s", job_id, gone)
            answer = None
        finally:
            record.acknowledge(in_flight=False)
        if answer is None or not self._still_held(record):
            self._forget(record, None, remember=False)  # the finished entry stays: judged again next time
            return
        record.claim(answer.documents)
        self.book.save(record)
        await self._finish(record, *recovery.replay_outcome(state, finished.on_paper))

    def _request_cancel(self, record: JobRecord) -> None:
        if not record.request_cancel():
            return
        log.info("job %d: cancel requested (phase %s)", record.job_id, record.phase)
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
        if remember:
            self._checked[record.job_id] = time.monotonic()
            if len(self._checked) > 10_000:
                self._checked.clear()
        if self.book.get(record.job_id) is record:
            finished = Finished(state, record.uuid, record.impressions_completed, record.on_paper)
            self.book.forget(record.job_id, state, remember, finished)
        with self.changed:
            self.changed.notify_all()

    def view(self) -> dict[int, JobView]:
        return {r.job_id: JobView.of(r) for r in self.book.records()}

    # ------------------------------------------------------------------ the job

    def _channel(self, record: JobRecord) -> JobChannel:
        return JobChannel(record, self.requester, self.book, self._request_cancel)

    def _still_held(self, record: JobRecord) -> bool:
        return self.book.get(record.job_id) is record

    async def _run_job(self, record: JobRecord) -> None:
        try:
            async with self._intake_slots:
                declined = await claim(record, self._channel(record), self.services, self.book)
        except JobGone as gone:
            self._drop(record, gone.state, str(gone))
            return
        except Exception:
            log.exception("job %d: failed while fetching it", record.job_id)
            self._forget(record, None, remember=False)  # the service offers it again
            return
        if declined is not None:
            self._forget(record, declined.state, declined.remember)
            return
        await self._run_claimed(record)

    async def _run_claimed(self, record: JobRecord) -> None:
        """Wait for the device, run the kind's flow, report the end: the part after the claim."""
        try:
            service = self.services.get(record.service or "")
            if service is None:
                await self._finish(record, JobState.ABORTED, (Reason.ABORTED_BY_SYSTEM,),
                                   f"this device has no service named {record.service!r}")
                return
            outcome: Outcome = CANCELED
            if await service.take_slot(record, self._still_held):
                try:
                    outcome = await self.flows[service.config.kind].run(record, service, self._channel(record))
                finally:
                    service.release_slot()
                    self._publish_attributes()
            await self._finish(record, *outcome)
        except JobGone as gone:
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

    async def _finish(self, record: JobRecord, state: JobState, reasons: tuple[str, ...], message: str | None) -> None:
        """Send the final job-status until it is answered, then let the job go."""
        async with record.lock:
            if self._closing or not self._still_held(record):
                return  # stopping, or dropped meanwhile (the cloud ended it or does not know it)
            record.end(state, reasons, message)
            self.book.save(record)
            log.info("job %d: %s (%d impressions)", record.job_id, state, record.impressions_completed)
            with contextlib.suppress(JobGone):
                await self._channel(record).exchange(
                    lambda v: JobStatus(
                        job_id=record.job_id,
                        version=v,
                        state=state,
                        reasons=list(reasons),
                        message=message,
                        impressions_completed=record.impressions_completed,
                        destination_statuses=final_destinations(record, state),
                    ),
                    final=True,
                    persistent=True,
                )
        self._forget(record, state)


def _kind_driver(driver: DeviceDriver) -> KindDriver:
    """A configured driver is one kind's: print, scan or fax."""
    if not isinstance(driver, KindDriver):
        raise TypeError(f"{type(driver).__name__} is neither a print, a scan nor a fax driver")
    return driver


def _only_went_idle(last: list[dict[str, Any]] | None, now: list[dict[str, Any]]) -> bool:
    """True if ``now`` differs from ``last`` only by services gone from processing to idle."""
    if last is None or len(last) != len(now):
        return False
    for before, after in zip(last, now, strict=True):
        if before == after:
            continue
        if before.get("state") != ServiceState.PROCESSING or after.get("state") != ServiceState.IDLE:
            return False
        if {**before, "state": None} != {**after, "state": None}:
            return False
    return True
