"""The client side of the Cloud Print Service: create, close, cancel, validate, read jobs.

Transport-free like devices.py: the HTTP bridge calls these, and they call a ``Notify``
callable to ring a device's doorbell. The doorbell is only a hint: a device that misses it
finds the job in the ``sync`` answer to its next hello.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import update

from cloud_service.auth import User
from cloud_service.db import JobRow, ServiceRow
from cloud_service.errors import Refusal
from cloud_service.objects import ObjectStore, StoredObject
from cloud_service.store import JobNotFound, JobStore
from schemas.enums import JobState, Reason, ServiceKind
from schemas.messages import JobCanceled, JobFetchable, Message
from schemas.model.job import Abort, Cancel, Close, InvalidTransition
from schemas.model.ticket import TicketError, TicketProblem, parse_print_ticket, validate_print_ticket
from schemas.tickets import PrintCapabilities

log = logging.getLogger("cloudimaging.jobs")

Notify = Callable[[str, Message], None]


class JobOperations:
    def __init__(self, store: JobStore, objects: ObjectStore, notify: Notify, max_document_bytes: int) -> None:
        self.store = store
        self.objects = objects
        self.notify = notify
        self.max_document_bytes = max_document_bytes
        #: Price, quota and retention decisions at submit (cloud_service.accounting.Admission);
        #: None: free, unlimited, service defaults.
        self.admission: Any = None

    # ------------------------------------------------------------------ services and tickets

    async def resolve_service(self, kind: ServiceKind, name: str | None, user: User | None = None) -> ServiceRow:
        """The service to use; with ``user``, only among the services shared with them (others
        read as missing). Without a name: the first online one, else the first one."""
        from cloud_service.sharing import Access, check_service

        if name:
            row = await self.store.service(kind.value, name)
            if row is None:
                raise Refusal(404, "not-found", f"no {kind.value} service named {name!r}")
            if user is not None:
                await check_service(self.store, user, row)
            return row
        rows = await self.store.services(kind.value)
        if user is not None:
            access = await Access.load(self.store, user)
            rows = [(svc, dev, n) for svc, dev, n in rows if access.sees(dev, svc.name)]
        if not rows:
            raise Refusal(404, "not-found", f"no {kind.value} service is registered yet")
        online = [svc for svc, dev, _ in rows if dev.online]
        return (online or [svc for svc, _, _ in rows])[0]

    async def usable_service(self, user: User, kind: ServiceKind, name: str | None) -> ServiceRow:
        """resolve_service for a new job: also refuses services whose device is revoked."""
        service = await self.resolve_service(kind, name, user)
        device = await self.store.device(service.device_id)
        if device is not None and (device.revoked_at is not None or device.deregistered_at is not None):
            raise Refusal(409, "service-unavailable",
                           f"{kind.value} service {service.name!r} is unavailable: its device was revoked")
        return service

    def check_ticket(self, service: ServiceRow, raw: dict[str, Any], document_format: str | None) -> dict:
        """Validate against the service's capabilities; return the IPP-named ticket to store."""
        try:
            if service.kind != ServiceKind.PRINT.value:  # scan and faxout: cloud_service.scanfax
                from cloud_service.scanfax import check_ticket

                return check_ticket(service, raw, document_format)
            ticket = parse_print_ticket(raw)
            caps = PrintCapabilities.model_validate(service.capabilities)
            validate_print_ticket(ticket, caps, document_format)
        except TicketError as exc:
            first: TicketProblem = exc.first
            raise Refusal(400, "unsupported-attribute" if first.supported is not None else "bad-ticket",
                           str(exc), attribute=first.attribute, supported=first.supported) from None
        return ticket.wire()

    # ------------------------------------------------------------------ creating jobs

    async def create(self, user: User, kind: ServiceKind, service_name: str | None, ticket: dict[str, Any],
                     document_format: str, document_name: str | None,
                     chunks: AsyncIterator[bytes] | None, retention: dict[str, Any] | None = None) -> JobRow:
        """Create a job; with ``chunks`` the document is stored and the job is fetchable at
        once, without it the job waits (pending-held, job-incoming) for an upload and close."""
        service = await self.usable_service(user, kind, service_name)
        stored_ticket = self.check_ticket(service, ticket, document_format)
        stored_ticket.pop("document-format", None)
        admitted = await self.admission.on_create(user, service, stored_ticket, retention) if self.admission else {}
        doc = {"name": document_name, "format": document_format}
        row = await self.store.create_job(kind=kind, service=service, owner=user.name, ticket=stored_ticket,
                                          documents=[doc], with_documents=False)
        if admitted:
            async with self.store.sessions.begin() as s:
                await s.execute(update(JobRow).where(JobRow.id == row.id).values(**admitted))
            row = await self.store.get_job(row.id)
        if chunks is not None:
            await self.store_document(row.id, chunks)
            row = await self.close(user, row.id)
        return row

    async def store_document(self, job_id: int, chunks: AsyncIterator[bytes]) -> StoredObject:
        row = await self.store.get_job(job_id)
        if row.state != JobState.PENDING_HELD.value or "job-incoming" not in row.state_reasons:
            raise Refusal(409, "job-not-incoming", "the job does not accept documents any more")
        doc = (await self.store.documents(job_id))[0]
        if doc.sha256 is not None:  # upload URLs are one-time: a replayed PUT cannot swap the document
            raise Refusal(409, "document-stored", "the document was uploaded already")
        from cloud_service.objects import ObjectTooLarge

        try:
            stored = await self.objects.put_stream(doc.object_key, chunks, self.max_document_bytes)
        except ObjectTooLarge as exc:
            raise Refusal(413, "too-large", str(exc)) from None
        await self.store.set_document(job_id, doc.number, size=stored.size, sha256=stored.sha256)
        return stored

    async def close(self, user: User, job_id: int) -> JobRow:
        """Close-Job: all documents are in; ring the device's doorbell."""
        row = await self.get(user, job_id)
        docs = await self.store.documents(job_id)
        if any(d.sha256 is None for d in docs):
            raise Refusal(409, "document-missing", "upload the document before closing the job")
        service = await self.store.service(row.kind, row.service_name)
        if self.admission is not None and service is not None and row.state == JobState.PENDING_HELD.value:
            try:
                await self.admission.on_close(user, row, service)
            except Refusal as refusal:
                with contextlib.suppress(InvalidTransition):
                    await self.store.transition(job_id, Abort(Reason.ABORTED_BY_SYSTEM, refusal.message))
                raise
        try:
            result = await self.store.transition(job_id, Close())
        except InvalidTransition as exc:
            raise Refusal(409, "job-not-incoming", str(exc)) from None
        row = result.row
        self.notify(row.device_id, JobFetchable(job_id=row.id))
        return row

    # ------------------------------------------------------------------ reading and canceling

    async def get(self, user: User, job_id: int) -> JobRow:
        try:
            row = await self.store.get_job(job_id)
        except JobNotFound:
            raise Refusal(404, "not-found", f"no job {job_id}") from None
        if not user.is_admin and row.owner != user.name:
            raise Refusal(404, "not-found", f"no job {job_id}")
        return row

    async def view(self, user: User, job_id: int) -> tuple[JobRow, bool]:
        """(job, full): full for its owner, an admin or the owner of its device; a job of someone
        else on a service the user may use is returned with full=False (show it redacted);
        any other job is "not found"."""
        from cloud_service.sharing import Access, owns

        try:
            row = await self.store.get_job(job_id)
        except JobNotFound:
            raise Refusal(404, "not-found", f"no job {job_id}") from None
        if user.is_admin or row.owner == user.name:
            return row, True
        device = await self.store.device(row.device_id)
        if device is not None and owns(user, device):
            return row, False
        if device is not None and (await Access.load(self.store, user)).sees(device, row.service_name):
            return row, False
        raise Refusal(404, "not-found", f"no job {job_id}")

    async def cancel(self, user: User, job_id: int) -> JobRow:
        from cloud_service.sharing import owns

        row, full = await self.view(user, job_id)
        if not full:
            device = await self.store.device(row.device_id)
            if not owns(user, device):
                raise Refusal(403, "forbidden", f"job {job_id} is not yours to cancel")
        if JobState(row.state).terminal:
            raise Refusal(409, "job-ended", f"job {job_id} has already ended ({row.state})")
        try:
            result = await self.store.transition(job_id, Cancel(message=f"canceled by {user.name}"))
        except InvalidTransition as exc:
            raise Refusal(409, "job-ended", str(exc)) from None
        # Tell the device either way: it may hold the ticket of a job it has not claimed yet.
        self.notify(result.row.device_id, JobCanceled(job_id=job_id, version=result.row.version))
        return result.row
