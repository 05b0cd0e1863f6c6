"""FaxOut tickets (PWG 5100.15), the retry policy and the job outcome of destinations. Pure.

The retry policy, shared by the Manager (which dials) and the docs: a destination that is
``busy`` or gives ``no-answer`` is dialled again after ``retry-interval`` seconds, at most
``number-of-retries`` more times; any other failure (a refused number, a modem error) is not
retried. A job whose every destination was sent is ``completed``; one with some sent and
some failed is ``completed`` with ``job-completed-with-errors``; none sent is ``aborted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.enums import JobState
from schemas.model.scan import schema_problems
from schemas.model.ticket import TicketError, TicketProblem, show_value
from schemas.tickets import DestinationStatus, FaxOutCapabilities, FaxOutJobTicket

#: Dial outcomes worth trying again.
RETRYABLE = frozenset({"busy", "no-answer"})
JOB_COMPLETED_WITH_ERRORS = "job-completed-with-errors"


def parse_fax_ticket(raw: dict[str, Any]) -> FaxOutJobTicket:
    """Parse an IPP-named dict; a bad tel: URI or shape becomes TicketError naming it."""
    try:
        return FaxOutJobTicket.model_validate(raw)
    except ValidationError as exc:
        problems = schema_problems(exc, "faxout")
        for problem in problems:
            if problem.attribute == "destination-uris" and "pattern" in problem.message:
                problem_text = f"destination-uris: {problem.value!r} is not a tel: URI (e.g. tel:+15551234567)"
                problems[problems.index(problem)] = TicketProblem(problem.attribute, problem.value, ["tel"],
                                                                  problem_text)
        raise TicketError(problems) from None


@dataclass(frozen=True)
class FaxSettings:
    """A ticket with defaults filled in: what the modem will do."""

    destinations: tuple[str, ...]
    resolution: tuple[int, int]
    retries: int
    retry_interval: int
    document_format: str | None


def validate_fax_ticket(ticket: FaxOutJobTicket, caps: FaxOutCapabilities,
                        document_format: str | None = None) -> FaxSettings:
    """Raise TicketError unless ``caps`` supports the ticket; else the settings to send with."""
    problems: list[TicketProblem] = []

    def refuse(attribute: str, value: Any, supported: Any, why: str | None = None) -> None:
        problems.append(TicketProblem(attribute, value, supported, why or
                                      f"{attribute}={show_value(value)} is not supported "
                                      f"(supported: {show_value(supported)})"))

    destinations = [d.destination_uri for d in ticket.destination_uris or []]
    if not destinations:
        refuse("destination-uris", None, ["tel"], "destination-uris: give at least one tel: URI to send to")
    schemes = caps.destination_uri_schemes_supported
    for uri in destinations:
        if uri.split(":", 1)[0] not in schemes:
            refuse("destination-uris", uri, schemes)
    limit = caps.destination_uris_max if caps.multiple_destination_uris_supported else 1
    if len(destinations) > limit:
        refuse("destination-uris", len(destinations), limit,
               f"destination-uris: {len(destinations)} destinations, this fax service takes at most {limit}")
    if len(set(destinations)) != len(destinations):
        refuse("destination-uris", destinations, "distinct", "destination-uris: a destination is listed twice")
    supported_res = [tuple(r) for r in caps.printer_resolution_supported]
    resolution = tuple(ticket.printer_resolution or caps.printer_resolution_default)
    if resolution not in supported_res:
        refuse("printer-resolution", "x".join(map(str, resolution)), ["x".join(map(str, r)) for r in supported_res])
    retries = caps.number_of_retries_default if ticket.number_of_retries is None else ticket.number_of_retries
    low, high = caps.number_of_retries_supported
    if not low <= retries <= high:
        refuse("number-of-retries", retries, f"{low}-{high}")
    interval = caps.retry_interval_default if ticket.retry_interval is None else ticket.retry_interval
    low, high = caps.retry_interval_supported
    if not low <= interval <= high:
        refuse("retry-interval", interval, f"{low}-{high}")
    fmt = document_format or ticket.document_format
    if fmt is not None and fmt != "application/octet-stream" and fmt not in caps.document_format_supported:
        refuse("document-format", fmt, caps.document_format_supported)
    if problems:
        raise TicketError(problems)
    return FaxSettings(tuple(destinations), (int(resolution[0]), int(resolution[1])), retries, interval, fmt)


def should_retry(outcome: str, attempts: int, retries: int) -> bool:
    """True if a destination whose latest dial gave ``outcome`` after ``attempts`` dials is
    to be dialled again under a ``number-of-retries`` of ``retries``."""
    return outcome in RETRYABLE and attempts <= retries


def job_outcome(statuses: list[DestinationStatus]) -> tuple[JobState, tuple[str, ...], str | None]:
    """The job's final state from its destinations' final transmission statuses."""
    if any(s.transmission_status == "canceled" for s in statuses):
        return JobState.CANCELED, ("job-canceled-by-user",), None
    sent = [s for s in statuses if s.transmission_status == "completed"]
    failed = [s for s in statuses if s.transmission_status != "completed"]
    if statuses and not failed:
        return JobState.COMPLETED, ("job-completed-successfully",), None
    detail = "; ".join(f"{s.destination_uri}: {', '.join(s.transmission_status_reasons) or s.transmission_status}"
                       for s in failed)
    if sent:
        return JobState.COMPLETED, (JOB_COMPLETED_WITH_ERRORS,), f"not sent to {detail}"
    return JobState.ABORTED, ("aborted-by-system",), f"not sent: {detail}" if detail else "nothing to send"
