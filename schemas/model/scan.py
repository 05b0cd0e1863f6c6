"""Scan tickets against scan capabilities (PWG 5100.17), and the geometry of a scan. Pure.

Like print tickets (core.ticket), the same check runs at submit (400 naming the attribute)
and in the Manager before it claims the job, so both sides agree on "supported".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.model.ticket import TicketError, TicketProblem, show_value
from schemas.tickets import SCAN_MEDIA_SIZES, ScanCapabilities, ScanJobTicket

#: Hundredths of a millimetre per inch.
HMM_PER_INCH = 2540


def parse_scan_ticket(raw: dict[str, Any]) -> ScanJobTicket:
    """Parse an IPP-named dict; shape errors become TicketError naming the attribute."""
    try:
        return ScanJobTicket.model_validate(raw)
    except ValidationError as exc:
        raise TicketError(schema_problems(exc, "scan")) from None


def schema_problems(exc: ValidationError, what: str) -> list[TicketProblem]:
    """Pydantic's errors as ticket problems naming the IPP attribute (scan and FaxOut share it)."""
    problems = []
    for err in exc.errors():
        attribute = str(err["loc"][0]) if err["loc"] else "ticket"
        if err["type"] == "extra_forbidden":
            message = f"{attribute}: unknown {what} job-ticket attribute"
        else:
            where = ".".join(str(p) for p in err["loc"])
            message = f"{where}: {err['msg']}"
        problems.append(TicketProblem(attribute, err.get("input"), None, message))
    return problems


@dataclass(frozen=True)
class ScanSettings:
    """A ticket with every default filled in: what the scanner will actually do."""

    input_source: str
    input_sides: str
    resolution: int
    color_mode: str
    media: str
    #: The scanned area in 1/100 mm: (x_origin, y_origin, width, height).
    region: tuple[int, int, int, int]
    document_format: str

    @property
    def pixels(self) -> tuple[int, int]:
        """Image size in pixels of one scanned page (at least 1 x 1)."""
        _, _, width, height = self.region
        return (max(1, round(width * self.resolution / HMM_PER_INCH)),
                max(1, round(height * self.resolution / HMM_PER_INCH)))

    @property
    def duplex(self) -> bool:
        return self.input_sides.startswith("two-sided")


def validate_scan_ticket(ticket: ScanJobTicket, caps: ScanCapabilities) -> ScanSettings:
    """Raise TicketError unless ``caps`` supports every attribute of ``ticket``; else return
    the settings to scan with (defaults filled in)."""
    problems: list[TicketProblem] = []

    def pick(attribute: str, value: Any, supported: list[Any], default: Any) -> Any:
        if value is None:
            return default
        if value not in supported:
            problems.append(TicketProblem(attribute, value, supported,
                                          f"{attribute}={show_value(value)} is not supported "
                                          f"(supported: {show_value(supported)})"))
        return value

    source = pick("input-source", ticket.input_source, caps.input_source_supported, caps.input_source_default)
    sides = pick("input-sides", ticket.input_sides, caps.input_sides_supported, caps.input_sides_default)
    if sides.startswith("two-sided") and source != "adf" and ticket.input_sides is not None:
        problems.append(TicketProblem("input-sides", sides, ["one-sided"],
                                      f"input-sides={sides} needs input-source=adf (a platen scans one side)"))
    if source != "adf":
        sides = "one-sided"
    resolution = pick("input-resolution", ticket.input_resolution, caps.input_resolution_supported,
                      caps.input_resolution_default)
    color = pick("input-color-mode", ticket.input_color_mode, caps.input_color_mode_supported,
                 caps.input_color_mode_default)
    media = pick("input-media", ticket.input_media, caps.input_media_supported, caps.input_media_default)
    fmt = pick("document-format", ticket.document_format, caps.document_format_supported,
               caps.document_format_default)
    if color == "bi-level" and fmt == "image/jpeg":
        problems.append(TicketProblem("input-color-mode", color, ["color", "monochrome"],
                                      "input-color-mode=bi-level cannot be stored as image/jpeg "
                                      "(use image/png or application/pdf)"))
    width, height = SCAN_MEDIA_SIZES.get(media, SCAN_MEDIA_SIZES[caps.input_media_default])
    region = (0, 0, width, height)
    if ticket.input_scan_regions:
        if not caps.input_scan_regions_supported:
            problems.append(TicketProblem("input-scan-regions", "region", False,
                                          "input-scan-regions is not supported by this scanner"))
        r = ticket.input_scan_regions[0]
        if r.x_origin + r.x_dimension > width or r.y_origin + r.y_dimension > height:
            problems.append(TicketProblem(
                "input-scan-regions", r.wire(), f"within {width}x{height} (1/100 mm)",
                f"input-scan-regions: the region does not fit {media} ({width}x{height} in 1/100 mm)"))
        region = (r.x_origin, r.y_origin, r.x_dimension, r.y_dimension)
    if problems:
        raise TicketError(problems)
    return ScanSettings(source, sides, resolution, color, media, region, fmt)
