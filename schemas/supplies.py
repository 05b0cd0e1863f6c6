"""Printer supplies (markers) as a device reports them: RFC 3805 prtMarkerSupplies in IPP dress.

A print service may report the supplies of its device (toner, ink, waste receptacles...) with
its attributes (schemas.messages). Each entry carries what the IPP ``marker-*`` attributes
carry for one marker (``marker-names``, ``marker-types``, ``marker-colors``, ``marker-levels``,
``marker-low-levels``, ``marker-high-levels``) plus the colorant name of PWG 5100.13's
``printer-supply``. This module also holds the one codec of ``printer-supply`` values
(``index=1;class=supplyThatIsConsumed;type=toner;...``), which the cloud's IPP front writes
and the Manager's ipp driver reads.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.text import check_text

#: At most this many supplies per service (a six-colour printer with its waste bins fits).
MAX_SUPPLIES = 16
#: Longest supply name, in characters.
NAME_LENGTH = 127

#: marker-types keywords (IANA IPP registry, from RFC 3805 PrtMarkerSuppliesTypeTC).
MARKER_TYPES = (
    "toner", "waste-toner", "ink", "ink-cartridge", "ink-ribbon", "waste-ink", "opc", "developer",
    "fuser-oil", "solid-wax", "ribbon-wax", "waste-wax", "fuser", "corona-wire", "fuser-oil-wick",
    "cleaner-unit", "fuser-cleaning-pad", "transfer-unit", "toner-cartridge", "fuser-oiler", "water",
    "waste-water", "glue-water-additive", "waste-paper", "binding-supply", "banding-supply",
    "stitching-wire", "shrink-wrap", "paper-wrap", "staples", "inserts", "covers", "other", "unknown",
)
MarkerType = Literal[
    "toner", "waste-toner", "ink", "ink-cartridge", "ink-ribbon", "waste-ink", "opc", "developer",
    "fuser-oil", "solid-wax", "ribbon-wax", "waste-wax", "fuser", "corona-wire", "fuser-oil-wick",
    "cleaner-unit", "fuser-cleaning-pad", "transfer-unit", "toner-cartridge", "fuser-oiler", "water",
    "waste-water", "glue-water-additive", "waste-paper", "binding-supply", "banding-supply",
    "stitching-wire", "shrink-wrap", "paper-wrap", "staples", "inserts", "covers", "other", "unknown",
]

#: marker-levels special values (RFC 3805 prtMarkerSuppliesLevel): -1 unavailable ("other"),
#: -2 unknown, -3 some remaining (the device cannot measure, but it is not empty).
LEVEL_UNAVAILABLE, LEVEL_UNKNOWN, LEVEL_SOME_REMAINING = -1, -2, -3

#: One marker-colors value: ``none`` or one or more ``#RRGGBB`` (a multi-colour cartridge).
_COLOR = r"^(none|(#[0-9A-Fa-f]{6}){1,8})$"
#: A colorant name goes inside a printer-supply octet string: no ``;`` or ``=``.
_COLORANT = r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,62}$"


class Supply(BaseModel):
    """One supply of a printer (one entry of each IPP marker-* attribute).

    ``level`` is a percentage of full (0-100) or one of the RFC 3805 special values: -1
    unavailable, -2 unknown, -3 some remaining. ``low_level`` is the level at or below which
    the supply is low (``marker-low-levels``); ``high_level`` the level at or above which a
    receptacle is almost full (``marker-high-levels``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: marker-names and printer-supply-description, e.g. "Black Toner" (127 characters at most,
    #: like the front's other printer texts: 16 of them per service stay far below the message limit).
    name: Annotated[str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(check_text)]
    #: marker-types.
    type: MarkerType = "other"
    #: marker-colors: "#RRGGBB" (or several for a multi-colour cartridge, or "none").
    color: Annotated[str, Field(pattern=_COLOR, max_length=57)] = "none"
    #: printer-supply ``colorantname`` (PWG 5100.13), e.g. "black"; absent when unknown.
    colorant: Annotated[str, Field(pattern=_COLORANT)] | None = None
    #: marker-levels.
    level: Annotated[int, Field(ge=-3, le=100)] = LEVEL_UNKNOWN
    #: marker-low-levels.
    low_level: Annotated[int, Field(ge=0, le=100)] | None = None
    #: marker-high-levels.
    high_level: Annotated[int, Field(ge=0, le=100)] | None = None


Supplies = Annotated[list[Supply], Field(max_length=MAX_SUPPLIES)]


def supply_class(marker_type: str) -> str:
    """printer-supply ``class``: a waste receptacle is filled, everything else consumed."""
    if marker_type == "unknown":
        return "unknown"
    return "receptacleThatIsFilled" if marker_type.startswith("waste-") else "supplyThatIsConsumed"


def _camel(keyword: str) -> str:
    """``waste-toner`` -> ``wasteToner`` (RFC 3805 names in printer-supply)."""
    head, *rest = keyword.split("-")
    return head + "".join(part.capitalize() for part in rest)


def _keyword(camel: str) -> str:
    """``wasteToner`` -> ``waste-toner``."""
    return re.sub(r"(?<=[a-z])([A-Z])", lambda m: "-" + m.group(1).lower(), camel).lower()


def printer_supply(index: int, supply: Supply) -> bytes:
    """The PWG 5100.13 printer-supply value of one supply (levels in percent of a 100 capacity)."""
    colorant = supply.colorant or "unknown"
    return (f"index={index};class={supply_class(supply.type)};type={_camel(supply.type)};unit=percent;"
            f"maxcapacity=100;level={supply.level};colorantname={colorant};").encode("ascii")


def parse_printer_supply(value: bytes | str) -> dict[str, str]:
    """The ``key=value;`` pairs of one printer-supply value (keys lower-cased); bad pairs skipped."""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    out: dict[str, str] = {}
    for pair in text.split(";"):
        key, sep, val = pair.partition("=")
        if sep and key.strip():
            out[key.strip().lower()] = val.strip()
    return out


def marker_type_of(value: str) -> MarkerType:
    """A marker-types keyword from either spelling (``waste-toner`` or ``wasteToner``); ``other``
    for a name outside the registry (vendors invent some)."""
    keyword = _keyword(value) if "-" not in value else value.lower()
    return keyword if keyword in MARKER_TYPES else "other"  # type: ignore[return-value]

