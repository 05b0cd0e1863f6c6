"""Ticket validation against capabilities: refusals name the attribute and what is supported."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.enums import DocumentState, ServiceState
from schemas.model.document import InvalidDocumentTransition, document_transition
from schemas.model.service import ServiceStatus, effective_status
from schemas.model.ticket import TicketError, parse_print_ticket, validate_print_ticket
from schemas.tickets import PrintCapabilities

CAPS = PrintCapabilities.model_validate({
    "copies-supported": [1, 50],
    "sides-supported": ["one-sided", "two-sided-long-edge"],
    "media-supported": ["iso_a4_210x297mm", "na_letter_8.5x11in"],
    "print-color-mode-supported": ["monochrome", "color"],
    "document-format-supported": ["application/pdf", "text/plain"],
    "page-ranges-supported": True,
    "finishings-supported": [3, 4],
})


def check(raw: dict, fmt: str | None = None) -> None:
    validate_print_ticket(parse_print_ticket(raw), CAPS, fmt)


def test_supported_ticket_passes() -> None:
    check({"copies": 2, "sides": "two-sided-long-edge", "media": "na_letter_8.5x11in",
           "print-color-mode": "color", "page-ranges": [[1, 3], [5, 5]], "finishings": [4]}, "application/pdf")


@pytest.mark.parametrize(("raw", "attribute"), [
    ({"sides": "two-sided-short-edge"}, "sides"),
    ({"copies": 51}, "copies"),
    ({"media": "iso_a3_297x420mm"}, "media"),
    ({"print-color-mode": "highlight"}, "print-color-mode"),
    ({"finishings": [4, 5]}, "finishings"),
    ({"number-up": 2}, "number-up"),
])
def test_unsupported_value_names_attribute(raw: dict, attribute: str) -> None:
    with pytest.raises(TicketError) as info:
        check(raw)
    assert info.value.first.attribute == attribute
    assert info.value.first.supported is not None
    assert attribute in str(info.value)


def test_unsupported_document_format() -> None:
    with pytest.raises(TicketError) as info:
        check({}, "image/png")
    assert info.value.first.attribute == "document-format"


@pytest.mark.parametrize(("raw", "attribute"), [
    ({"sidez": "one-sided"}, "sidez"),
    ({"copies": 0}, "copies"),
    ({"copies": "many"}, "copies"),
    ({"sides": "Two Sided"}, "sides"),
    ({"job-name": "bad\x07name"}, "job-name"),
    ({"job-name": "line\u2028break"}, "job-name"),
    ({"page-ranges": [[3, 1]]}, "page-ranges"),
    ({"page-ranges": [[1, 5], [4, 6]]}, "page-ranges"),
    ({"document-format": "pdf"}, "document-format"),
])
def test_shape_errors_name_attribute(raw: dict, attribute: str) -> None:
    with pytest.raises(TicketError) as info:
        parse_print_ticket(raw)
    assert info.value.first.attribute == attribute


def test_page_ranges_unsupported_by_default() -> None:
    with pytest.raises(TicketError):
        validate_print_ticket(parse_print_ticket({"page-ranges": [[1, 2]]}), PrintCapabilities())


def test_capabilities_defaults_must_be_supported() -> None:
    with pytest.raises(ValueError, match="sides-default"):
        PrintCapabilities.model_validate({"sides-supported": ["one-sided"], "sides-default": "two-sided-long-edge"})


@settings(max_examples=200, deadline=None)
@given(copies=st.integers(1, 9999), sides=st.sampled_from(["one-sided", "two-sided-long-edge",
                                                           "two-sided-short-edge"]))
def test_validation_agrees_with_capabilities(copies: int, sides: str) -> None:
    ok = copies <= 50 and sides in CAPS.sides_supported
    try:
        check({"copies": copies, "sides": sides})
        assert ok
    except TicketError:
        assert not ok


def test_document_transitions() -> None:
    assert document_transition(DocumentState.PENDING, DocumentState.PROCESSING) is DocumentState.PROCESSING
    with pytest.raises(InvalidDocumentTransition):
        document_transition(DocumentState.COMPLETED, DocumentState.PROCESSING)
    with pytest.raises(InvalidDocumentTransition):
        document_transition(DocumentState.PROCESSING, DocumentState.PENDING)


def test_offline_service_is_stopped_never_idle() -> None:
    reported = ServiceStatus(ServiceState.IDLE, ("none",))
    seen = effective_status(reported, online=False)
    assert seen.state is ServiceState.STOPPED and seen.reasons[0] == "offline-report"
    assert effective_status(reported, online=True).state is ServiceState.IDLE
