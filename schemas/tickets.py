"""Job tickets and service capabilities with IPP attribute names.

Python attributes use underscores; on the wire (JSON and msgpack) the IPP names with hyphens
are used (``print-color-mode``, ``sides-supported``). Unknown attributes are refused
(extra="forbid") so a typo is an error naming the attribute, not a silently ignored option.
Validation of a ticket *against* capabilities lives in the sans-IO core
(schemas.model.ticket); here only the shape and the single-value rules are checked.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.text import Keyword, MimeType, Name


def ipp_name(field: str) -> str:
    return field.replace("_", "-")


class IppModel(BaseModel):
    """Base for models whose wire names are IPP attribute names."""

    model_config = ConfigDict(
        alias_generator=ipp_name,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )

    def wire(self) -> dict[str, Any]:
        """The IPP-named dict for JSON/msgpack, omitting attributes that are not set."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


PageRange = Annotated[tuple[int, int], Field(description="[lower, upper], 1-based, inclusive")]


class PrintJobTicket(IppModel):
    """Job Template attributes of a print job (RFC 8011 5.2, PWG 5100.7 names).

    Every attribute is optional; an absent one means the service's ``*-default``.
    """

    job_name: Name | None = None
    copies: Annotated[int, Field(ge=1, le=9999)] | None = None
    sides: Keyword | None = None
    media: Keyword | None = None
    print_color_mode: Keyword | None = None
    print_quality: Annotated[int, Field(ge=3, le=5)] | None = None
    orientation_requested: Annotated[int, Field(ge=3, le=7)] | None = None
    page_ranges: Annotated[list[PageRange], Field(min_length=1, max_length=100)] | None = None
    number_up: Annotated[int, Field(ge=1, le=64)] | None = None
    finishings: Annotated[list[Annotated[int, Field(ge=3, le=255)]], Field(max_length=32)] | None = None
    document_format: MimeType | None = None

    @field_validator("page_ranges")
    @classmethod
    def _ranges_ordered(cls, value: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if value is None:
            return value
        previous = 0
        for lower, upper in value:
            if lower < 1 or upper < lower:
                raise ValueError(f"page range {lower}-{upper} is not 1 <= lower <= upper")
            if lower <= previous:
                raise ValueError("page ranges must be ascending and not overlap")
            previous = upper
        return value


class PrintCapabilities(IppModel):
    """What a print service supports and defaults to (Printer Description attributes)."""

    copies_supported: tuple[int, int] = (1, 99)
    copies_default: int = 1
    sides_supported: list[Keyword] = ["one-sided"]
    sides_default: Keyword = "one-sided"
    media_supported: list[Keyword] = ["iso_a4_210x297mm"]
    media_default: Keyword = "iso_a4_210x297mm"
    print_color_mode_supported: list[Keyword] = ["monochrome"]
    print_color_mode_default: Keyword = "monochrome"
    print_quality_supported: list[int] = [4]
    print_quality_default: int = 4
    orientation_requested_supported: list[int] = [3, 4, 5, 6]
    orientation_requested_default: int = 3
    page_ranges_supported: bool = False
    number_up_supported: list[int] = [1]
    number_up_default: int = 1
    finishings_supported: list[int] = [3]
    finishings_default: list[int] = [3]
    document_format_supported: list[MimeType] = ["application/pdf"]
    document_format_default: MimeType = "application/pdf"
    #: The formats the device itself takes, where the service transforms others into them
    #: (``document-format-supported`` is then what the service takes). Set by the service.
    document_format_device_supported: list[MimeType] | None = None
    #: Resolutions (dots per inch) the device takes raster at (PWG 5100.14); transforms use them.
    pwg_raster_document_resolution_supported: list[Annotated[int, Field(ge=72, le=2400)]] | None = None
    #: How the device wants duplex back sides of raster (PWG 5100.14): normal, flipped, rotated,
    #: manual-tumble.
    pwg_raster_document_sheet_back: Keyword | None = None

    @model_validator(mode="after")
    def _defaults_supported(self) -> PrintCapabilities:
        low, high = self.copies_supported
        if not 1 <= low <= high:
            raise ValueError("copies-supported must be a range 1 <= lower <= upper")
        checks = [
            ("sides", self.sides_default, self.sides_supported),
            ("media", self.media_default, self.media_supported),
            ("print-color-mode", self.print_color_mode_default, self.print_color_mode_supported),
            ("print-quality", self.print_quality_default, self.print_quality_supported),
            ("number-up", self.number_up_default, self.number_up_supported),
            ("document-format", self.document_format_default, self.document_format_supported),
        ]
        for name, default, supported in checks:
            if default not in supported:
                raise ValueError(f"{name}-default {default!r} is not in {name}-supported")
        return self


# ---------------------------------------------------------------------------- Cloud Scan (PWG 5100.17)

#: Media sizes a scanner knows, as (width, height) in hundredths of millimetres (PWG 5101.1).
SCAN_MEDIA_SIZES: dict[str, tuple[int, int]] = {
    "iso_a4_210x297mm": (21000, 29700),
    "iso_a5_148x210mm": (14800, 21000),
    "na_letter_8.5x11in": (21590, 27940),
    "na_legal_8.5x14in": (21590, 35560),
}


class ScanRegion(IppModel):
    """One member of ``input-scan-regions`` (PWG 5100.17): offsets and sizes in 1/100 mm."""

    x_origin: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    y_origin: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    x_dimension: Annotated[int, Field(ge=1, le=1_000_000)]
    y_dimension: Annotated[int, Field(ge=1, le=1_000_000)]


class ScanJobTicket(IppModel):
    """Job Template attributes of a scan job (PWG 5100.17 names, flattened from
    ``input-attributes``). Every attribute is optional; absent means the ``*-default``.

    ``input-sides`` two-sided-* is the duplex ADF; ``input-resolution`` is one value in dpi
    used for both axes (scanners here are square-pixel).
    """

    job_name: Name | None = None
    input_source: Keyword | None = None
    input_sides: Keyword | None = None
    input_resolution: Annotated[int, Field(ge=1, le=9600)] | None = None
    input_color_mode: Keyword | None = None
    input_media: Keyword | None = None
    input_scan_regions: Annotated[list[ScanRegion], Field(min_length=1, max_length=1)] | None = None
    document_format: MimeType | None = None


class ScanCapabilities(IppModel):
    """What a scan service supports and defaults to (PWG 5100.17 Scanner Description)."""

    input_source_supported: list[Keyword] = ["platen"]
    input_source_default: Keyword = "platen"
    input_sides_supported: list[Keyword] = ["one-sided"]
    input_sides_default: Keyword = "one-sided"
    input_resolution_supported: list[Annotated[int, Field(ge=1, le=9600)]] = [150, 300]
    input_resolution_default: int = 300
    input_color_mode_supported: list[Keyword] = ["color", "monochrome", "bi-level"]
    input_color_mode_default: Keyword = "color"
    input_media_supported: list[Keyword] = ["iso_a4_210x297mm"]
    input_media_default: Keyword = "iso_a4_210x297mm"
    input_scan_regions_supported: bool = True
    document_format_supported: list[MimeType] = ["application/pdf", "image/jpeg", "image/png"]
    document_format_default: MimeType = "application/pdf"

    @model_validator(mode="after")
    def _defaults_supported(self) -> ScanCapabilities:
        checks = [
            ("input-source", self.input_source_default, self.input_source_supported),
            ("input-sides", self.input_sides_default, self.input_sides_supported),
            ("input-resolution", self.input_resolution_default, self.input_resolution_supported),
            ("input-color-mode", self.input_color_mode_default, self.input_color_mode_supported),
            ("input-media", self.input_media_default, self.input_media_supported),
            ("document-format", self.document_format_default, self.document_format_supported),
        ]
        for name, default, supported in checks:
            if default not in supported:
                raise ValueError(f"{name}-default {default!r} is not in {name}-supported")
        unknown = [m for m in self.input_media_supported if m not in SCAN_MEDIA_SIZES]
        if unknown:
            known = ", ".join(SCAN_MEDIA_SIZES)
            raise ValueError(f"input-media-supported: unknown size {unknown[0]!r} (known: {known})")
        return self


# ---------------------------------------------------------------------------- Cloud Fax out (PWG 5100.15)

#: A ``tel:`` URI (RFC 3966): global numbers ``tel:+<digits>``, or local digits; visual
#: separators (``-``, ``.``, ``(``, ``)``) allowed between digits.
TEL_URI_PATTERN = r"^tel:(\+[0-9][0-9().-]{2,30}|[0-9*#][0-9*#().-]{1,30})$"


class FaxDestination(IppModel):
    """One member of ``destination-uris`` (PWG 5100.15)."""

    destination_uri: Annotated[str, Field(max_length=64, pattern=TEL_URI_PATTERN)]
    pre_dial_string: Annotated[str, Field(max_length=16, pattern=r"^[0-9*#,]*$")] | None = None
    post_dial_string: Annotated[str, Field(max_length=16, pattern=r"^[0-9*#,]*$")] | None = None


#: ``printer-resolution`` of a fax: [x, y] in dpi. 204x98 "standard", 204x196 "fine",
#: 204x392 "superfine" (ITU-T T.4).
FaxResolution = tuple[Annotated[int, Field(ge=50, le=1200)], Annotated[int, Field(ge=50, le=1200)]]


class FaxOutJobTicket(IppModel):
    """Job Template attributes of a FaxOut job (PWG 5100.15 names)."""

    job_name: Name | None = None
    destination_uris: Annotated[list[FaxDestination], Field(min_length=1, max_length=32)] | None = None
    printer_resolution: FaxResolution | None = None
    number_of_retries: Annotated[int, Field(ge=0, le=10)] | None = None
    retry_interval: Annotated[int, Field(ge=0, le=3600)] | None = None
    document_format: MimeType | None = None


class FaxOutCapabilities(IppModel):
    """What a FaxOut service supports (PWG 5100.15 Printer Description attributes)."""

    destination_uri_schemes_supported: list[Keyword] = ["tel"]
    multiple_destination_uris_supported: bool = True
    #: Most destinations in one job (our extension; 1 when multiple ones are not supported).
    destination_uris_max: Annotated[int, Field(ge=1, le=32)] = 8
    printer_resolution_supported: list[FaxResolution] = [(204, 98), (204, 196)]
    printer_resolution_default: FaxResolution = (204, 98)
    number_of_retries_supported: tuple[int, int] = (0, 5)
    number_of_retries_default: int = 2
    retry_interval_supported: tuple[int, int] = (0, 600)
    retry_interval_default: int = 30
    document_format_supported: list[MimeType] = ["application/pdf", "image/jpeg", "image/png", "text/plain"]
    document_format_default: MimeType = "application/pdf"
    printer_fax_modem_number: Annotated[str, Field(max_length=64, pattern=TEL_URI_PATTERN)] | None = None

    @model_validator(mode="after")
    def _defaults_supported(self) -> FaxOutCapabilities:
        if tuple(self.printer_resolution_default) not in [tuple(r) for r in self.printer_resolution_supported]:
            raise ValueError("printer-resolution-default is not in printer-resolution-supported")
        if self.document_format_default not in self.document_format_supported:
            raise ValueError("document-format-default is not in document-format-supported")
        for name, (low, high), default in (
                ("number-of-retries", self.number_of_retries_supported, self.number_of_retries_default),
                ("retry-interval", self.retry_interval_supported, self.retry_interval_default)):
            if not 0 <= low <= default <= high:
                raise ValueError(f"{name}-default {default} is not in {name}-supported {low}-{high}")
        return self


class DestinationStatus(IppModel):
    """One member of ``destination-statuses`` (PWG 5100.15 job status).

    ``transmission-status`` uses the job-state keywords (pending, processing, completed,
    aborted, canceled) plus ``pending-retry``; ``transmission-status-reasons`` (our
    extension) says why, e.g. ``busy`` or ``no-answer``; ``attempts`` counts dial attempts.
    """

    destination_uri: Annotated[str, Field(max_length=64)]
    images_completed: Annotated[int, Field(ge=0)] = 0
    transmission_status: Keyword = "pending"
    transmission_status_reasons: Annotated[list[Keyword], Field(max_length=8)] = []
    attempts: Annotated[int, Field(ge=0, le=100)] = 0


def ticket_model(kind: str) -> type[PrintJobTicket] | type[ScanJobTicket] | type[FaxOutJobTicket]:
    """The ticket model of a service kind (``print``, ``scan``, ``faxout``)."""
    return {"scan": ScanJobTicket, "faxout": FaxOutJobTicket}.get(kind, PrintJobTicket)


def capabilities_model(kind: str) -> type[PrintCapabilities] | type[ScanCapabilities] | type[FaxOutCapabilities]:
    return {"scan": ScanCapabilities, "faxout": FaxOutCapabilities}.get(kind, PrintCapabilities)
