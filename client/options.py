"""Turn lp-style ``-o name=value`` options into an IPP-named print job ticket.

Values arrive as strings; each attribute gets the type the ticket schema wants (integers for
enums and counts, ``[[lower, upper], ...]`` for page-ranges), and the result goes through the
same shape check the service runs (``parse_print_ticket``), so a typo is refused before any
byte is uploaded, with the attribute named.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from schemas.model.ticket import TicketError, parse_print_ticket
from schemas.tickets import PrintJobTicket

#: IPP's largest integer: the upper bound of an open page range such as ``5-``.
MAX_PAGE = 2**31 - 1

# Enum attributes also accept their IPP keyword names, as lp users type them.
_PRINT_QUALITY = {"draft": 3, "normal": 4, "high": 5}
_ORIENTATION = {"portrait": 3, "landscape": 4, "reverse-landscape": 5, "reverse-portrait": 6, "none": 7}
_FINISHINGS = {
    "none": 3,
    "staple": 4,
    "punch": 5,
    "cover": 6,
    "bind": 7,
    "saddle-stitch": 8,
    "edge-stitch": 9,
    "fold": 10,
    "trim": 11,
    "bale": 12,
    "booklet-maker": 13,
    "jog-offset": 14,
    "coat": 15,
    "laminate": 16,
    "staple-top-left": 20,
    "staple-bottom-left": 21,
    "staple-top-right": 22,
    "staple-bottom-right": 23,
    "edge-stitch-left": 24,
    "edge-stitch-top": 25,
    "edge-stitch-right": 26,
    "edge-stitch-bottom": 27,
    "staple-dual-left": 28,
    "staple-dual-top": 29,
    "staple-dual-right": 30,
    "staple-dual-bottom": 31,
}
# The short media names CUPS users type, mapped to PWG 5101.1 self-describing names.
MEDIA_ALIASES = {
    "a3": "iso_a3_297x420mm",
    "a4": "iso_a4_210x297mm",
    "a5": "iso_a5_148x210mm",
    "b5": "iso_b5_176x250mm",
    "letter": "na_letter_8.5x11in",
    "legal": "na_legal_8.5x14in",
    "tabloid": "na_ledger_11x17in",
    "executive": "na_executive_7.25x10.5in",
}
# Bare words lp accepts without "=value".
_FLAGS = {
    "landscape": ("orientation-requested", "4"),
    "portrait": ("orientation-requested", "3"),
}


class OptionError(ValueError):
    """A ``-o`` option that cannot become a ticket attribute; ``attribute`` names it."""

    def __init__(self, attribute: str, message: str) -> None:
        super().__init__(message)
        self.attribute = attribute


def _integer(attribute: str, value: str, names: dict[str, int] | None = None) -> int:
    """An integer option; an enumerated one (``names``) takes only its IPP enum values, and the
    refusal lists them by name and number, as lp's users know them, not in pydantic's words."""
    key = value.strip().lower()
    if names and key in names:
        return names[key]
    known = f" or one of {', '.join(names)}" if names else ""
    try:
        number = int(key, 10)
    except ValueError:
        raise OptionError(attribute, f"{attribute}: expected an integer{known}, got {value!r}") from None
    if names and number not in names.values():
        choices = ", ".join(f"{name} ({code})" for name, code in names.items())
        raise OptionError(attribute, f"{attribute}: expected one of {choices}, got {value!r}")
    return number


#: pydantic's error types in the words of a command line (its ``ctx`` fills the blanks).
_PLAIN_WORDS = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "too_long": "must have at most {max_length} items",
}


def plain_message(attribute: str, error_type: str | None, context: dict[str, Any] | None, fallback: str) -> str:
    """``attribute: <why>`` without the validation library's phrasing, when we know the type."""
    template = _PLAIN_WORDS.get(error_type or "")
    if template is None:
        return fallback
    try:
        return f"{attribute}: {template.format(**(context or {}))}"
    except (KeyError, IndexError):
        return fallback


