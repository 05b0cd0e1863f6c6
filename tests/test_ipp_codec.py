"""The RFC 8010 codec and the attribute mapping, without a network."""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.ipp import attributes as ia
from schemas.ipp.codec import (
    Attribute,
    Group,
    IppIncomplete,
    IppParseError,
    LangString,
    Message,
    Op,
    Range,
    Resolution,
    Status,
    Tag,
    collection,
    decode,
    encode,
    request,
    simple,
)
from schemas.tickets import PrintCapabilities


def roundtrip(message: Message) -> Message:
    data = encode(message)
    decoded, offset = decode(data + b"DOCUMENT")
    assert data[offset - 1] == Tag.END and (data + b"DOCUMENT")[offset:] == b"DOCUMENT"
    return decoded


def test_known_bytes() -> None:
    """A Get-Printer-Attributes request, byte for byte as RFC 8010 appendix A lays it out."""
    msg = request(Op.GET_PRINTER_ATTRIBUTES, request_id=7, version=(1, 1))
    msg.operation().add("printer-uri", Tag.URI, "ipp://h/p")
    expected = (b"\x01\x01\x00\x0b\x00\x00\x00\x07\x01"
                b"\x47\x00\x12attributes-charset\x00\x05utf-8"
                b"\x48\x00\x1battributes-natural-language\x00\x02en"
                b"\x45\x00\x0bprinter-uri\x00\x09ipp://h/p"
                b"\x03")
    assert encode(msg) == expected


