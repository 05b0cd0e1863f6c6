"""Claiming a job: fetch-job, the local check, acknowledge-job.

The check is the one the service made when the job was created (schemas.model ticket
validation against this service's capabilities), made again here because the device is
the one that must do the job, followed by the driver's own check. A job that fails it is
acknowledged with ``accept=false`` and the fetch-status reason; a job that passes is
acknowledged with ``accept=true``, and the reply's document URLs make it claimed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from manager.channel import JobChannel, JobGone
from manager.drivers.base import JobRefused, PrintDriver
from manager.drivers.fax import FaxDriver, FaxJob
from manager.drivers.scanner import ScanDriver, ScanJob
from manager.flows.print import print_job
from manager.jobbook import JobBook, JobRecord
from manager.requests import RequestTimeout
from manager.services import ServiceRuntime
from schemas.enums import JobState, Reason
from schemas.messages import AcknowledgeJob
from schemas.model.fax import validate_fax_ticket
from schemas.model.scan import validate_scan_ticket
from schemas.model.ticket import TicketError, validate_print_ticket
from schemas.tickets import FaxOutJobTicket, PrintJobTicket, ScanJobTicket, ticket_model

log = logging.getLogger("cloudimaging.manager")


@dataclass(frozen=True)
class Declined:
    """The job is not this device's to run: forget it (``remember``: never fetch it again)."""

    state: JobState | None
    remember: bool


def check(record: JobRecord, service: ServiceRuntime | None) -> tuple[str, str] | None:
    """Why this device cannot do the job (fetch-status reason, message), or None."""
    if service is None:
        return Reason.UNSUPPORTED_ATTRIBUTES, f"this device has no service named {record.service!r}"
    kind = service.config.kind
    if record.kind != kind:
        return Reason.UNSUPPORTED_ATTRIBUTES, f"service {service.name!r} is a {kind} service, not {record.kind}"
    try:
        if kind == "print":
            ticket = record.ticket if isinstance(record.ticket, PrintJobTicket) else PrintJobTicket()
            validate_print_ticket(ticket, service.capabilities, ticket.document_format)
            assert isinstance(service.driver, PrintDriver)
            service.driver.check_job(print_job(record))
        elif kind == "scan":
            assert isinstance(record.ticket, ScanJobTicket) and isinstance(service.driver, ScanDriver)
            settings = validate_scan_ticket(record.ticket, service.config.capabilities)
            service.driver.check_scan(ScanJob(record.job_id, service.name, record.ticket, settings))
        else:
            assert isinstance(record.ticket, FaxOutJobTicket) and isinstance(service.driver, FaxDriver)
            fax = validate_fax_ticket(record.ticket, service.config.capabilities, record.ticket.document_format)
            service.driver.check_fax(FaxJob(record.job_id, service.name, record.ticket, fax))
    except TicketError as exc:
        problem = exc.first
        reason = (Reason.UNSUPPORTED_DOCUMENT_FORMAT if problem.attribute == "document-format"
                  else Reason.UNSUPPORTED_ATTRIBUTES)
        return reason, problem.message
    except JobRefused as exc:
        return exc.reason, exc.message
    return None


async def claim(record: JobRecord, channel: JobChannel, services: Mapping[str, ServiceRuntime],
                book: JobBook) -> Declined | None:
    """Fetch the job, check it, accept or reject it. None when it is ours to run.

    Raises JobGone when the service says the job is not ours any more.
    """
    try:
        reply = await channel.fetch()
    except RequestTimeout as exc:
        log.warning("job %d: %s; will retry on the next doorbell or sync", record.job_id, exc)
        return Declined(None, remember=False)
    if reply is None:
        return Declined(None, remember=False)
    kind = reply.kind.value if reply.kind else "print"
    record.fetched(kind, reply.ticket or ticket_model(kind)(), reply.document_count or 1,
                   reply.service or (next(iter(services)) if len(services) == 1 else None), reply.job_uuid)
    book.save(record)
    if record.cancel_requested:
        log.info("job %d: canceled before it was accepted", record.job_id)
        return Declined(JobState.CANCELED, remember=True)

    refusal = check(record, services.get(record.service or ""))
    if refusal is not None:
        reason, message = refusal
        log.info("job %d: rejected: %s (%s)", record.job_id, reason, message)
        with contextlib.suppress(JobGone):
            await channel.locked_exchange(
                lambda v: AcknowledgeJob(job_id=record.job_id, version=v, accept=False, reason=reason,
                                         message=message[:1000]),
                final=True, persistent=True)
        return Declined(JobState.ABORTED, remember=True)

    record.acknowledge(in_flight=True)
    try:
        reply = await channel.locked_exchange(
            lambda v: AcknowledgeJob(job_id=record.job_id, version=v, accept=True), final=True, persistent=True)
    finally:
        record.acknowledge(in_flight=False)
    if reply is None:
        log.warning("job %d: the service did not let this device claim it", record.job_id)
        return Declined(None, remember=False)
    record.claim(reply.documents)
    book.save(record)
    return None
