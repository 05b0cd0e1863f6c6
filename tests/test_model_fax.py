"""FaxOut tickets, the retry policy and the job outcome (pure core), property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.enums import JobState
from schemas.messages import JobStatus, decode_up, encode
from schemas.model.fax import RETRYABLE, job_outcome, parse_fax_ticket, should_retry, validate_fax_ticket
from schemas.model.ticket import TicketError
from schemas.tickets import DestinationStatus, FaxOutCapabilities

CAPS = FaxOutCapabilities(destination_uris_max=3)

good_numbers = st.from_regex(r"\Atel:\+[1-9][0-9]{6,14}\Z")
bad_uris = st.one_of(st.from_regex(r"\A(mailto|sip|http):[a-z0-9@.]{1,20}\Z"),
                     st.from_regex(r"\Atel:[a-z]{2,10}\Z"), st.just("tel:"), st.just("+15551234567"))


@settings(max_examples=200, deadline=None)
@given(st.lists(good_numbers, min_size=1, max_size=5))
def test_tel_destinations_up_to_the_limit(numbers: list[str]) -> None:
    ticket = parse_fax_ticket({"destination-uris": [{"destination-uri": n} for n in numbers]})
    try:
        result = validate_fax_ticket(ticket, CAPS)
    except TicketError as exc:
        assert exc.first.attribute == "destination-uris"
        assert len(numbers) > 3 or len(set(numbers)) < len(numbers)
    else:
        assert result.destinations == tuple(numbers) and result.resolution == (204, 98)


@given(bad_uris)
def test_anything_but_a_tel_uri_is_refused(uri: str) -> None:
    with pytest.raises(TicketError) as info:
        validate_fax_ticket(parse_fax_ticket({"destination-uris": [{"destination-uri": uri}]}), CAPS)
    assert info.value.first.attribute == "destination-uris"


def test_single_destination_services() -> None:
    caps = FaxOutCapabilities(multiple_destination_uris_supported=False)
    ticket = parse_fax_ticket({"destination-uris": [{"destination-uri": "tel:+1555000001"},
                                                    {"destination-uri": "tel:+1555000002"}]})
    with pytest.raises(TicketError, match="at most 1"):
        validate_fax_ticket(ticket, caps)


@given(st.sampled_from(["completed", "busy", "no-answer", "failed"]), st.integers(1, 12), st.integers(0, 10))
def test_retry_policy(outcome: str, attempts: int, retries: int) -> None:
    """Only busy and no-answer are retried, and a destination is dialled at most retries+1 times."""
    again = should_retry(outcome, attempts, retries)
    assert again == (outcome in RETRYABLE and attempts < retries + 1)


statuses = st.lists(st.builds(DestinationStatus, destination_uri=good_numbers,
                              transmission_status=st.sampled_from(["completed", "aborted", "canceled"])),
                    min_size=1, max_size=6)


@given(statuses)
def test_job_outcome(items: list[DestinationStatus]) -> None:
    state, reasons, _ = job_outcome(items)
    done = [s.transmission_status for s in items]
    if "canceled" in done:
        assert state is JobState.CANCELED
    elif all(d == "completed" for d in done):
        assert state is JobState.COMPLETED and reasons == ("job-completed-successfully",)
    elif "completed" in done:
        assert state is JobState.COMPLETED and reasons == ("job-completed-with-errors",)
    else:
        assert state is JobState.ABORTED


def test_destination_statuses_on_the_wire() -> None:
    status = DestinationStatus(destination_uri="tel:+1555", images_completed=2, transmission_status="completed")
    message = JobStatus(job_id=1, version=2, state="processing", destination_statuses=[status])
    assert decode_up(encode(message)) == message
    assert status.wire() == {"destination-uri": "tel:+1555", "images-completed": 2,
                             "transmission-status": "completed", "transmission-status-reasons": [], "attempts": 0}
