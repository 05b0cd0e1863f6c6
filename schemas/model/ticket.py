"""Job-ticket validation against a service's capabilities (pure; used by service and Manager).

The same function runs at submit (the cloud refuses with 400 naming the attribute) and at
fetch in the Manager (the device rejects a job it cannot do), so both sides agree on what
"supported" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.tickets import PrintCapabilities, PrintJobTicket


@dataclass(frozen=True)
class TicketProblem:
    attribute: str
    value: Any
    supported: Any
    message: str


class TicketError(ValueError):
    """The ticket cannot be honoured; ``problems[0]`` names the first bad attribute."""

    def __init__(self, problems: list[TicketProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems

    @property
    def first(self) -> TicketProblem:
        return self.problems[0]


def parse_print_ticket(raw: dict[str, Any]) -> PrintJobTicket:
    """Parse an IPP-named dict; shape errors become TicketError naming the attribute."""
    try:
        return PrintJobTicket.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            attribute = str(err["loc"][0]) if err["loc"] else "ticket"
            if err["type"] == "extra_forbidden":
                message = f"{attribute}: unknown job-ticket attribute"
            else:
                message = f"{attribute}: {err['msg']}"
            problems.append(TicketProblem(attribute, err.get("input"), None, message))
        raise TicketError(problems) from None


def validate_print_ticket(ticket: PrintJobTicket, caps: PrintCapabilities,
                          document_format: str | None = None) -> None:
    """Raise TicketError unless every attribute set in ``ticket`` is supported by ``caps``."""
    problems: list[TicketProblem] = []

    def refuse(attribute: str, value: Any, supported: Any) -> None:
        problems.append(TicketProblem(attribute, value, supported,
                                      f"{attribute}={show_value(value)} is not supported "
                                      f"(supported: {show_value(supported)})"))

    def check_in(attribute: str, value: Any, supported: list[Any]) -> None:
        if value is not None and value not in supported:
            refuse(attribute, value, supported)

    if ticket.copies is not None:
        low, high = caps.copies_supported
        if not low <= ticket.copies <= high:
            refuse("copies", ticket.copies, f"{low}-{high}")
    check_in("sides", ticket.sides, caps.sides_supported)
    check_in("media", ticket.media, caps.media_supported)
    check_in("print-color-mode", ticket.print_color_mode, caps.print_color_mode_supported)
    check_in("print-quality", ticket.print_quality, caps.print_quality_supported)
    check_in("orientation-requested", ticket.orientation_requested, caps.orientation_requested_supported)
    check_in("number-up", ticket.number_up, caps.number_up_supported)
    if ticket.page_ranges is not None and not caps.page_ranges_supported:
        refuse("page-ranges", ticket.page_ranges, False)
    for finishing in ticket.finishings or []:
        check_in("finishings", finishing, caps.finishings_supported)
    fmt = document_format or ticket.document_format
    if fmt is not None and fmt != "application/octet-stream":
        check_in("document-format", fmt, caps.document_format_supported)
    if problems:
        raise TicketError(problems)


def show_value(value: Any) -> str:
    """A value as an error message shows it (lists comma-separated)."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
