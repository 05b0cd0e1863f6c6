"""What the IPP front advertises beyond a service's capabilities (PWG 5100.14, IPP Everywhere).

Kept apart from the front's protocol handling so that each figure has one place: the document
formats a printer takes, the raster it accepts, its icons and its supplies.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Sequence

from PIL import Image, ImageDraw

from schemas.ipp.attributes import attr
from schemas.ipp.codec import Attribute, Tag
from schemas.supplies import Supply, printer_supply
from schemas.tickets import PrintCapabilities

#: printer-icons sizes (PWG 5100.14 5.1.5: 48x48, 128x128 and 512x512 PNG).
ICON_SIZES = (48, 128, 512)


def document_format_supported(caps: PrintCapabilities) -> list[str]:
    """The printer's document-format-supported: every format a job may be submitted in.

    The one place the front computes it: today what the device takes directly (its
    capabilities); where the service transforms documents, this is where the formats it can
    transform into one of those join (and ``application/octet-stream``, auto-detection, may
    be added once the service sniffs formats).
    """
    return list(dict.fromkeys(caps.document_format_supported))


def raster_types(caps: PrintCapabilities) -> list[str]:
    """pwg-raster-document-type-supported: 8-bit grey always, sRGB where the device prints colour."""
    return ["sgray_8", *(["srgb_8"] if "color" in caps.print_color_mode_supported else [])]


#: pwg-raster-document-resolution-supported (dpi). Raster is passed to the device as sent;
#: 300 dpi is what every raster-taking printer supports.
RASTER_RESOLUTIONS = [300]


def unknown_supplies() -> list[tuple[bytes, str]]:
    """printer-supply when the device reports no markers: one entry, class and level unknown.

    RFC 3805 prtMarkerSuppliesLevel -2 means "unknown"; IPP Everywhere requires the attribute,
    and the cloud will not invent a toner level.
    """
    return [(b"index=1;class=other;type=other;unit=percent;maxcapacity=-2;level=-2;colorantname=unknown;",
             "Supplies (level not reported by the device)")]


def reported_supplies(stored: Iterable[dict] | None) -> list[Supply]:
    """The supplies stored with a service (valid when written; an unreadable entry is dropped)."""
    out = []
    for raw in stored or ():
        try:
            out.append(Supply.model_validate(raw))
        except ValueError:
            continue
    return out


def printer_supplies(supplies: Sequence[Supply]) -> list[tuple[bytes, str]]:
    """printer-supply (PWG 5100.13) and printer-supply-description: the device's supplies, or the
    one unknown entry when it reported none."""
    if not supplies:
        return unknown_supplies()
    return [(printer_supply(index, supply), supply.name) for index, supply in enumerate(supplies, 1)]


def marker_attributes(supplies: Sequence[Supply]) -> dict[str, Attribute]:
    """marker-names, -colors, -levels, -types, -low-levels and -high-levels (the CUPS printer
    attributes every CUPS client reads for ink levels), one value per supply; none without supplies.

    A low or high level the device did not give is sent as 0 or 100 (never low, never full):
    the lists are parallel, so each supply needs a value.
    """
    if not supplies:
        return {}
    found = [
        attr("marker-names", Tag.NAME, [s.name for s in supplies]),
        attr("marker-colors", Tag.NAME, [s.color for s in supplies]),
        attr("marker-levels", Tag.INTEGER, [s.level for s in supplies]),
        attr("marker-types", Tag.KEYWORD, [s.type for s in supplies]),
        attr("marker-low-levels", Tag.INTEGER, [0 if s.low_level is None else s.low_level for s in supplies]),
        attr("marker-high-levels", Tag.INTEGER, [100 if s.high_level is None else s.high_level for s in supplies]),
    ]
    return {a.name: a for a in found}


#: Supply conditions a device reports as a warning (the printer still prints). The cloud stores
#: reasons without their severity suffix; the front gives these theirs back (RFC 8011 5.4.12:
#: a reason without a suffix is an error). The front never derives one from a level.
SUPPLY_WARNINGS = frozenset({
    "toner-low", "marker-supply-low", "marker-waste-almost-full", "marker-ink-almost-empty",
    "marker-waste-ink-receptacle-almost-full", "marker-waste-toner-receptacle-almost-full",
    "developer-low", "opc-near-eol", "ink-low",
})


def printer_state_reasons(reasons: Iterable[str]) -> list[str]:
    """printer-state-reasons as sent: supply warnings the device reported get ``-warning``."""
    return [f"{r}-warning" if r in SUPPLY_WARNINGS else r for r in reasons]


@functools.lru_cache(maxsize=len(ICON_SIZES))
def icon_png(size: int) -> bytes:
    """A printer icon drawn at ``size`` pixels (a printer body, a sheet, a status light)."""
    if size not in ICON_SIZES:
        raise ValueError(f"no {size} px icon")
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    u = size / 48
    draw.rectangle((14 * u, 4 * u, 34 * u, 20 * u), fill=(250, 250, 250, 255), outline=(90, 90, 90, 255),
                   width=max(1, round(u)))
    draw.rounded_rectangle((4 * u, 16 * u, 44 * u, 36 * u), radius=4 * u, fill=(52, 101, 164, 255))
    draw.rectangle((12 * u, 30 * u, 36 * u, 44 * u), fill=(255, 255, 255, 255), outline=(90, 90, 90, 255),
                   width=max(1, round(u)))
    for line in (34, 38):
        draw.line((16 * u, line * u, 32 * u, line * u), fill=(150, 150, 150, 255), width=max(1, round(u)))
    draw.ellipse((37 * u, 20 * u, 41 * u, 24 * u), fill=(78, 154, 6, 255))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
