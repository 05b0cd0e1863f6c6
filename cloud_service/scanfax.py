"""Cloud Scan and Cloud FaxOut on the service side: tickets, scan jobs, scan output, fax
destination statuses.

Scan and fax jobs are ordinary jobs (same table, same state machine in core/job.py, same
versions, cancel and access control); what differs lives here:

- a scan job has no input document: it is fetchable as soon as it is created;
- its output documents are made by the device, which asks for one presigned PUT URL per
  document (``request-upload``), uploads it around the broker, then reports the document
  ``completed`` with its size and SHA-256, checked against what the service stored;
- a fax job's ``destination-statuses`` (PWG 5100.15), sent with the device's job-status
  reports, are kept in their own table and shown in the job.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, select
from sqlalchemy.orm import Mapped, mapped_column

from cloud_service.db import Base, DocumentRow, JobRow, ServiceRow
from schemas.enums import DocumentState, JobState, ServiceKind
from schemas.messages import JobFetchable
from schemas.model.fax import parse_fax_ticket, validate_fax_ticket
from schemas.model.scan import parse_scan_ticket, validate_scan_ticket
from schemas.model.ticket import TicketError
from schemas.tickets import FaxOutCapabilities, ScanCapabilities

if TYPE_CHECKING:
    from cloud_service.auth import User
    from cloud_service.jobs import JobOperations
    from cloud_service.objects import ObjectStore, StoredObject
    from cloud_service.store import JobStore

#: Most output documents one scan job may make (a 1000-sheet duplex ADF in single pages).
MAX_SCAN_DOCUMENTS = 2000


class JobDestinationsRow(Base):
    """The latest ``destination-statuses`` of a fax job (one row per job, a JSON list)."""

    __tablename__ = "job_destinations"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    statuses: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)
    #: The job version the statuses were reported with (newest report wins).
    version: Mapped[int] = mapped_column(Integer)


def output_key(job_id: int, number: int) -> str:
    """Object key of scan output ``number``: distinct from input documents (``doc-N``)."""
    return f"jobs/{job_id}/scan-{number}"


def parse_output_key(key: str) -> tuple[int, int] | None:
    """(job id, document number) of a scan-output key, else None."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "jobs" and parts[1].isdigit() and parts[2].startswith("scan-") \
            and parts[2][5:].isdigit():
        return int(parts[1]), int(parts[2][5:])
    return None


# ---------------------------------------------------------------------------- tickets


def check_ticket(service: ServiceRow, raw: dict[str, Any], document_format: str | None) -> dict[str, Any]:
    """Validate a scan or fax ticket against the service's capabilities (TicketError if not);
    return the IPP-named ticket to store."""
    if service.kind == ServiceKind.SCAN.value:
        ticket = parse_scan_ticket(raw)
        validate_scan_ticket(ticket, ScanCapabilities.model_validate(service.capabilities))
        return ticket.wire()
    fax = parse_fax_ticket(raw)
    validate_fax_ticket(fax, FaxOutCapabilities.model_validate(service.capabilities), document_format)
    return fax.wire()


def ticket_error_fields(exc: TicketError) -> dict[str, Any]:
    first = exc.first
    return {"code": "unsupported-attribute" if first.supported is not None else "bad-ticket",
            "attribute": first.attribute, "supported": first.supported}


# ---------------------------------------------------------------------------- scan jobs


async def create_scan_job(jobs: JobOperations, user: User, service_name: str | None, ticket: dict[str, Any],
                          retention_choice: dict[str, Any] | None = None) -> JobRow:
    """Create a scan job: no input document, so it is fetchable (and its doorbell rung) at once."""
    from sqlalchemy import update

    service = await jobs.usable_service(user, ServiceKind.SCAN, service_name)
    stored = jobs.check_ticket(service, ticket, None)
    row = await jobs.store.create_job(kind=ServiceKind.SCAN, service=service, owner=user.name, ticket=stored,
                                      documents=[], with_documents=True)
    columns = await _retention_columns(jobs, service, retention_choice)
    if columns:
        async with jobs.store.sessions.begin() as s:
            await s.execute(update(JobRow).where(JobRow.id == row.id).values(**columns))
        row = await jobs.store.get_job(row.id)
    jobs.notify(row.device_id, JobFetchable(job_id=row.id))
    return row