def parse_page_ranges(value: str, attribute: str = "page-ranges") -> list[list[int]]:
    """``"1-3,5"`` -> ``[[1, 3], [5, 5]]``; ``"7-"`` runs to the last page."""
    ranges: list[list[int]] = []
    for part in value.replace(" ", "").split(","):
        lower, dash, upper = part.partition("-")
        try:
            low = int(lower, 10)
            high = (int(upper, 10) if upper else MAX_PAGE) if dash else low
        except ValueError:
            raise OptionError(attribute, f"{attribute}: expected ranges such as 1-3,5, got {value!r}") from None
        ranges.append([low, high])
    return ranges


def _finishings(attribute: str, value: str) -> list[int]:
    return [_integer(attribute, item, _FINISHINGS) for item in value.split(",") if item.strip()]


def _media(attribute: str, value: str) -> str:
    return MEDIA_ALIASES.get(value.lower(), value)


_CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "copies": _integer,
    "number-up": _integer,
    "print-quality": lambda a, v: _integer(a, v, _PRINT_QUALITY),
    "orientation-requested": lambda a, v: _integer(a, v, _ORIENTATION),
    "finishings": _finishings,
    "page-ranges": lambda a, v: parse_page_ranges(v, a),
    "media": _media,
}


def split_options(options: Iterable[str]) -> list[tuple[str, str]]:
    """``-o`` arguments -> (name, value) pairs.

    Like lp, one ``-o`` may hold several space-separated options, with shell-style quotes
    for values containing spaces (``-o 'job-name="Q3 report" sides=one-sided'``).
    """
    pairs: list[tuple[str, str]] = []
    for option in options:
        try:
            words = shlex.split(option)
        except ValueError as exc:
            raise OptionError("ticket", f"cannot parse option {option!r}: {exc}") from None
        for word in words:
            name, sep, value = word.partition("=")
            name = name.strip().lower()
            if not sep:
                if name in _FLAGS:
                    pairs.append(_FLAGS[name])
                    continue
                raise OptionError(
                    name or "ticket",
                    f"option {word!r} is not name=value (quote values with spaces: -o 'name=\"a b\"')",
                )
            if not name:
                raise OptionError("ticket", f"option {word!r} has no attribute name")
            pairs.append((name, value))
    return pairs


def _pydantic_reason(raw: dict[str, Any], attribute: str) -> tuple[str | None, dict[str, Any] | None]:
    """The validation error type and context of ``attribute`` in ``raw``, for :func:`plain_message`."""
    try:
        PrintJobTicket.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            if error["loc"] and str(error["loc"][0]) == attribute:
                return error["type"], dict(error.get("ctx") or {})
    return None, None


def build_ticket(
    options: Iterable[str] = (),
    *,
    copies: int | None = None,
    title: str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The IPP-named print ticket for ``-o`` options, ``-n`` and ``-t``.

    Returns ``(ticket, document_format)``: ``-o document-format=...`` is lifted out of the
    ticket because the API carries the format beside it. Raises :class:`OptionError`.
    """
    raw: dict[str, Any] = {}
    given: dict[str, str] = {}
    document_format: str | None = None
    for name, value in split_options(options):
        if name == "document-format":
            document_format = value.strip().lower()
            continue
        converter = _CONVERTERS.get(name)
        raw[name] = converter(name, value) if converter else value
        given[name] = value
    if copies is not None:
        raw["copies"] = copies
    if title is not None:
        raw["job-name"] = title
    try:
        ticket = parse_print_ticket(raw)
    except TicketError as exc:
        problem = exc.first
        error_type, context = _pydantic_reason(raw, problem.attribute)
        message = plain_message(problem.attribute, error_type, context, problem.message.replace("Value error, ", ""))
        if problem.attribute in given and "unknown" not in message:
            message = f"{message} (got {given[problem.attribute]!r})"
        raise OptionError(problem.attribute, message) from None
    return ticket.wire(), document_format
