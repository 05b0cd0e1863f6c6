"""The supplies of a LAN IPP printer, read from its Get-Printer-Attributes answer.

Printers say it two ways and the ``ipp`` driver takes either:

- the CUPS ``marker-*`` attributes (``marker-names``, ``marker-types``, ``marker-colors``,
  ``marker-levels``, ``marker-low-levels``, ``marker-high-levels``), parallel lists with one
  value per marker; preferred when present, with the colorant names of ``printer-supply``;
- PWG 5100.13 ``printer-supply`` (``index=1;class=...;type=toner;maxcapacity=100;level=75;
  colorantname=black;``) with ``printer-supply-description`` for the names (what CUPS's
  ippeveprinter and most IPP Everywhere printers send).

Values the protocol cannot carry (a vendor's marker type, a colour that is not ``#RRGGBB``) are
mapped to ``other``/``none``; an entry that still does not validate is dropped, never the lot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from schemas.ipp.codec import Attribute, Group
from schemas.supplies import (
    LEVEL_UNKNOWN,
    MAX_SUPPLIES,
    NAME_LENGTH,
    Supply,
    marker_type_of,
    parse_printer_supply,
)

log = logging.getLogger("cloudimaging.manager.ipp")

#: Asked for with the status poll: a few hundred bytes more per answer, and a level change
#: reaches the cloud within one poll without a poll of its own.
SUPPLY_ATTRIBUTES = ["marker-names", "marker-types", "marker-colors", "marker-levels", "marker-low-levels",
                     "marker-high-levels", "printer-supply", "printer-supply-description"]

#: marker-colors for the usual colorant names, when a printer gives names only.
COLORANT_COLORS = {"black": "#000000", "cyan": "#00FFFF", "magenta": "#FF00FF", "yellow": "#FFFF00",
                   "light-cyan": "#E0FFFF", "light-magenta": "#FF77FF", "gray": "#808080", "grey": "#808080",
                   "light-gray": "#D3D3D3", "photo-black": "#000000", "matte-black": "#000000",
                   "red": "#FF0000", "green": "#00FF00", "blue": "#0000FF", "white": "#FFFFFF"}


def _values(group: Group, name: str) -> list[object]:
    found: Attribute | None = group.get(name)
    return list(found.values) if found is not None else []


def raw_supplies(group: Group) -> tuple[tuple[object, ...], ...]:
    """The supply attributes as the printer sent them: compared between polls, so an unchanged
    answer is not parsed again."""
    return tuple(tuple(_values(group, name)) for name in SUPPLY_ATTRIBUTES)


def supplies_from_printer(group: Group) -> tuple[Supply, ...]:
    """The printer's supplies (at most MAX_SUPPLIES), from marker-* or else printer-supply."""
    entries = [parse_printer_supply(v) for v in _values(group, "printer-supply") if isinstance(v, bytes | str)]
    names = [v for v in _values(group, "marker-names") if isinstance(v, str)]
    if names:
        return _from_markers(group, names, entries)
    descriptions = [v for v in _values(group, "printer-supply-description") if isinstance(v, str)]
    out: list[Supply] = []
    for position, entry in enumerate(entries[:MAX_SUPPLIES]):
        colorant = _colorant(entry.get("colorantname"))
        kind = marker_type_of(entry.get("type", "other"))
        name = descriptions[position] if position < len(descriptions) else None
        _add(out, name=name or kind.replace("-", " ").capitalize(), type=kind,
             color=COLORANT_COLORS.get((colorant or "").lower(), "none"), colorant=colorant,
             level=_percent(entry))
    return tuple(out)


def _from_markers(group: Group, names: Sequence[str], entries: list[dict[str, str]]) -> tuple[Supply, ...]:
    types = _values(group, "marker-types")
    colors = _values(group, "marker-colors")
    levels = _values(group, "marker-levels")
    lows = _values(group, "marker-low-levels")
    highs = _values(group, "marker-high-levels")
    # printer-supply names the colorants; only trusted when it lists the same markers.
    colorants = [_colorant(e.get("colorantname")) for e in entries] if len(entries) == len(names) else []
    out: list[Supply] = []
    for i, name in enumerate(names[:MAX_SUPPLIES]):
        color = _at(colors, i)
        level = _at(levels, i)
        low, high = _at(lows, i), _at(highs, i)
        _add(out, name=name, type=marker_type_of(str(_at(types, i) or "other")),
             color=color if isinstance(color, str) else "none",
             colorant=colorants[i] if colorants else None,
             level=level if isinstance(level, int) and -3 <= level <= 100 else LEVEL_UNKNOWN,
             low_level=low if isinstance(low, int) and 0 <= low <= 100 else None,
             high_level=high if isinstance(high, int) and 0 <= high <= 100 else None)
    return tuple(out)


def _add(out: list[Supply], **fields: object) -> None:
    if isinstance(fields.get("name"), str):
        fields["name"] = str(fields["name"])[:NAME_LENGTH]
    try:
        out.append(Supply.model_validate(fields))
    except ValidationError:
        # A colour or name the protocol refuses: keep the supply with what is valid.
        try:
            out.append(Supply.model_validate({**fields, "color": "none", "colorant": None}))
        except ValidationError as exc:
            log.debug("printer supply %r dropped: %s", fields.get("name"), exc.errors()[0]["msg"])


def _at(values: list[object], i: int) -> object:
    return values[i] if i < len(values) else None


def _colorant(value: str | None) -> str | None:
    """A colorant name the protocol can carry; None for ``unknown``, absent or odd ones."""
    if not value or value.lower() in ("unknown", "none", "other"):
        return None
    return value[:63]


def _percent(entry: dict[str, str]) -> int:
    """printer-supply level as a percentage (-1/-2/-3 pass through, RFC 3805)."""
    try:
        level = int(entry.get("level", ""))
    except ValueError:
        return LEVEL_UNKNOWN
    if level < 0:
        return level if level >= -3 else LEVEL_UNKNOWN
    try:
        capacity = int(entry.get("maxcapacity", ""))
    except ValueError:
        capacity = -2
    if capacity > 0:
        return max(0, min(100, round(level * 100 / capacity)))
    return min(level, 100) if entry.get("unit") == "percent" else LEVEL_UNKNOWN