def test_every_syntax_roundtrips() -> None:
    msg = Message((2, 0), Status.OK, 42)
    group = msg.new_group(Tag.PRINTER)
    group.add("an-int", Tag.INTEGER, -5)
    group.add("enums", Tag.ENUM, [3, 4, 5])
    group.add("flag", Tag.BOOLEAN, True)
    group.add("range", Tag.RANGE, Range(1, 99))
    group.add("res", Tag.RESOLUTION, Resolution(600, 300, 3))
    group.add("when", Tag.DATETIME, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    group.add("text-lang", Tag.TEXT_LANG, LangString("grüße", "de"))
    group.add("name", Tag.NAME, "Jöb")
    group.add("octets", Tag.OCTET_STRING, b"\x00\xff")
    group.add("nothing", Tag.NO_VALUE, None)
    group.add("col", Tag.BEGIN_COLLECTION, [
        collection(media_size=(Tag.BEGIN_COLLECTION, collection(x_dimension=(Tag.INTEGER, 21000),
                                                                  y_dimension=(Tag.INTEGER, 29700))),
                   media_source=(Tag.KEYWORD, "main")),
        collection(media_key=(Tag.KEYWORD, ["a", "b"])),
    ])
    mixed = Attribute("mixed", Tag.KEYWORD, ["one-sided", "custom"], tags=[Tag.KEYWORD, Tag.NAME])
    group.attributes["mixed"] = mixed
    back = roundtrip(msg)
    assert back.version == (2, 0) and back.code == 0 and back.request_id == 42
    got = back.group(Tag.PRINTER)
    assert got is not None
    assert simple(got.get("an-int")) == -5
    assert simple(got.get("enums")) == [3, 4, 5]
    assert simple(got.get("flag")) is True
    assert got.get("range").value == Range(1, 99)
    assert got.get("res").value == Resolution(600, 300, 3)
    assert got.get("when").value == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert got.get("text-lang").value == LangString("grüße", "de")
    assert simple(got.get("name")) == "Jöb"
    assert got.get("octets").value == b"\x00\xff"
    assert got.get("nothing").value is None and got.get("nothing").tag == Tag.NO_VALUE
    cols = simple(got.get("col"))
    assert cols[0] == {"media-size": {"x-dimension": 21000, "y-dimension": 29700}, "media-source": "main"}
    assert cols[1] == {"media-key": ["a", "b"]}
    assert got.get("mixed").tags == [Tag.KEYWORD, Tag.NAME]
    assert encode(back) == encode(msg)


def test_incomplete_and_malformed() -> None:
    data = encode(request(Op.GET_JOBS))
    for cut in range(len(data)):
        with pytest.raises(IppIncomplete):
            decode(data[:cut])
    with pytest.raises(IppParseError):
        decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01\x47\x00\x01x\x00\x01y\x03")  # attribute before any group
    with pytest.raises(IppParseError):  # an integer with 3 octets
        decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01\x01\x21\x00\x01x\x00\x03abc\x03")
    with pytest.raises(IppParseError):  # an additional value with nothing before it
        decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01\x01\x21\x00\x00\x00\x04abcd\x03")
    with pytest.raises(IppParseError):  # the same attribute twice in a group
        twice = b"\x21\x00\x01x\x00\x04\x00\x00\x00\x01" * 2
        decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01\x01" + twice + b"\x03")
    deep = b"".join(b"\x34\x00\x00\x00\x00\x4a\x00\x00\x00\x01m" for _ in range(12))
    with pytest.raises(IppParseError):
        decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01\x04\x34\x00\x01c\x00\x00\x4a\x00\x00\x00\x01m" + deep + b"\x03")


@given(st.binary(max_size=300))
def test_decode_never_crashes(data: bytes) -> None:
    """Arbitrary bytes give a message or a parse error, nothing else."""
    with contextlib.suppress(IppParseError):
        decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01" + data)


@given(st.lists(st.tuples(st.sampled_from(["a", "b-c", "d.e"]), st.integers(-2**31, 2**31 - 1),
                          st.text(max_size=40)), max_size=8))
def test_roundtrip_property(items: list[tuple[str, int, str]]) -> None:
    msg = Message((1, 1), Op.PRINT_JOB, 3)
    group = msg.new_group(Tag.JOB)
    for index, (name, number, text) in enumerate(items):
        group.add(f"{name}-{index}-i", Tag.INTEGER, number)
        group.add(f"{name}-{index}-t", Tag.TEXT, text)
    assert encode(roundtrip(msg)) == encode(msg)


def test_status_keywords() -> None:
    assert Status.CLIENT_ERROR_NOT_POSSIBLE.keyword == "client-error-not-possible"
    assert Status.OK_IGNORED_OR_SUBSTITUTED.successful and not Status.CLIENT_ERROR_BAD_REQUEST.successful
    assert struct.pack(">H", Op.IDENTIFY_PRINTER) == b"\x00\x3c"


# ---------------------------------------------------------------------------- mapping


CAPS = PrintCapabilities.model_validate({
    "copies-supported": [1, 50], "sides-supported": ["one-sided", "two-sided-long-edge"],
    "media-supported": ["iso_a4_210x297mm", "na_letter_8.5x11in"],
    "print-color-mode-supported": ["monochrome", "color"],
    "print-quality-supported": [3, 4, 5], "page-ranges-supported": True, "number-up-supported": [1, 2],
    "document-format-supported": ["application/pdf", "image/jpeg"],
})


def info() -> ia.PrinterInfo:
    return ia.PrinterInfo(name="office", uri="ipps://h:1/ipp/print/office", more_info="https://h:1/x",
                          uuid="urn:uuid:00000000-0000-0000-0000-000000000000", state_enum=3, state_reasons=[])


def test_printer_attributes_cover_pwg_5100_12() -> None:
    attrs = ia.printer_attributes(CAPS, info(), 1_800_000_000, [int(Op.PRINT_JOB), int(Op.GET_JOBS)])
    required = ["charset-configured", "charset-supported", "compression-supported", "copies-default",
                "copies-supported",
                "document-format-default", "document-format-supported", "finishings-default", "finishings-supported",
                "generated-natural-language-supported", "ipp-versions-supported", "media-default", "media-supported",
                "natural-language-configured", "operations-supported", "orientation-requested-default",
                "orientation-requested-supported", "output-bin-default", "output-bin-supported", "pages-per-minute",
                "pages-per-minute-color", "pdl-override-supported", "print-quality-default", "print-quality-supported",
                "printer-info", "printer-is-accepting-jobs", "printer-location", "printer-make-and-model",
                "printer-more-info", "printer-name", "printer-resolution-default", "printer-resolution-supported",
                "printer-state", "printer-state-reasons", "printer-up-time", "printer-uri-supported",
                "queued-job-count",
                "sides-default", "sides-supported", "uri-authentication-supported", "uri-security-supported"]
    assert [n for n in required if n not in attrs] == []
    assert attrs["copies-supported"].value == Range(1, 50) and attrs["copies-supported"].tag == Tag.RANGE
    assert attrs["color-supported"].value is True
    assert attrs["printer-state-reasons"].values == ["none"]
    selected = ia.select(attrs, ["job-template"], ia.printer_groups(attrs))
    assert "sides-supported" in selected and "printer-name" not in selected
    assert set(ia.select(attrs, ["printer-name", "printer-description"], ia.printer_groups(attrs))) >= {"printer-name",
                                                                                                        "printer-state"}


def test_ticket_from_job_attributes() -> None:
    group = Group(Tag.JOB)
    group.add("copies", Tag.INTEGER, 2)
    group.add("sides", Tag.KEYWORD, "two-sided-long-edge")
    group.add("print-quality", Tag.ENUM, 5)
    group.add("page-ranges", Tag.RANGE, [Range(1, 2), Range(4, 4)])
    group.add("finishings", Tag.ENUM, [3])
    group.add("media-col", Tag.BEGIN_COLLECTION,
              collection(media_size=(Tag.BEGIN_COLLECTION, collection(x_dimension=(Tag.INTEGER, 21590),
                                                                        y_dimension=(Tag.INTEGER, 27940)))))
    group.add("output-bin", Tag.KEYWORD, "auto")
    group.add("job-priority", Tag.INTEGER, 101)  # 1..100 only
    group.add("sides-bogus", Tag.KEYWORD, "x")
    parsed = ia.ticket_from_job_attributes(group)
    assert parsed.ticket == {"copies": 2, "sides": "two-sided-long-edge", "print-quality": 5,
                             "page-ranges": [[1, 2], [4, 4]], "media": "na_letter_8.5x11in"}
    assert [a.name for a in parsed.unsupported] == ["job-priority", "sides-bogus"]
    # and back to attributes for a real printer
    back = {a.name: a for a in ia.ticket_to_job_attributes(parsed.ticket)}
    assert back["page-ranges"].values == [Range(1, 2), Range(4, 4)] and back["print-quality"].tag == Tag.ENUM


def test_capabilities_from_printer() -> None:
    """What an IPP Everywhere printer reports becomes PrintCapabilities (unusable values dropped)."""
    group = Group(Tag.PRINTER)
    group.add("copies-supported", Tag.RANGE, Range(1, 999))
    group.add("media-supported", Tag.KEYWORD, ["na_letter_8.5x11in", "iso_a4_210x297mm"])
    group.attributes["media-supported"].values.append("Custom Name")
    group.attributes["media-supported"].tags = [Tag.KEYWORD, Tag.KEYWORD, Tag.NAME]
    group.add("media-default", Tag.KEYWORD, "iso_a4_210x297mm")
    group.add("sides-supported", Tag.KEYWORD, ["one-sided"])
    group.add("print-quality-supported", Tag.ENUM, [3, 4, 5])
    group.add("print-quality-default", Tag.ENUM, 4)
    group.add("finishings-supported", Tag.ENUM, [3])
    group.add("number-up-supported", Tag.RANGE, Range(1, 4))
    group.add("page-ranges-supported", Tag.BOOLEAN, True)
    group.add("document-format-supported", Tag.MIME_TYPE, ["application/octet-stream", "application/pdf"])
    group.add("document-format-default", Tag.MIME_TYPE, "application/octet-stream")
    group.add("print-color-mode-supported", Tag.KEYWORD, ["monochrome"])
    caps = ia.capabilities_from_printer(group)
    assert caps.copies_supported == (1, 999)
    assert caps.media_supported == ["na_letter_8.5x11in", "iso_a4_210x297mm"]
    assert caps.media_default == "iso_a4_210x297mm"
    assert caps.number_up_supported == [1, 2, 3, 4]
    assert caps.page_ranges_supported is True
    assert caps.document_format_default == "application/octet-stream"
    assert caps.print_color_mode_default == "monochrome"
    assert ia.capabilities_from_printer(None) == PrintCapabilities()
