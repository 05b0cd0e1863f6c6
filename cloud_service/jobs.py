"""The client side of the Cloud Print, Scan and FaxOut services: create, close, cancel,
validate and read jobs.

Transport-free like devices.py: the HTTP and IPP fronts call these, and they call a ``Notify``
callable to ring a device's doorbell. The doorbell is only a hint: a device that misses it
finds the job in the ``sync`` answer to its next hello.

Scan and fax jobs are ordinary jobs (same table, state machine, versions, cancel and access
control). A scan job has no input document, so it is fetchable as soon as it is created; its
output documents are made by the device (cloud_service.documents).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import Connection

from cloud_service.auth import User
from cloud_service.db import DeviceRow, DocumentRow, JobRow, ServiceRow
from cloud_service.defaults import choose_service
from cloud_service.documents import RECORDED, DocumentKey, Documents
from cloud_service.errors import Refusal
from cloud_service.objects import StoredObject
from cloud_service.sharing import Access, check_service, owns, usable_in
from cloud_service.store import JobNotFound, JobStore, Known, created_event, new_document
from cloud_service.transform import advertised_capabilities
from schemas.enums import JobState, Reason, ServiceKind
from schemas.messages import JobCanceled, JobFetchable, Message
from schemas.model.fax import parse_fax_ticket, validate_fax_ticket
from schemas.model.job import Abort, Cancel, Close, Hold, InvalidTransition, ReleaseHold
from schemas.model.pages import impressions
from schemas.model.scan import parse_scan_ticket, validate_scan_ticket
from schemas.model.ticket import TicketError, TicketProblem, parse_print_ticket, validate_print_ticket
from schemas.tickets import FaxOutCapabilities, PrintCapabilities, ScanCapabilities

log = logging.getLogger("cloudimaging.jobs")

Notify = Callable[[str, Message], None]


class Admission(Protocol):
    """Price, quota and retention decisions at submit (cloud_service.accounting.Admission)."""

    def read_usable(self, conn: Connection, user: User, kind: str, name: str
                    ) -> tuple[tuple[ServiceRow, DeviceRow | None], Any] | None:
        """The service ``kind``/``name`` the user may use with its device (as
        ``sharing.usable_in``), and what ``on_create`` decides on, read inside the caller's
        transaction (no I/O of its own); None if there is no such service the user sees."""
        ...

    async def on_create(self, user: User, service: ServiceRow, ticket: dict[str, Any],
                        retention: dict[str, Any] | None, known: Any = None) -> tuple[dict[str, Any], bool]:
        """The job row's admission and retention columns, and whether ``on_close`` must check
        the job again (False: no price and no quota apply to it); Refusal if it may not start.
        ``known``: what ``read`` returned, if the caller read it already."""
        ...

    async def on_close(self, user: User, row: JobRow, service: ServiceRow) -> None:
        """Check again with the documents in; Refusal if the job may not run."""
        ...

    async def on_create_scan(self, service: ServiceRow, retention: dict[str, Any] | None) -> dict[str, Any]:
        """The retention columns of a scan job."""
        ...


#: Services whose capabilities were parsed most recently: (kind, id) -> (the stored JSON as read,
#: the parsed model). A submit reads its service each time (another replica, or the device, may
#: have changed it); comparing what it read with the kept JSON costs a few microseconds where
#: parsing the model again cost 50 (the transforms' formats added, then pydantic's validation).
_parsed_capabilities: OrderedDict[tuple[str, int], tuple[dict[str, Any], Any]] = OrderedDict()
#: Most services kept: beyond it the least recently used is parsed again next time.
PARSED_CAPABILITIES_KEPT = 1024


def parsed_capabilities(service: ServiceRow) -> Any:
    """The service's capabilities as the model of its kind (print: with the formats the service
    transforms into one it takes, cloud_service.transform), parsed once while they are unchanged."""
    key = (service.kind, service.id)
    kept = _parsed_capabilities.get(key)
    if kept is not None and kept[0] == service.capabilities:
        _parsed_capabilities.move_to_end(key)
        return kept[1]
    if service.kind == ServiceKind.SCAN.value:
        parsed: Any = ScanCapabilities.model_validate(service.capabilities)
    elif service.kind == ServiceKind.FAXOUT.value:
        parsed = FaxOutCapabilities.model_validate(service.capabilities)
    else:
        parsed = PrintCapabilities.model_validate(advertised_capabilities(service.capabilities))
    _parsed_capabilities[key] = (copy.deepcopy(service.capabilities), parsed)
    if len(_parsed_capabilities) > PARSED_CAPABILITIES_KEPT:
        _parsed_capabilities.popitem(last=False)
    return parsed


def _validated(service: ServiceRow, raw: dict[str, Any], document_format: str | None) -> dict[str, Any]:
    """The IPP-named ticket of ``raw`` if the service supports it (TicketError if not)."""
    if service.kind == ServiceKind.SCAN.value:
        scan = parse_scan_ticket(raw)
        validate_scan_ticket(scan, parsed_capabilities(service))
        return scan.wire()
    if service.kind == ServiceKind.FAXOUT.value:
        fax = parse_fax_ticket(raw)
        validate_fax_ticket(fax, parsed_capabilities(service), document_format)
        return fax.wire()
    ticket = parse_print_ticket(raw)
    validate_print_ticket(ticket, parsed_capabilities(service), document_format)
    return ticket.wire()


class JobOperations:
    """Job operations on behalf of users (PWG Create-Job, Close-Job, Cancel-Job, Get-Job...)."""

    def __init__(self, store: JobStore, documents: Documents, notify: Notify, admission: Admission) -> None:
        self.store = store
        self.documents = documents
        self.notify = notify
        self.admission = admission

    # ------------------------------------------------------------------ services and tickets

    async def resolve_service(self, kind: ServiceKind, name: str | None, user: User | None = None) -> ServiceRow:
        """The service to use; with ``user``, only among the services shared with them (others
        read as missing). Without a name: the user's default, else the only one
        (cloud_service.defaults.choose_service), never a guess among several."""
        if name:
            row = await self.store.service(kind.value, name)
            if row is None:
                raise Refusal(404, "not-found", f"no {kind.value} service named {name!r}")
            if user is not None:
                await check_service(self.store, user, row)
            return row
        return await choose_service(self.store, kind, user)

    async def usable_service(self, user: User, kind: ServiceKind, name: str | None) -> ServiceRow:
        """resolve_service for a new job: also refuses services whose device is revoked.
        A named service, its device and the user's access to it are read in one hop."""
        return (await self._usable(user, kind, name))[0]

    async def _usable(self, user: User, kind: ServiceKind, name: str | None,
                      admitting: bool = False) -> tuple[ServiceRow, Any, DeviceRow | None]:
        """usable_service, with ``admitting`` what admission decides on (``Admission.read_usable``,
        else None), read in the same statement as the service, and its device."""
        if not name:
            # Chosen (the user's default, or the only one they see), then read as if named:
            # its device and what admission decides on come in the same hop.
            name = (await self.resolve_service(kind, None, user)).name

        def work(conn: Connection) -> tuple[tuple[ServiceRow, DeviceRow | None] | None, Any]:
            if admitting:
                return self.admission.read_usable(conn, user, kind.value, name) or (None, None)
            return usable_in(conn, user, kind.value, name), None

        found, known = await self.store.read(work)
        if found is None:
            raise Refusal(404, "not-found", f"no {kind.value} service named {name!r}")
        service, device = found
        if device is not None and (device.revoked_at is not None or device.deregistered_at is not None):
            raise Refusal(409, "service-unavailable",
                          f"{kind.value} service {service.name!r} is unavailable: its device was revoked")
        return service, known, device

    def check_ticket(self, service: ServiceRow, raw: dict[str, Any], document_format: str | None) -> dict:
        """Validate against the service's capabilities; return the IPP-named ticket to store."""
        try:
            return _validated(service, raw, document_format)
        except TicketError as exc:
            first: TicketProblem = exc.first
            raise Refusal(400, "unsupported-attribute" if first.supported is not None else "bad-ticket",
                          str(exc), attribute=first.attribute, supported=first.supported) from None

    # ------------------------------------------------------------------ creating jobs

    async def create(self, user: User, kind: ServiceKind, service_name: str | None, ticket: dict[str, Any],
                     document_format: str, document_name: str | None,
                     chunks: AsyncIterator[bytes] | None, retention: dict[str, Any] | None = None) -> JobRow:
        """Create a job; with ``chunks`` the document is stored and the job is fetchable at
        once, without it the job waits (pending-held, job-incoming) for an upload and close."""
        service, known, device = await self._usable(user, kind, service_name, admitting=True)
        stored_ticket = self.check_ticket(service, ticket, document_format)
        stored_ticket.pop("document-format", None)
        admitted, check_at_close = await self.admission.on_create(user, service, stored_ticket, retention, known)
        doc = {"name": document_name, "format": document_format}
        # With its document the job is closed before the answer, by a commit that makes this
        # one durable too (JobStore.create_job); without, the answer follows this commit.
        row = await self.store.create_job(kind=kind, service=service, owner=user.name, ticket=stored_ticket,
                                          documents=[doc], with_documents=False, key_for=DocumentKey.input_key,
                                          columns=admitted, flushed_by_next_commit=chunks is not None)
        if chunks is not None:
            # Just made, by this user, on this service: store its one document and close it
            # without reading all that back.
            new = new_document(row.id, 1, document_name, document_format, DocumentKey.input_key(row.id, 1))
            _, stored = await self.documents.receive_new(new, chunks)
            row = await self._close(user, row, service, stored, check_at_close,
                                    Known(row, [new], [created_event(row)], device))
        return row

    async def create_scan(self, user: User, service_name: str | None, ticket: dict[str, Any],
                          retention: dict[str, Any] | None = None) -> JobRow:
        """Create a scan job: no input document, so it is fetchable (and its doorbell rung) at once."""
        service = await self.usable_service(user, ServiceKind.SCAN, service_name)
        stored = self.check_ticket(service, ticket, None)
        columns = await self.admission.on_create_scan(service, retention)
        row = await self.store.create_job(kind=ServiceKind.SCAN, service=service, owner=user.name, ticket=stored,
                                          documents=[], with_documents=True, columns=columns)
        self.notify(row.device_id, JobFetchable(job_id=row.id))
        return row

    async def store_document(self, job_id: int, chunks: AsyncIterator[bytes]) -> StoredObject:
        """Take the bytes of the job's (one) input document (cloud_service.documents)."""
        return await self.documents.accept(DocumentKey(job_id, 1), chunks)

    async def close(self, user: User, job_id: int) -> JobRow:
        """Close-Job: all documents are in; ring the device's doorbell."""
        row = await self.get(user, job_id)
        docs = await self.store.documents(job_id)
        if any(d.sha256 is None for d in docs):
            raise Refusal(409, "document-missing", "upload the document before closing the job")
        return await self._close(user, row, await self.store.service(row.kind, row.service_name))

    async def _close(self, user: User, row: JobRow, service: ServiceRow | None,
                     stored: DocumentRow | None = None, check: bool = True, known: Known | None = None) -> JobRow:
        """Close the job. ``stored``: its one document, whose bytes this request has just stored
        (``Documents.receive_new``) and not yet recorded; unless admission must ``check`` the job
        again (and so read its pages), they are recorded with the close, with the estimate of
        what the job counts (schemas.model.pages.impressions) on the job. ``known``: the job as
        this request just made it, judged without reading it back."""
        job_id = row.id
        recorded = {k: getattr(stored, k) for k in RECORDED} if stored is not None else None
        if recorded is not None and check:
            await self.store.set_document(job_id, stored.number, **recorded)  # type: ignore[union-attr]
        if service is not None and row.state == JobState.PENDING_HELD.value and check:
            try:
                await self.admission.on_close(user, row, service)
            except Refusal as refusal:
                with contextlib.suppress(InvalidTransition):
                    await self.store.transition(job_id, Abort(Reason.ABORTED_BY_SYSTEM, refusal.message))
                raise
        # Transforms run before the job becomes fetchable (cloud_service.transform).
        note = (await self.documents.make_printable(row, row.kind, service.capabilities,
                                                    [stored] if stored is not None else None)
                if service else None)
        documents = extra = None
        if recorded is not None and not check:
            assert stored is not None
            documents = {stored.number: recorded}
            estimate = impressions(stored.pages or 1, row.ticket)

            def extra(_row: JobRow) -> dict:
                return {"impressions_estimated": estimate}
        if known is not None and note is None:
            # Nothing written beside the job since it was made (no transform, no document
            # columns of their own): its copy is whole, and kept for the device's fetch.
            known = replace(known, whole=True)
        try:
            result = await self.store.transition(job_id, Close(note), extra=extra, documents=documents, view=True,
                                                 known=known if check is False else None)
        except InvalidTransition as exc:
            if documents is not None and recorded is not None:  # the bytes are stored all the same
                await self.store.set_document(job_id, stored.number, **recorded)  # type: ignore[union-attr]
            raise Refusal(409, "job-not-incoming", str(exc)) from None
        row = result.row
        if result.after.fetchable:  # a held job rings no doorbell until it is released
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

    # ------------------------------------------------------------------ holding

    async def _own(self, user: User, job_id: int, verb: str) -> JobRow:
        """The job, if ``user`` may act on it as on its own (owner, admin, owner of its device)."""
        row, full = await self.view(user, job_id)
        if not full:
            device = await self.store.device(row.device_id)
            if not owns(user, device):
                raise Refusal(403, "forbidden", f"job {job_id} is not yours to {verb}")
        return row

    async def hold(self, user: User, job_id: int) -> JobRow:
        """Hold-Job: no device may take the job until it is released (a claimed job is past it)."""
        await self._own(user, job_id, "hold")
        try:
            result = await self.store.transition(job_id, Hold(message=f"held by {user.name}"))
        except InvalidTransition as exc:
            raise Refusal(409, "job-not-holdable", str(exc)) from None
        return result.row

    async def release(self, user: User, job_id: int) -> JobRow:
        """Release-Job: a held job becomes fetchable (the device's doorbell rings)."""
        await self._own(user, job_id, "release")
        try:
            result = await self.store.transition(job_id, ReleaseHold(message=f"released by {user.name}"))
        except InvalidTransition as exc:
            raise Refusal(409, "job-not-held", str(exc)) from None
        if result.after.fetchable:
            self.notify(result.row.device_id, JobFetchable(job_id=job_id))
        return result.row
