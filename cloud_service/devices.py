"""The device side of the protocol: every message a Manager sends, driven through the core.

Transport-free: ``DeviceProtocol.handle(device_id, leaf, payload)`` returns the messages to
send back (the MQTT adapter publishes them). A report on a job is checked here for what is
about the device (the job exists and is assigned to it); whether it is applied (duplicate,
stale, claimed, ...) is judged by the model's ``judge`` (schemas.model.reports) inside the
store's optimistic transaction, on the same row the write is conditioned on, so a change that
lands in between (a cancel) makes the report ``stale`` rather than being overwritten.

Any message proves the device is alive; its ``last_seen`` is written at most every
``LAST_SEEN_EVERY`` seconds per device, so reports cost no extra transaction each. A device
that connects sends ``presence`` online, ``hello`` and ``attributes``: the online presence is
not written on its own but with the device's next message (its hello), or, if none comes within
``PRESENCE_COALESCE`` seconds, together with the other devices' in one transaction. A device
connecting thus costs two transactions (hello, attributes), and a connect storm no more. Only a
single replica does this: with several (a shared subscription), the device's next messages and
its Last Will may reach another replica, which must find the presence's session written, so
each replica writes an online presence at once (``coalesce_presence=False``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from sqlalchemy import Connection

from cloud_service.clf import ClfLog
from cloud_service.db import DocumentRow, JobRow
from cloud_service.documents import MAX_SCAN_DOCUMENTS, Documents, device_ticket
from cloud_service.store import JobNotFound, JobStore, WithDocuments, core_job, save_destinations
from schemas import topics
from schemas.enums import DocumentState, JobState, Reason, ServiceKind
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    Bye,
    DocumentAccess,
    DocumentStatus,
    FetchDocument,
    FetchJob,
    Hello,
    JobStatus,
    Message,
    ProtocolError,
    Reply,
    RequestUpload,
    StatusRequest,
    StopJob,
    Sync,
    UploadAccess,
    decode_presence,
    decode_up,
)
from schemas.model.job import Abort, Event, InvalidTransition, Job, Release
from schemas.model.reports import Report, Verdict, judge
from schemas.text import check_name, is_keyword
from schemas.tickets import ticket_model

log = logging.getLogger("cloudimaging.devices")

Outgoing = list[tuple[str, Message]]

#: Seconds between two writes of a device's ``last_seen`` while it stays online.
LAST_SEEN_EVERY = 10.0

#: Seconds an online presence waits to be written with the device's next message, after which
#: the online presences still waiting are written together (one transaction).
PRESENCE_COALESCE = 0.5
#: The longest wait between two tries to write the waiting presences while the database fails
#: (the wait doubles from ``PRESENCE_COALESCE`` after each failure).
PRESENCE_RETRY_MAX = 10.0

#: A report on a job of another device: refused without a word about that job.
NOT_YOURS = Verdict("not-yours", "the job is not assigned to this device")
#: A claim of an ended job whose documents no device message can describe.
UNDELIVERABLE = Verdict("not-fetchable", "the job's documents cannot be sent")


class DeviceProtocol:
    def __init__(self, store: JobStore, documents: Documents, clf: ClfLog, max_services: int = 16,
                 coalesce_presence: bool = True) -> None:
        self.store = store
        #: Whether an online presence may wait for the device's next message (one replica only).
        self.coalesce_presence = coalesce_presence
        #: How many services one device may register (``max_services_per_device``).
        self.max_services = max_services
        self.documents = documents
        self.clf = clf
        #: Called with (device_id, online) so the HTTP side can react; optional.
        self.on_presence: Callable[[str, bool], Awaitable[None]] | None = None
        #: The database's instance id, sent in every sync (cloud_service.instance).
        self.instance: str | None = None
        #: device id -> monotonic time this replica last recorded it online.
        self._seen: dict[str, float] = {}
        #: device id -> the columns of an online presence not written yet.
        self._pending: dict[str, dict[str, object]] = {}
        self._flush_timer: asyncio.Task[None] | None = None
        #: Seconds the next flush waits; doubled after each failed write, reset by a good one.
        self._flush_delay: float | None = None
        #: The write of pending presences in progress (an offline presence waits for it).
        self._flushing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ entry point

    async def handle(self, device_id: str, leaf: str, payload: bytes) -> Outgoing:
        topic = f"{topics.PREFIX}/{device_id}/{leaf}"
        if leaf == "presence":
            try:
                presence = decode_presence(payload)
            except ProtocolError as exc:
                self.clf.mqtt("RECV", device_id, topic, "presence", exc.code, len(payload))
                return []
            self.clf.mqtt("RECV", device_id, topic, f"presence-{presence.state}", "ok", len(payload))
            if presence.state == "offline" and presence.session:
                pending = self._pending.get(device_id)
                if pending is not None:
                    current = pending.get("session")
                else:
                    device = await self.store.device(device_id)
                    current = device.session if device is not None else None
                if current and current != presence.session:
                    log.info("ignored the late Last Will of an earlier connection of %s", device_id)
                    return []
            await self._presence(device_id, presence.state == "online",
                                 session=presence.session if presence.state == "online" else None)
            return []
        try:
            message = decode_up(payload)
        except ProtocolError as exc:
            self.clf.mqtt("RECV", device_id, topic, exc.code, exc.code, len(payload))
            log.warning("refused message from %s: %s (%s)", device_id, exc.message, exc.code)
            return [(device_id, Reply(re=exc.request_id, ok=False, code=exc.code, message=exc.message))]
        try:
            replies = await self._dispatch(device_id, message)
        except Exception:
            log.exception("error handling %s from %s", message.type, device_id)
            replies = [(device_id, Reply(re=message.id, ok=False, code="error",
                                         message="internal error; retry later"))]
        code = next((r.code for _, r in replies if isinstance(r, Reply) and r.re == message.id), "ok")
        self.clf.mqtt("RECV", device_id, topic, _describe(message), code, len(payload))
        return replies

    async def _dispatch(self, device_id: str, message: Message) -> Outgoing:
        # Any message proves the device is alive (covers a lost "online" presence). Hello and
        # attributes write the device's row anyway: its liveness goes into that same transaction.
        pending = self._pending.pop(device_id, None)
        alive = {**(pending or {}), **self._alive_values(device_id)}
        try:
            match message:
                case Hello():
                    return await self._hello(device_id, message, alive)
                case Attributes():
                    return await self._attributes(device_id, message, alive)
            if alive:
                await self.store.set_device(device_id, **alive)
        except BaseException:
            if pending is not None:
                self._pending.setdefault(device_id, pending)  # not written: the flush will
                self._schedule_flush()
            raise
        self._mark_alive(device_id, alive)
        match message:
            case FetchJob():
                return await self._fetch_job(device_id, message)
            case AcknowledgeJob():
                return await self._acknowledge(device_id, message)
            case FetchDocument():
                return await self._fetch_document(device_id, message)
            case DocumentStatus():
                return await self._document_status(device_id, message)
            case JobStatus():
                return await self._job_status(device_id, message)
            case RequestUpload():
                return await self._request_upload(device_id, message)
            case Bye():
                await self._presence(device_id, False)
                return []
        return [(device_id, Reply(re=message.id, ok=False, code="unknown-type", message="unhandled"))]

    # ------------------------------------------------------------------ liveness and attributes

    def _alive_values(self, device_id: str) -> dict[str, object]:
        """The device columns to write because a message came: empty if this replica recorded
        the device online less than ``LAST_SEEN_EVERY`` seconds ago."""
        seen = self._seen.get(device_id)
        if seen is not None and time.monotonic() - seen < LAST_SEEN_EVERY:
            return {}
        return {"online": True, "last_seen": time.time()}

    def _mark_alive(self, device_id: str, written: dict[str, object]) -> None:
        """Remember when the liveness was written (after its transaction committed)."""
        if "last_seen" in written:
            self._seen[device_id] = time.monotonic()

    async def _presence(self, device_id: str, online: bool, session: str | None = None) -> None:
        """Online (with the connection's ``session``): kept to be written with the device's next
        message or the next flush. Offline: written at once, after a flush in progress (which
        may hold the device's online presence)."""
        self._seen.pop(device_id, None)
        values: dict[str, object] = {"online": online, "last_seen": time.time()}
        if online:
            if session is not None:
                values["session"] = session
            if self.coalesce_presence:
                self._pending[device_id] = values
                self._schedule_flush()
            else:
                await self.store.set_device(device_id, **values)
            self._seen[device_id] = time.monotonic()  # the liveness is written with the presence
        else:
            self._pending.pop(device_id, None)
            if self._flushing is not None and not self._flushing.done():
                await asyncio.shield(self._flushing)
            await self.store.set_device(device_id, **values)
        if self.on_presence:
            await self.on_presence(device_id, online)

    def _schedule_flush(self) -> None:
        if self._flush_timer is None or self._flush_timer.done():
            self._flush_timer = asyncio.create_task(self._flush_later(), name="presence-flush")

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_delay or PRESENCE_COALESCE)
        try:
            await self.flush()
        except Exception as exc:
            failed = self._flush_delay is not None
            self._flush_delay = min(2 * (self._flush_delay or PRESENCE_COALESCE), PRESENCE_RETRY_MAX)
            if failed:  # the trace once per run of failures; then a line per try
                log.warning("could not write %d online presences (%s); retrying in %.1f s",
                            len(self._pending), exc, self._flush_delay)
            else:
                log.exception("could not write %d online presences; retrying in %.1f s",
                              len(self._pending), self._flush_delay)
            self._flush_timer = None
            self._schedule_flush()
        else:
            self._flush_delay = None

    async def flush(self) -> None:
        """Write the online presences still waiting, all in one transaction."""
        if self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._flushing = asyncio.ensure_future(self.store.set_devices(pending))
        try:
            await asyncio.shield(self._flushing)
        except BaseException:
            for device_id, values in pending.items():
                self._pending.setdefault(device_id, values)
            raise

    async def close(self) -> None:
        """Write what is pending (on shutdown)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        await self.flush()

    async def _hello(self, device_id: str, hello: Hello, alive: dict[str, object] | None = None) -> Outgoing:
        """Update-Active-Jobs + Get-Jobs(fetchable): reconcile what the device holds."""
        stop: list[StopJob] = []
        unknown: list[int] = []
        held = {j.job_id for j in hello.jobs}
        # One hop, however many jobs the hello lists: its software and liveness, the held jobs,
        # the device's claimed and fetchable jobs.
        alive = alive or {}
        rows, active, fetchable_rows = await self.store.hello_view(device_id, held, hello.software, alive)
        self._mark_alive(device_id, alive)
        for held_job in hello.jobs:
            row = rows.get(held_job.job_id)
            if row is None or row.device_id != device_id or not row.claimed:
                unknown.append(held_job.job_id)
            elif JobState(row.state).terminal or row.cancel_requested:
                stop.append(StopJob(job_id=row.id, version=row.version, state=JobState(row.state)))
        # Claimed jobs the device no longer holds: it lost them (e.g. restarted without state).
        released = False
        for row in active:
            if row.id in held:
                continue
            if row.claim_ts is not None and row.claim_ts >= hello.ts:
                # Claimed after this Hello was written (a resent or late Hello): not lost.
                continue
            if row.started:
                await self._transition(row.id, Abort(Reason.ABORTED_BY_SYSTEM,
                                                     "the device restarted and no longer holds the job"))
            else:
                await self._transition(row.id, Release("the device restarted before printing; fetchable"))
                released = True
        fetchable = [r.id for r in (await self.store.fetchable_for(device_id) if released else fetchable_rows)]
        return [(device_id, Sync(re=hello.id, fetchable=fetchable, stop=stop, unknown=unknown,
                                 instance=self.instance))]

    async def _attributes(self, device_id: str, msg: Attributes, alive: dict[str, object] | None = None) -> Outgoing:
        """Register or update the device's services (one transaction with its liveness); a
        service whose attributes did not change is not written."""
        alive = alive or {}
        if msg.re:
            # An answer to a status request: recorded in the database, so the replica that
            # asked sees it whichever replica received it.
            alive = {**alive, "status_re": msg.re}
        refused = await self.store.upsert_services(device_id, [(svc.kind.value, svc.name, {
            "state": svc.state.value, "state_reasons": list(svc.state_reasons) or [Reason.NONE],
            "state_message": svc.state_message, "info": svc.info, "location": svc.location,
            "make_and_model": svc.make_and_model,
            "capabilities": svc.capabilities.model_dump(mode="json", by_alias=True),
            "supplies": [supply.model_dump(mode="json") for supply in svc.supplies],
        }) for svc in msg.services], self.max_services, device=alive)
        self._mark_alive(device_id, alive)
        if refused is not None:
            log.warning("refused the services of %s: %s", device_id, refused.message)
            return [(device_id, Reply(re=msg.id, ok=False, code=refused.code, message=refused.message))]
        return [(device_id, Reply(re=msg.id, ok=True, code="ok"))]

    async def request_status(self, device_id: str, publish: Callable[[str, Message], None],
                             timeout: float) -> bool:
        """Ask a device for its status now; True if it answered within ``timeout``.

        No answer marks the device unreachable (offline): its services show stopped with
        offline-report until it speaks again.
        """
        request = StatusRequest()
        publish(device_id, request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            device = await self.store.device(device_id)
            if device is not None and device.status_re == request.id:
                return True
        log.warning("device %s did not answer a status request in %.1f s: unreachable", device_id, timeout)
        await self._presence(device_id, False)
        return False

    # ------------------------------------------------------------------ jobs

    async def _own_job(self, device_id: str, msg: Message, job_id: int) -> JobRow | Reply:
        try:
            row = await self.store.get_job(job_id)
        except JobNotFound:
            return self._not_found(msg, job_id)
        if row.device_id != device_id:
            return self._not_yours(device_id, msg, job_id)
        return row

    @staticmethod
    def _not_found(msg: Message, job_id: int) -> Reply:
        return Reply(re=msg.id, ok=False, code="not-found", job_id=job_id, message="no such job")

    @staticmethod
    def _not_yours(device_id: str, msg: Message, job_id: int) -> Reply:
        log.warning("device %s named job %s of another device", device_id, job_id)
        return Reply(re=msg.id, ok=False, code="not-yours", job_id=job_id,
                     message="the job is not assigned to this device")

    @staticmethod
    def _current(msg: Message, row: JobRow, code: str, text: str | None = None, ok: bool = False) -> Reply:
        return Reply(re=msg.id, ok=ok, code=code, message=text, job_id=row.id, state=JobState(row.state),
                     reasons=[r for r in row.state_reasons if is_keyword(r)], version=row.version)

    async def _fetch_job(self, device_id: str, msg: FetchJob) -> Outgoing:
        kept = self.store.kept(msg.job_id)
        if kept is not None and _offered(kept.row, device_id):
            # The job as this replica last wrote it (a submit's close, just before the doorbell
            # this fetch answers): offered without a read. The claim that follows is written on
            # this version, so a job changed elsewhere meanwhile is refused there, not printed.
            row, docs = kept.row, kept.documents
        else:
            try:
                # Kept for the claim that follows: judged then without reading the job again.
                row, docs = await self.store.job_with_documents(msg.job_id, remember=True)
            except JobNotFound:
                return [(device_id, self._not_found(msg, msg.job_id))]
        if row.device_id != device_id:
            return [(device_id, self._not_yours(device_id, msg, msg.job_id))]
        state = JobState(row.state)
        if state.terminal or not ("job-fetchable" in row.state_reasons or row.claimed):
            return [(device_id, self._current(msg, row, "not-fetchable", "the job is not fetchable"))]
        ticket = dict(row.ticket)
        if docs and row.kind != ServiceKind.SCAN.value:  # a scan job's documents are its output
            ticket = device_ticket(ticket, docs)  # the format it gets; what a transform applied
        reply = Reply(re=msg.id, ok=True, code="ok", job_id=row.id, state=state, version=row.version,
                      reasons=row.state_reasons, service=row.service_name,
                      kind=None if row.kind == ServiceKind.PRINT.value else ServiceKind(row.kind),
                      ticket=ticket_model(row.kind).model_validate(ticket),
                      document_count=0 if row.kind == ServiceKind.SCAN.value else len(docs),
                      job_uuid=row.uuid)
        return [(device_id, reply)]

    def _document_urls(self, row: JobRow, docs: list[DocumentRow], number: int | None = None) -> list[DocumentAccess]:
        """The documents' GET URLs as the wire carries them (ValidationError if one cannot be).

        A stored name the wire's ``Name`` refuses (a row written before the edges checked names)
        is left out: the name only labels the document, and without it the job still prints.
        No I/O: it runs inside the claim's transaction (``_acknowledge``).
        """
        out = []
        for u in self.documents.presigned(docs, "GET", number):
            name = u.document.name
            if name is not None:
                try:
                    name = check_name(name)
                except ValueError:
                    log.warning("job %s document %s: stored name is not a valid name; sent without it",
                                row.id, u.document.number)
                    name = None
            out.append(DocumentAccess(document_number=u.document.number, url=u.url, expires_at=u.expires_at,
                                      size=u.document.size or 0, sha256=u.document.sha256 or "0" * 64,
                                      document_format=u.document.format, document_name=name))
        return out

    async def _apply_report(self, device_id: str, msg: Report, extra: dict | None = None,
                            first: Callable[[Job, JobRow, list[DocumentRow]], Event | Verdict | None] | None = None,
                            then: Callable[[Connection, JobRow], None] | None = None,
                            ) -> tuple[JobRow, str, str | None, bool] | Reply:
        """Judge and apply a report in one optimistic transaction: (row, code, text, ok) or a refusal.

        Whether the job is the device's is checked in that same transaction, on the row the
        write is conditioned on (one read of the job, not two). ``first`` may decide before the
        report is judged (an event or a verdict; None: judge it), on the job's document rows;
        ``then`` writes what comes with the report once it is applied (JobStore.transition).
        """
        def decide(job: Job, current: JobRow, docs: list[DocumentRow]) -> Event | Verdict:
            if current.device_id != device_id:
                return NOT_YOURS
            if first is not None and (chosen := first(job, current, docs)) is not None:
                return chosen
            return judge(job, current.applied_ids, msg)

        try:
            done = await self.store.transition(msg.job_id, WithDocuments(decide), msg.id,
                                               extra=(lambda _row: extra) if extra else None, then=then)
        except JobNotFound:
            return self._not_found(msg, msg.job_id)
        except InvalidTransition as exc:
            row = await self.store.get_job(msg.job_id)
            return self._current(msg, row, "invalid-transition", str(exc)[:1000])
        if done.verdict is NOT_YOURS:
            return self._not_yours(device_id, msg, msg.job_id)
        if done.verdict is not None:
            return done.row, done.verdict.code, done.verdict.message, done.verdict.ok
        return done.row, "ok", None, True

    async def _acknowledge(self, device_id: str, msg: AcknowledgeJob) -> Outgoing:
        """Accept or decline a job. The reply to an accept carries the documents' URLs, so they
        are built (and so validated) in the claim's own transaction, before it is judged: a
        claim whose reply cannot be built would leave a job claimed by nobody, retried forever.
        A job whose documents no device message can describe is aborted instead, in that same
        transaction (no device could ever take it)."""
        documents: list[DocumentAccess] = []
        undeliverable = False

        def urls_first(job: Job, current: JobRow, docs: list[DocumentRow]) -> Event | Verdict | None:
            nonlocal documents, undeliverable
            undeliverable = False
            try:
                documents = self._document_urls(current, docs)
            except ValidationError as exc:
                log.error("job %s: its documents cannot be sent to a device (%s); aborting it",
                          current.id, exc.errors()[0]["msg"])
                undeliverable = True
                if job.terminal:
                    return UNDELIVERABLE
                return Abort(Reason.ABORTED_BY_SYSTEM, "a document of the job cannot be delivered to a device")
            return None

        result = await self._apply_report(device_id, msg, {"claim_ts": msg.ts} if msg.accept else None,
                                          urls_first if msg.accept else None)
        if isinstance(result, Reply):
            return [(device_id, result)]
        row, code, text, ok = result
        if undeliverable:
            return [(device_id, self._current(msg, row, "not-fetchable", "the job's documents cannot be sent"))]
        reply = self._current(msg, row, code, text, ok)
        if msg.accept and code in ("ok", "duplicate") and row.claimed and not JobState(row.state).terminal:
            reply = reply.model_copy(update={"documents": documents})
        return [(device_id, reply)]

    async def _fetch_document(self, device_id: str, msg: FetchDocument) -> Outgoing:
        try:  # the job and its documents in one hop
            row, rows = await self.store.job_with_documents(msg.job_id)
        except JobNotFound:
            return [(device_id, self._not_found(msg, msg.job_id))]
        if row.device_id != device_id:
            return [(device_id, self._not_yours(device_id, msg, msg.job_id))]
        if not row.claimed or JobState(row.state).terminal:
            return [(device_id, self._current(msg, row, "not-fetchable", "the job is not yours to print"))]
        docs = self._document_urls(row, rows, msg.document_number)
        if not docs:
            return [(device_id, self._current(msg, row, "not-found", "no such document"))]
        return [(device_id, self._current(msg, row, "ok", ok=True).model_copy(update={"documents": docs}))]

    async def _document_status(self, device_id: str, msg: DocumentStatus) -> Outgoing:
        result = await self._apply_report(device_id, msg)
        if isinstance(result, Reply):
            return [(device_id, result)]
        return [(device_id, self._current(msg, *result))]

    async def _job_status(self, device_id: str, msg: JobStatus) -> Outgoing:
        then = None
        if msg.destination_statuses is not None:
            statuses = [d.wire() for d in msg.destination_statuses]

            def then(conn: Connection, row: JobRow) -> None:
                # A fax's per-destination outcome, in the same transaction as the state it
                # explains: nobody sees the job ended without them.
                if row.kind == ServiceKind.FAXOUT.value:
                    save_destinations(conn, row.id, row.version, statuses)

        result = await self._apply_report(device_id, msg, then=then)
        if isinstance(result, Reply):
            return [(device_id, result)]
        return [(device_id, self._current(msg, *result))]

    async def _request_upload(self, device_id: str, msg: RequestUpload) -> Outgoing:
        """Scan output: a presigned PUT URL for one output document (made on first request)."""
        row = await self._own_job(device_id, msg, msg.job_id)
        if isinstance(row, Reply):
            return [(device_id, row)]
        if row.kind != ServiceKind.SCAN.value:
            return [(device_id, self._current(msg, row, "bad-request", "only scan jobs upload output"))]
        if not row.claimed or JobState(row.state).terminal:
            return [(device_id, self._current(msg, row, "not-fetchable", "the job is not yours to scan now"))]
        if msg.document_number > MAX_SCAN_DOCUMENTS:
            return [(device_id, self._current(msg, row, "bad-request", "too many output documents"))]
        doc = await self.documents.add_output(row, msg.document_number, msg.document_format, msg.document_name)
        if doc.state == DocumentState.COMPLETED.value:
            return [(device_id, self._current(msg, row, "duplicate", "the document is complete", ok=True))]
        (put,) = await self.documents.urls(row.id, "PUT", doc.number)
        upload = UploadAccess(document_number=doc.number, url=put.url, expires_at=put.expires_at,
                              document_format=doc.format)
        return [(device_id, self._current(msg, row, "ok", ok=True).model_copy(update={"uploads": [upload]}))]

    async def _transition(self, job_id: int, event: object, message_id: str | None = None,
                          extra: dict | None = None) -> JobRow | Reply:
        try:
            result = await self.store.transition(job_id, event, message_id,  # type: ignore[arg-type]
                                                 extra=(lambda _row: extra) if extra else None)
        except InvalidTransition as exc:
            row = await self.store.get_job(job_id)
            return Reply(ok=False, code="invalid-transition", message=str(exc)[:1000], job_id=job_id,
                         state=JobState(row.state), version=row.version)
        return result.row


def _describe(message: Message) -> str:
    job_id = getattr(message, "job_id", None)
    kind = getattr(message, "type", "message")
    return f"{kind}#{job_id}" if job_id else kind


def _offered(row: JobRow, device_id: str) -> bool:
    """Whether a kept copy of a job may answer its device's fetch: a job waiting to be fetched
    (the model's ``fetchable``) by this device. Any other answer (not fetchable, not yours, a
    claimed job fetched again) is given from what is stored."""
    return row.device_id == device_id and core_job(row).fetchable
