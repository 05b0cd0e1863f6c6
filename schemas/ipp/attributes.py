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

from schemas.ipp.codec import Attribute, Group, Range, Resolution, Tag, simple
from schemas.tickets import PrintCapabilities

#: Nominal values for attributes PWG 5100.12 requires but our capabilities do not carry;
#: the cloud never rasterises, so these only let clients build their print dialog.
NOMINAL_PAGES_PER_MINUTE = 10
NOMINAL_RESOLUTION = Resolution(600, 600, 3)
IPP_VERSIONS = ("1.1", "2.0")

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
    extra: dict[str, Attribute] = field(default_factory=dict)


def printer_attributes(caps: PrintCapabilities, p: PrinterInfo, up_time: int,
                       operations: list[int]) -> dict[str, Attribute]:
    """All printer attributes of a service, in a stable order."""
    color = "color" in caps.print_color_mode_supported
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
        attr("document-format-default", Tag.MIME_TYPE, caps.document_format_default),
        attr("document-format-supported", Tag.MIME_TYPE, list(caps.document_format_supported)),
        attr("generated-natural-language-supported", Tag.LANGUAGE, ["en"]),
        attr("identify-actions-default", Tag.KEYWORD, ["display"]),
        attr("identify-actions-supported", Tag.KEYWORD, ["display", "flash", "sound", "speak"]),
        attr("ipp-versions-supported", Tag.KEYWORD, list(IPP_VERSIONS)),
        attr("job-creation-attributes-supported", Tag.KEYWORD,
             ["copies", "finishings", "media", "media-col", "number-up", "orientation-requested",
              *(["page-ranges"] if caps.page_ranges_supported else []), "print-color-mode", "print-quality",
              "sides", "ipp-attribute-fidelity", "job-name", "document-format", "document-name"]),
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
    ]
    result = {a.name: a for a in out}
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


#: Attributes taken as-is when they ask for what happens anyway.
_NEUTRAL = {"output-bin": {"auto"}, "job-sheets": {"none"}, "job-hold-until": {"no-hold"},
            "multiple-document-handling": {"separate-documents-uncollated-copies",
                                           "separate-documents-collated-copies", "single-document"},
            "print-scaling": {"auto"}, "print-content-optimize": {"auto"},
            "print-rendering-intent": {"auto"}}
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
    for name, attribute in group.attributes.items():
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
            else:
                out.ticket.setdefault("media", media)
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
    return out


def _media_from_col(col: dict[str, Attribute]) -> str | None:
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
