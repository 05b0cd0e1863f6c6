"""Mapping between our IPP-named tickets/capabilities and IPP attributes on the wire.

Both edges use it: the IPP front turns a service's ``PrintCapabilities`` into the printer
attributes IPP Everywhere clients expect (plus what PWG 5100.12 requires of every IPP/2.0
printer), and a Print-Job's Job Template attributes into our ticket; the Manager's ``ipp``
driver turns a real printer's Get-Printer-Attributes answer back into ``PrintCapabilities``
and our ticket into Job Template attributes. Our names already are IPP's, so this is about
value syntaxes (enum, rangeOfInteger, keyword|name) and the attributes we do not model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.ipp.codec import Attribute, Collection, Group, Range, Resolution, Tag, collection, simple
from schemas.tickets import PrintCapabilities

#: Nominal values for attributes PWG 5100.12 requires but our capabilities do not carry;
#: the cloud never rasterises, so these only let clients build their print dialog.
NOMINAL_PAGES_PER_MINUTE = 10
NOMINAL_RESOLUTION = Resolution(600, 600, 3)
#: Only the versions whose ipptool suite passes: IPP/2.1 and 2.2 (PWG 5100.12) also require
#: subscriptions, printer administration and document operations the cloud front does not have.
IPP_VERSIONS = ("1.1", "2.0")
#: The cloud does not know a device's unprintable margins; 4.23 mm (1/6 in) is what most
#: office printers report, and what transforms into raster should leave blank.
NOMINAL_MARGIN = 423
MEDIA_SOURCES = ("auto",)
MEDIA_TYPES = ("stationery",)
#: job-hold-until values honoured: a job is released by Release-Job, never by the clock.
HOLD_UNTIL = ("no-hold", "indefinite")
MEDIA_COL_MEMBERS = ("media-bottom-margin", "media-left-margin", "media-right-margin", "media-size",
                     "media-size-name", "media-source", "media-top-margin", "media-type")
#: What every IPP Everywhere printer must take (PWG 5100.14 4.4): the front claims
#: ipp-everywhere in ipp-features-supported only for a printer that takes both.
EVERYWHERE_FORMATS = ("image/jpeg", "image/pwg-raster")
#: Members an ``overrides`` entry may carry besides the ticket's own attributes.
OVERRIDE_SCOPE = ("document-copies", "document-numbers", "pages")

#: Job Template attributes (RFC 8011 5.2, PWG 5100.7) whose -default/-supported/-ready
#: printer attributes form the 'job-template' group of requested-attributes.
JOB_TEMPLATE = frozenset({
    "copies", "finishings", "media", "media-col", "number-up", "orientation-requested", "page-ranges",
    "print-color-mode", "print-quality", "printer-resolution", "sides", "output-bin", "job-priority",
    "job-hold-until", "job-sheets", "multiple-document-handling",
})

_KEYWORD = re.compile(r"^[a-z][a-z0-9._-]{0,254}$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def attr(name: str, tag: int, values: Any) -> Attribute:
    vals = list(values) if isinstance(values, list) else [values]
    return Attribute(name, int(tag), vals)


def is_job_template(name: str) -> bool:
    for suffix in ("-default", "-supported", "-ready", "-database"):
        if name.endswith(suffix):
            return name.removesuffix(suffix) in JOB_TEMPLATE
    return False


# ---------------------------------------------------------------------------- printer attributes


@dataclass
class PrinterInfo:
    """What the IPP front knows of one print service besides its capabilities."""

    name: str
    uri: str
    more_info: str
    uuid: str
    state_enum: int
    state_reasons: list[str]
    state_message: str | None = None
    info: str | None = None
    location: str | None = None
    make_and_model: str | None = None
    queued_jobs: int = 0
    accepting: bool = True
    max_kbytes: int = 0
    #: document-format-supported: what the device takes plus what the service transforms into it.
    formats: list[str] = field(default_factory=list)
    #: Raster the service accepts (pwg-raster-document-*, urf-supported): resolutions in dpi,
    #: PWG raster types (black_1, sgray_8, srgb_8...).
    raster_resolutions: list[int] = field(default_factory=lambda: [300])
    raster_types: list[str] = field(default_factory=lambda: ["sgray_8"])
    #: printer-icons: 48, 128 and 512 pixel PNGs (PWG 5100.14 5.1.5).
    icons: list[str] = field(default_factory=list)
    #: printer-supply values and their descriptions (RFC 3805 prtMarkerSupplies as IPP text).
    supplies: list[tuple[bytes, str]] = field(default_factory=list)
    supply_info_uri: str = ""
    #: Unix times of the last change of the printer's configuration and of its state.
    config_change_time: int = 0
    state_change_time: int = 0
    extra: dict[str, Attribute] = field(default_factory=dict)


def device_id(make_and_model: str, formats: list[str]) -> str:
    """IEEE 1284 device ID (PWG 5107.2): what CUPS uses to match a driver and to name a queue."""
    make, _, model = make_and_model.partition(" ")
    commands = {"application/pdf": "PDF", "image/pwg-raster": "PWGRaster", "image/urf": "URF",
                "image/jpeg": "JPEG", "text/plain": "TEXT", "application/postscript": "POSTSCRIPT"}
    cmd = ",".join(dict.fromkeys(commands[f] for f in formats if f in commands)) or "PDF"

    def clean(text: str) -> str:
        return re.sub(r"[;:]", " ", text).strip() or "cloudimaging"

    return f"MFG:{clean(make)};MDL:{clean(model or make)};CMD:{cmd};"


def media_size(keyword: str) -> tuple[int, int] | None:
    """(x, y) in hundredths of mm from a PWG 5101.1 self-describing name (``iso_a4_210x297mm``)."""
    found = re.search(r"_([0-9]+(?:\.[0-9]+)?)x([0-9]+(?:\.[0-9]+)?)(mm|in)$", keyword)
    if found is None:
        return None
    scale = 100 if found.group(3) == "mm" else 2540
    return round(float(found.group(1)) * scale), round(float(found.group(2)) * scale)


def media_col(keyword: str, margin: int = NOMINAL_MARGIN) -> Collection | None:
    """The media-col of a media keyword (media-col-database, -ready, -default)."""
    size = media_size(keyword)
    if size is None:
        return None
    return collection(media_size=(Tag.BEGIN_COLLECTION, collection(x_dimension=(Tag.INTEGER, size[0]),
                                                                   y_dimension=(Tag.INTEGER, size[1]))),
                      media_size_name=(Tag.KEYWORD, keyword),
                      media_bottom_margin=(Tag.INTEGER, margin), media_left_margin=(Tag.INTEGER, margin),
                      media_right_margin=(Tag.INTEGER, margin), media_top_margin=(Tag.INTEGER, margin),
                      media_source=(Tag.KEYWORD, MEDIA_SOURCES[0]), media_type=(Tag.KEYWORD, MEDIA_TYPES[0]))


def _everywhere(caps: PrintCapabilities, p: PrinterInfo, formats: list[str]) -> list[Attribute]:
    """What PWG 5100.14 (IPP Everywhere) adds to a PWG 5100.12 printer."""
    cols = [c for c in (media_col(m) for m in caps.media_supported) if c is not None]
    sizes = [{"media-size": c["media-size"]} for c in cols]
    default_col = media_col(caps.media_default)
    resolutions = [Resolution(d, d, 3) for d in p.raster_resolutions]
    out = [
        attr("media-col-database", Tag.BEGIN_COLLECTION, cols),
        attr("media-col-ready", Tag.BEGIN_COLLECTION, [default_col] if default_col else cols[:1]),
        *([attr("media-col-default", Tag.BEGIN_COLLECTION, default_col)] if default_col else []),
        attr("media-col-supported", Tag.KEYWORD, list(MEDIA_COL_MEMBERS)),
        attr("media-size-supported", Tag.BEGIN_COLLECTION, sizes),
        attr("media-source-supported", Tag.KEYWORD, list(MEDIA_SOURCES)),
        attr("media-source-default", Tag.KEYWORD, MEDIA_SOURCES[0]),
        attr("media-type-supported", Tag.KEYWORD, list(MEDIA_TYPES)),
        attr("media-type-default", Tag.KEYWORD, MEDIA_TYPES[0]),
        *[attr(f"media-{side}-margin-supported", Tag.INTEGER, [NOMINAL_MARGIN])
          for side in ("bottom", "left", "right", "top")],
        attr("job-hold-until-default", Tag.KEYWORD, "no-hold"),
        attr("job-hold-until-supported", Tag.KEYWORD, list(HOLD_UNTIL)),
        attr("job-priority-default", Tag.INTEGER, 50),
        attr("job-priority-supported", Tag.INTEGER, 1),  # one level: every priority is served in order
        attr("job-sheets-default", Tag.KEYWORD, "none"),
        attr("job-sheets-supported", Tag.KEYWORD, ["none"]),
        attr("multiple-document-handling-supported", Tag.KEYWORD, ["separate-documents-uncollated-copies",
                                                                    "separate-documents-collated-copies"]),
        attr("overrides-supported", Tag.KEYWORD, ["document-number", "document-numbers", "pages"]),
        attr("print-content-optimize-default", Tag.KEYWORD, "auto"),
        attr("print-content-optimize-supported", Tag.KEYWORD, ["auto"]),
        attr("print-rendering-intent-default", Tag.KEYWORD, "auto"),
        attr("print-rendering-intent-supported", Tag.KEYWORD, ["auto"]),
        attr("print-scaling-default", Tag.KEYWORD, "auto"),
        attr("print-scaling-supported", Tag.KEYWORD, ["auto"]),
        attr("ipp-features-supported", Tag.KEYWORD,
             ["ipp-everywhere"] if all(f in formats for f in EVERYWHERE_FORMATS) else ["none"]),
        attr("job-ids-supported", Tag.BOOLEAN, True),
        attr("preferred-attributes-supported", Tag.BOOLEAN, False),
        attr("multiple-operation-time-out-action", Tag.KEYWORD, "hold-job"),
        attr("printer-config-change-date-time", Tag.DATETIME, _at(p.config_change_time)),
        attr("printer-config-change-time", Tag.INTEGER, p.config_change_time),
        attr("printer-state-change-date-time", Tag.DATETIME, _at(p.state_change_time)),
        attr("printer-state-change-time", Tag.INTEGER, p.state_change_time),
        attr("printer-device-id", Tag.TEXT, _short(device_id(p.make_and_model or "cloudimaging cloud printer",
                                                              formats), 1023)),
        attr("printer-geo-location", Tag.UNKNOWN, None),
        attr("printer-get-attributes-supported", Tag.KEYWORD, ["document-format"]),
        *([attr("printer-icons", Tag.URI, list(p.icons))] if p.icons else []),
        attr("printer-organization", Tag.TEXT, [""]),
        attr("printer-organizational-unit", Tag.TEXT, [""]),
        *([attr("printer-supply", Tag.OCTET_STRING, [s for s, _ in p.supplies]),
           attr("printer-supply-description", Tag.TEXT, [d for _, d in p.supplies])] if p.supplies else []),
        *([attr("printer-supply-info-uri", Tag.URI, p.supply_info_uri)] if p.supply_info_uri else []),
    ]
    if "image/pwg-raster" in formats:
        out += [attr("pwg-raster-document-resolution-supported", Tag.RESOLUTION, resolutions),
                attr("pwg-raster-document-sheet-back", Tag.KEYWORD, "normal"),
                attr("pwg-raster-document-type-supported", Tag.KEYWORD, list(p.raster_types))]
    if "image/urf" in formats:
        # Apple raster (URF) capabilities, as AirPrint clients and CUPS read them.
        types = {"sgray_8": "W8", "srgb_8": "SRGB24"}
        out.append(attr("urf-supported", Tag.KEYWORD,
                        ["V1.4", "CP1", *(types[t] for t in p.raster_types if t in types),
                         "RS" + "-".join(str(d) for d in p.raster_resolutions),
                         *(["DM1"] if any(s.startswith("two-sided") for s in caps.sides_supported) else [])]))
    return out


def _at(when: int) -> datetime:
    return datetime.fromtimestamp(max(0, when), UTC)


def printer_attributes(caps: PrintCapabilities, p: PrinterInfo, up_time: int,
                       operations: list[int]) -> dict[str, Attribute]:
    """All printer attributes of a service, in a stable order."""
    color = "color" in caps.print_color_mode_supported
    formats = p.formats or list(caps.document_format_supported)
    out = [
        # Job Template (printer side)
        attr("copies-default", Tag.INTEGER, caps.copies_default),
        attr("copies-supported", Tag.RANGE, Range(*caps.copies_supported)),
        attr("finishings-default", Tag.ENUM, list(caps.finishings_default)),
        attr("finishings-supported", Tag.ENUM, list(caps.finishings_supported)),
        attr("media-default", Tag.KEYWORD, caps.media_default),
        attr("media-ready", Tag.KEYWORD, [caps.media_default]),
        attr("media-supported", Tag.KEYWORD, list(caps.media_supported)),
        attr("number-up-default", Tag.INTEGER, caps.number_up_default),
        attr("number-up-supported", Tag.INTEGER, list(caps.number_up_supported)),
        attr("orientation-requested-default", Tag.ENUM, caps.orientation_requested_default),
        attr("orientation-requested-supported", Tag.ENUM, list(caps.orientation_requested_supported)),
        attr("output-bin-default", Tag.KEYWORD, "auto"),
        attr("output-bin-supported", Tag.KEYWORD, ["auto"]),
        attr("page-ranges-supported", Tag.BOOLEAN, caps.page_ranges_supported),
        attr("print-color-mode-default", Tag.KEYWORD, caps.print_color_mode_default),
        attr("print-color-mode-supported", Tag.KEYWORD, list(caps.print_color_mode_supported)),
        attr("print-quality-default", Tag.ENUM, caps.print_quality_default),
        attr("print-quality-supported", Tag.ENUM, list(caps.print_quality_supported)),
        attr("printer-resolution-default", Tag.RESOLUTION, NOMINAL_RESOLUTION),
        attr("printer-resolution-supported", Tag.RESOLUTION, [NOMINAL_RESOLUTION]),
        attr("sides-default", Tag.KEYWORD, caps.sides_default),
        attr("sides-supported", Tag.KEYWORD, list(caps.sides_supported)),
        # Printer Description
        attr("charset-configured", Tag.CHARSET, "utf-8"),
        attr("charset-supported", Tag.CHARSET, ["utf-8", "us-ascii"]),
        attr("color-supported", Tag.BOOLEAN, color),
        attr("compression-supported", Tag.KEYWORD, ["none"]),
        attr("document-format-default", Tag.MIME_TYPE, caps.document_format_default
             if caps.document_format_default in formats else formats[0]),
        attr("document-format-supported", Tag.MIME_TYPE, formats),
        attr("generated-natural-language-supported", Tag.LANGUAGE, ["en"]),
        attr("identify-actions-default", Tag.KEYWORD, ["display"]),
        attr("identify-actions-supported", Tag.KEYWORD, ["display", "flash", "sound", "speak"]),
        attr("ipp-versions-supported", Tag.KEYWORD, list(IPP_VERSIONS)),
        attr("job-creation-attributes-supported", Tag.KEYWORD,
             ["copies", "finishings", "media", "media-col", "number-up", "orientation-requested",
              *(["page-ranges"] if caps.page_ranges_supported else []), "print-color-mode", "print-quality",
              "sides", "ipp-attribute-fidelity", "job-name", "document-format", "document-name",
              "job-hold-until", "job-priority", "job-sheets", "multiple-document-handling", "output-bin",
              "overrides", "print-content-optimize", "print-rendering-intent", "print-scaling"]),
        attr("job-k-octets-supported", Tag.RANGE, Range(0, max(1, p.max_kbytes))),
        attr("multiple-document-jobs-supported", Tag.BOOLEAN, False),
        attr("multiple-operation-time-out", Tag.INTEGER, 300),
        attr("natural-language-configured", Tag.LANGUAGE, "en"),
        attr("operations-supported", Tag.ENUM, operations),
        attr("pages-per-minute", Tag.INTEGER, NOMINAL_PAGES_PER_MINUTE),
        *([attr("pages-per-minute-color", Tag.INTEGER, NOMINAL_PAGES_PER_MINUTE)] if color else []),
        attr("pdl-override-supported", Tag.KEYWORD, "attempted"),
        attr("printer-current-time", Tag.DATETIME, _now()),
        attr("printer-info", Tag.TEXT, _short(p.info or p.name)),
        attr("printer-is-accepting-jobs", Tag.BOOLEAN, p.accepting),
        attr("printer-location", Tag.TEXT, _short(p.location or "")),
        attr("printer-make-and-model", Tag.TEXT, _short(p.make_and_model or "cloudimaging cloud printer")),
        attr("printer-more-info", Tag.URI, p.more_info),
        attr("printer-name", Tag.NAME, p.name),
        attr("printer-state", Tag.ENUM, p.state_enum),
        attr("printer-state-message", Tag.TEXT, _short(p.state_message or "")),
        attr("printer-state-reasons", Tag.KEYWORD, p.state_reasons or ["none"]),
        attr("printer-up-time", Tag.INTEGER, up_time),
        attr("printer-uri-supported", Tag.URI, [p.uri]),
        attr("printer-uuid", Tag.URI, p.uuid),
        attr("queued-job-count", Tag.INTEGER, p.queued_jobs),
        attr("uri-authentication-supported", Tag.KEYWORD, ["basic"]),
        attr("uri-security-supported", Tag.KEYWORD, ["tls"]),
        attr("which-jobs-supported", Tag.KEYWORD, ["completed", "not-completed", "all"]),
        *_everywhere(caps, p, formats),
    ]
    result = {a.name: a for a in sorted(out, key=lambda a: a.name)}
    result.update(p.extra)
    return result


def _short(text: str, limit: int = 127) -> str:
    """Printer text attributes of 127 octets at most (RFC 8011 5.4.6 ff.)."""
    data = text.encode("utf-8")[:limit]
    return data.decode("utf-8", errors="ignore")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def select(attributes: dict[str, Attribute], requested: list[str] | None,
           groups: dict[str, frozenset[str] | None]) -> dict[str, Attribute]:
    """Filter by requested-attributes; ``groups`` maps group keywords to names (None: all)."""
    if not requested or "all" in requested:
        return attributes
    wanted: set[str] = set()
    everything = False
    for name in requested:
        if name in groups:
            names = groups[name]
            if names is None:
                everything = True
            else:
                wanted |= names
        else:
            wanted.add(name)
    if everything:
        return attributes
    return {k: v for k, v in attributes.items() if k in wanted}


def printer_groups(attributes: dict[str, Attribute]) -> dict[str, frozenset[str] | None]:
    template = frozenset(k for k in attributes if is_job_template(k))
    return {"all": None, "job-template": template,
            "printer-description": frozenset(attributes) - template}


# ---------------------------------------------------------------------------- tickets (front side)


@dataclass
class TicketParse:
    """Our ticket from Job Template attributes, and what could not be taken."""

    ticket: dict[str, Any] = field(default_factory=dict)
    #: Attributes (or values) not supported: for the unsupported-attributes group.
    unsupported: list[Attribute] = field(default_factory=list)
    #: job-hold-until=indefinite: the job is held until Release-Job.
    hold: bool = False


#: Attributes taken as-is when they ask for what happens anyway.
_NEUTRAL = {"output-bin": {"auto"}, "job-sheets": {"none"}, "job-hold-until": {"no-hold"},
            "multiple-document-handling": {"separate-documents-uncollated-copies",
                                           "separate-documents-collated-copies", "single-document"},
            "print-scaling": {"auto"}, "print-content-optimize": {"auto"},
            "print-rendering-intent": {"auto"}, "media-source": set(MEDIA_SOURCES),
            "media-type": set(MEDIA_TYPES)}
_INT_SINGLE = {"copies": Tag.INTEGER, "number-up": Tag.INTEGER, "print-quality": Tag.ENUM,
               "orientation-requested": Tag.ENUM}
_KEYWORD_SINGLE = {"sides", "print-color-mode"}


def ticket_from_job_attributes(group: Group | None) -> TicketParse:
    """Map a request's job-attributes group to our IPP-named ticket (syntax only).

    Whether the values are *supported* is decided by the caller against the service's
    capabilities (schemas.model.ticket), exactly as for the HTTP API.
    """
    out = TicketParse()
    if group is None:
        return out
    _parse_into(out, group.attributes)
    return out


def _parse_into(out: TicketParse, attributes: dict[str, Attribute], nested: bool = False) -> None:
    for name, attribute in attributes.items():
        tags = [attribute.value_tag(i) for i in range(len(attribute.values))]
        values = attribute.values
        one = len(values) == 1
        int_ok = name in _INT_SINGLE and tags[0] in (Tag.INTEGER, Tag.ENUM)
        keyword_ok = name in _KEYWORD_SINGLE and tags[0] == Tag.KEYWORD
        if one and (int_ok or keyword_ok):
            out.ticket[name] = values[0]
        elif name == "media" and one and tags[0] in (Tag.KEYWORD, Tag.NAME, Tag.NAME_LANG):
            out.ticket["media"] = simple(attribute)
        elif name == "media-col" and one and tags[0] == Tag.BEGIN_COLLECTION:
            media = _media_from_col(values[0])
            if media is None:
                out.unsupported.append(attribute)
            elif media:
                out.ticket.setdefault("media", media)
        elif name == "job-hold-until" and one and not nested and simple(attribute) in HOLD_UNTIL:
            out.hold = simple(attribute) == "indefinite"
        elif name == "job-priority" and one and tags[0] == Tag.INTEGER and 1 <= values[0] <= 100:
            continue  # one priority level (job-priority-supported=1): every value means the same
        elif name == "overrides" and not nested and all(t == Tag.BEGIN_COLLECTION for t in tags):
            for entry in values:
                if not _whole_job(entry):
                    out.unsupported.append(attribute)
                    break
            else:
                for entry in values:
                    _parse_into(out, {k: v for k, v in entry.items() if k not in OVERRIDE_SCOPE}, nested=True)
        elif name == "finishings" and all(t == Tag.ENUM for t in tags):
            out.ticket["finishings"] = [int(v) for v in values if int(v) != 3] or None
            if out.ticket["finishings"] is None:
                del out.ticket["finishings"]
        elif name == "page-ranges" and all(t == Tag.RANGE for t in tags):
            out.ticket["page-ranges"] = [[int(v[0]), int(v[1])] for v in values]
        elif name in _NEUTRAL and one and simple(attribute) in _NEUTRAL[name]:
            continue
        elif name == "document-name-supplied" and one:
            continue  # CUPS's spelling of document-name: the front takes it as the document's name
        else:
            out.unsupported.append(attribute)


def _whole_job(entry: dict[str, Attribute]) -> bool:
    """An ``overrides`` entry that applies to the whole job (its one document, every page).

    Such an entry is the same as job-level attributes, so it is honoured; one that picks some
    pages or copies of a document would need per-page tickets, which devices do not take.
    """
    if "pages" in entry or "document-copies" in entry:
        return False
    numbers = entry.get("document-numbers")
    return numbers is None or all(isinstance(v, Range) and v.lower <= 1 <= v.upper for v in numbers.values)


def _media_from_col(col: dict[str, Attribute]) -> str | None:
    """The media keyword a media-col asks for ("" for none), or None if it asks for what is not supported."""
    for key, allowed in (("media-source", MEDIA_SOURCES), ("media-type", MEDIA_TYPES)):
        if key in col and simple(col[key]) not in allowed:
            return None
    for side in ("bottom", "left", "right", "top"):
        margin = col.get(f"media-{side}-margin")
        if margin is not None and simple(margin) != NOMINAL_MARGIN:
            return None
    for key in ("media-size-name", "media-key"):
        member = col.get(key)
        if member is not None and member.values and isinstance(member.values[0], str):
            return member.values[0]
    size = col.get("media-size")
    if size is not None and size.values and isinstance(size.values[0], dict):
        dims = size.values[0]
        x = simple(dims.get("x-dimension"))
        y = simple(dims.get("y-dimension"))
        if isinstance(x, int) and isinstance(y, int):
            return media_for_size(x, y)
        return None
    return ""  # only source, type or margins, all as supported: nothing to change


#: PWG 5101.1 sizes by (width, height) in hundredths of millimetres.
_SIZES = {
    (21000, 29700): "iso_a4_210x297mm", (14800, 21000): "iso_a5_148x210mm", (29700, 42000): "iso_a3_297x420mm",
    (21590, 27940): "na_letter_8.5x11in", (21590, 35560): "na_legal_8.5x14in",
    (10160, 15240): "na_index-4x6_4x6in", (17600, 25000): "iso_b5_176x250mm",
}


def media_for_size(x: int, y: int) -> str | None:
    for (w, h), name in _SIZES.items():
        if abs(w - x) <= 100 and abs(h - y) <= 100:
            return name
    return None


# ---------------------------------------------------------------------------- the other way (driver side)


def ticket_to_job_attributes(ticket: dict[str, Any], supported: dict[str, Any] | None = None) -> list[Attribute]:
    """Our ticket as Job Template attributes for a Print-Job to a real printer."""
    out: list[Attribute] = []
    for name, tag in _INT_SINGLE.items():
        if ticket.get(name) is not None:
            out.append(attr(name, tag, int(ticket[name])))
    for name in ("sides", "print-color-mode", "media"):
        if ticket.get(name):
            out.append(attr(name, Tag.KEYWORD, ticket[name]))
    if ticket.get("finishings"):
        out.append(attr("finishings", Tag.ENUM, [int(v) for v in ticket["finishings"]]))
    if ticket.get("page-ranges"):
        out.append(attr("page-ranges", Tag.RANGE, [Range(int(a), int(b)) for a, b in ticket["page-ranges"]]))
    return out


def capabilities_from_printer(group: Group | None) -> PrintCapabilities:
    """A real printer's Get-Printer-Attributes answer as our capabilities.

    Values our schema cannot carry (names that are not keywords, non-enum finishings) are
    left out rather than failing the whole discovery.
    """
    g = group or Group(Tag.PRINTER)
    raw: dict[str, Any] = {}

    def values(name: str) -> list[Any]:
        found = g.get(name)
        if found is None:
            return []
        return [v for i, v in enumerate(found.values) if found.value_tag(i) not in range(0x10, 0x20)]

    def keywords(name: str) -> list[str]:
        return [v.text if hasattr(v, "text") else v for v in values(name)
                if isinstance(getattr(v, "text", v), str) and _KEYWORD.match(getattr(v, "text", v))]

    def ints(name: str) -> list[int]:
        out: list[int] = []
        for v in values(name):
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                out.append(v)
            elif isinstance(v, Range) and v.upper - v.lower < 64:
                out.extend(range(v.lower, v.upper + 1))
        return out

    copies = values("copies-supported")
    if copies and isinstance(copies[0], Range):
        raw["copies-supported"] = [max(1, copies[0].lower), max(1, copies[0].lower, copies[0].upper)]
    elif copies and isinstance(copies[0], int):
        raw["copies-supported"] = [1, max(1, copies[0])]
    for base in ("sides", "media", "print-color-mode"):
        supported = list(dict.fromkeys(keywords(f"{base}-supported")))
        if supported:
            raw[f"{base}-supported"] = supported
            default = keywords(f"{base}-default")
            raw[f"{base}-default"] = default[0] if default and default[0] in supported else supported[0]
    for base, low, high in (("print-quality", 3, 5), ("orientation-requested", 3, 7), ("number-up", 1, 64)):
        supported_ints = [v for v in dict.fromkeys(ints(f"{base}-supported")) if low <= v <= high]
        if supported_ints:
            raw[f"{base}-supported"] = supported_ints
            default_ints = ints(f"{base}-default")
            if base != "orientation-requested" or default_ints:
                raw[f"{base}-default"] = (default_ints[0] if default_ints and default_ints[0] in supported_ints
                                          else supported_ints[0])
    finishings = [v for v in dict.fromkeys(ints("finishings-supported")) if 3 <= v <= 255]
    if finishings:
        raw["finishings-supported"] = finishings
        default_f = [v for v in ints("finishings-default") if v in finishings]
        raw["finishings-default"] = default_f or [finishings[0]]
    ranges = values("page-ranges-supported")
    if ranges and isinstance(ranges[0], bool):
        raw["page-ranges-supported"] = ranges[0]
    formats = [v.lower() for v in values("document-format-supported") if isinstance(v, str) and _MIME.match(v.lower())]
    formats = list(dict.fromkeys(formats))
    if formats:
        raw["document-format-supported"] = formats
        default_fmt = [v.lower() for v in values("document-format-default") if isinstance(v, str)]
        raw["document-format-default"] = default_fmt[0] if default_fmt and default_fmt[0] in formats else formats[0]
    return PrintCapabilities.model_validate(raw)
