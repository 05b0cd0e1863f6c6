"""Scan tickets against capabilities (pure core), property-tested, and the scan wire contract."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import (
    Attributes,
    DocumentStatus,
    PrintServiceAttributes,
    Reply,
    RequestUpload,
    ScanServiceAttributes,
    UploadAccess,
    decode_down,
    decode_up,
    encode,
)
from schemas.model.scan import parse_scan_ticket, validate_scan_ticket
from schemas.model.ticket import TicketError
from schemas.tickets import SCAN_MEDIA_SIZES, PrintJobTicket, ScanCapabilities, ScanJobTicket

CAPS = ScanCapabilities(input_source_supported=["platen", "adf"],
                        input_sides_supported=["one-sided", "two-sided-long-edge"],
                        input_resolution_supported=[75, 150, 300],
                        input_media_supported=["iso_a4_210x297mm", "na_letter_8.5x11in"])

tickets = st.builds(
    dict,
    **{"input-source": st.sampled_from(["platen", "adf", "film-reader"]),
       "input-sides": st.sampled_from(["one-sided", "two-sided-long-edge", "two-sided-short-edge"]),
       "input-resolution": st.sampled_from([75, 150, 300, 600, 1200]),
       "input-color-mode": st.sampled_from(["color", "monochrome", "bi-level", "auto"]),
       "input-media": st.sampled_from([*SCAN_MEDIA_SIZES, "iso_a3_297x420mm"]),
       "document-format": st.sampled_from(["application/pdf", "image/jpeg", "image/png", "image/tiff"])},
).flatmap(lambda full: st.sets(st.sampled_from(sorted(full))).map(lambda keep: {k: full[k] for k in keep}))


@settings(max_examples=300, deadline=None)
@given(tickets)
def test_accepted_tickets_are_within_capabilities(raw: dict) -> None:
    """Either the ticket is refused naming a set attribute, or every value is supported and
    the settings honour it (defaults for what is absent)."""
    ticket = parse_scan_ticket(raw)
    try:
        result = validate_scan_ticket(ticket, CAPS)
    except TicketError as exc:
        assert exc.first.attribute in raw
        return
    assert result.input_source in CAPS.input_source_supported
    assert result.resolution == raw.get("input-resolution", CAPS.input_resolution_default)
    assert result.color_mode in CAPS.input_color_mode_supported
    assert not (result.color_mode == "bi-level" and result.document_format == "image/jpeg")
    assert result.media in CAPS.input_media_supported
    if result.duplex:
        assert result.input_source == "adf"
    width, height = SCAN_MEDIA_SIZES[result.media]
    pixels = result.pixels
    assert abs(pixels[0] - width * result.resolution / 2540) <= 1
    assert abs(pixels[1] - height * result.resolution / 2540) <= 1


@given(st.integers(0, 20000), st.integers(0, 29000), st.integers(1, 21000), st.integers(1, 29700))
def test_regions_must_fit_the_media(x: int, y: int, w: int, h: int) -> None:
    ticket = parse_scan_ticket({"input-scan-regions": [{"x-origin": x, "y-origin": y,
                                                        "x-dimension": w, "y-dimension": h}]})
    fits = x + w <= 21000 and y + h <= 29700
    try:
        result = validate_scan_ticket(ticket, CAPS)
    except TicketError as exc:
        assert not fits and exc.first.attribute == "input-scan-regions"
    else:
        assert fits and result.region == (x, y, w, h)


def test_unknown_and_print_attributes_are_named() -> None:
    with pytest.raises(TicketError) as info:
        parse_scan_ticket({"copies": 2})
    assert info.value.first.attribute == "copies" and "unknown scan" in str(info.value)


def test_capability_defaults_must_be_supported() -> None:
    with pytest.raises(ValueError, match="input-resolution-default"):
        ScanCapabilities(input_resolution_supported=[100], input_resolution_default=300)
    with pytest.raises(ValueError, match="unknown size"):
        ScanCapabilities(input_media_supported=["iso_a9_37x52mm"], input_media_default="iso_a9_37x52mm")


def test_scan_wire_contract_round_trips() -> None:
    attrs = Attributes(services=[PrintServiceAttributes(name="p"), ScanServiceAttributes(name="s", capabilities=CAPS)])
    decoded = decode_up(encode(attrs))
    assert isinstance(decoded.services[1], ScanServiceAttributes) and decoded.services[1].capabilities == CAPS
    upload = RequestUpload(job_id=3, document_number=2, document_format="image/png")
    assert decode_up(encode(upload)) == upload
    status = DocumentStatus(job_id=3, document_number=2, version=5, state="completed", size=10, sha256="a" * 64)
    assert decode_up(encode(status)) == status
    reply = Reply(ok=True, code="ok", kind="scan", ticket=ScanJobTicket(input_resolution=150),
                  uploads=[UploadAccess(document_number=2, url="https://x/o", expires_at=1.0,
                                        document_format="image/png")])
    back = decode_down(encode(reply))
    assert isinstance(back.ticket, ScanJobTicket) and back.uploads == reply.uploads
    # A reply without kind is a print reply, as before scan existed.
    raw = msgpack.unpackb(encode(Reply(ok=True, code="ok", ticket=PrintJobTicket(copies=2))))
    assert "kind" not in raw and isinstance(decode_down(msgpack.packb(raw)).ticket, PrintJobTicket)
    # An attributes entry without kind (older Managers) is a print service.
    raw = msgpack.unpackb(encode(Attributes(services=[PrintServiceAttributes(name="p")])))
    del raw["services"][0]["kind"]
    assert isinstance(decode_up(msgpack.packb(raw)).services[0], PrintServiceAttributes)