async def _retention_columns(jobs: JobOperations, service: ServiceRow, choice: dict[str, Any] | None) -> dict:
    """The job's retention (as for print). Scan output exists to be downloaded after the job
    ends, so ``discard-after-processing`` keeps it for the duration instead."""
    config = getattr(jobs.admission, "config", None)
    if config is None:
        return {}
    from cloud_service import retention
    from cloud_service.accounting import policy

    rules = await policy(jobs.store, service.device_id, service.name)
    resolved = retention.columns(retention.resolve(config, rules, choice))
    if resolved.get("retention_documents") == "discard-after-processing":
        resolved["retention_documents"] = "after-duration"
        resolved["retention_seconds"] = config.document_retention_seconds
    return resolved


async def output_slot(store: JobStore, job: JobRow, number: int, document_format: str,
                      name: str | None) -> DocumentRow:
    """The document row of scan output ``number``, made on first request (idempotent)."""
    docs = {d.number: d for d in await store.documents(job.id)}
    if number in docs:
        return docs[number]
    async with store.sessions.begin() as s:
        s.add(DocumentRow(job_id=job.id, number=number, name=name, format=document_format, size=None,
                          sha256=None, object_key=output_key(job.id, number),
                          state=DocumentState.PENDING.value, impressions_completed=0))
    return next(d for d in await store.documents(job.id) if d.number == number)


class OutputRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def store_output(store: JobStore, objects: ObjectStore, key: str, chunks: AsyncIterator[bytes],
                       max_bytes: int) -> StoredObject:
    """A presigned PUT of scan output: only while the job runs, and not over a completed one."""
    from cloud_service.objects import ObjectTooLarge
    from cloud_service.store import JobNotFound

    parsed = parse_output_key(key)
    if parsed is None:
        raise OutputRefused(404, "not-found", "no such upload")
    job_id, number = parsed
    try:
        row = await store.get_job(job_id)
    except JobNotFound:
        raise OutputRefused(404, "not-found", "no such job") from None
    if row.kind != ServiceKind.SCAN.value or JobState(row.state).terminal or not row.claimed:
        raise OutputRefused(409, "job-not-scanning", "the job does not take scan output now")
    doc = next((d for d in await store.documents(job_id) if d.number == number), None)
    if doc is None or doc.object_key != key:
        raise OutputRefused(404, "not-found", "no such output document")
    if doc.state == DocumentState.COMPLETED.value:
        raise OutputRefused(409, "document-stored", "this output document is complete already")
    try:
        stored = await objects.put_stream(key, chunks, max_bytes)
    except ObjectTooLarge as exc:
        raise OutputRefused(413, "too-large", str(exc)) from None
    await store.set_document(job_id, number, size=stored.size, sha256=stored.sha256)
    return stored


# ---------------------------------------------------------------------------- fax destinations


async def save_destination_statuses(store: JobStore, job_id: int, version: int,
                                    statuses: list[dict[str, Any]]) -> None:
    async with store.sessions.begin() as s:
        row = await s.get(JobDestinationsRow, job_id)
        if row is None:
            s.add(JobDestinationsRow(job_id=job_id, statuses=statuses, updated_at=time.time(), version=version))
        elif version >= row.version:
            row.statuses, row.updated_at, row.version = statuses, time.time(), version


async def destination_statuses(store: JobStore, job: JobRow) -> list[dict[str, Any]] | None:
    """What clients see: the device's latest report, else every destination still pending."""
    if job.kind != ServiceKind.FAXOUT.value:
        return None
    async with store.sessions() as s:
        row = await s.scalar(select(JobDestinationsRow).where(JobDestinationsRow.job_id == job.id))
    if row is not None:
        return list(row.statuses)
    status = "canceled" if job.state == JobState.CANCELED.value else (
        "aborted" if job.state == JobState.ABORTED.value else "pending")
    return [{"destination-uri": d.get("destination-uri"), "images-completed": 0, "transmission-status": status}
            for d in (job.ticket or {}).get("destination-uris", [])]
