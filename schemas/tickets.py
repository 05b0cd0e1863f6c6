"""Job tickets and service capabilities with IPP attribute names.

Python attributes use underscores; on the wire (JSON and msgpack) the IPP names with hyphens
are used (``print-color-mode``, ``sides-supported``). Unknown attributes are refused
(extra="forbid") so a typo is an error naming the attribute, not a silently ignored option.
Validation of a ticket *against* capabilities lives in the sans-IO core
(cloud_service.core.ticket); here only the shape and the single-value rules are checked.
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
