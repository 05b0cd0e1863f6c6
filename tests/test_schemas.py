"""The wire codec: round trips, size limits and every kind of bad input is refused by code."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import topics
from schemas.messages import (
    MAX_MESSAGE_BYTES,
    AcknowledgeJob,
    Attributes,
    HeldJob,
    Hello,
    JobStatus,
    PrintServiceAttributes,
    ProtocolError,
    Reply,
    Sync,
    decode_down,
    decode_up,
    encode,
)
from schemas.tickets import PrintJobTicket


def test_round_trip_up_and_down() -> None:
    hello = Hello(software="t/1", jobs=[HeldJob(job_id=3, version=4, state="processing")])
    assert decode_up(encode(hello)) == hello
    attrs = Attributes(services=[PrintServiceAttributes(name="p1", state_reasons=["media-empty"])])
    assert decode_up(encode(attrs)) == attrs
    reply = Reply(re=hello.id, ok=True, code="ok", ticket=PrintJobTicket(copies=2, sides="one-sided"))
    decoded = decode_down(encode(reply))
    assert decoded.ticket == reply.ticket and decoded.re == hello.id
    assert decode_down(encode(Sync(fetchable=[1, 2]))).fetchable == [1, 2]


def test_ticket_uses_ipp_names_on_the_wire() -> None:
    raw = msgpack.unpackb(encode(Reply(ok=True, code="ok", ticket=PrintJobTicket(print_color_mode="color"))))
    assert raw["ticket"] == {"print-color-mode": "color"}


def bad(payload: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_up(payload)
    return info.value


def test_malformed_msgpack() -> None:
    assert bad(b"\xc1\xff\x00").code == "malformed"
    assert bad(msgpack.packb([1, 2, 3])).code == "malformed"


def test_unknown_type_keeps_request_id() -> None:
    err = bad(msgpack.packb({"v": 1, "type": "format-disk", "id": "abc"}))
    assert err.code == "unknown-type" and err.request_id == "abc"


def test_wrong_version() -> None:
    assert bad(msgpack.packb({"v": 2, "type": "bye"})).code == "unsupported-version"


def test_oversize_refused_unread() -> None:
    assert bad(b"\x00" * (MAX_MESSAGE_BYTES + 1)).code == "too-large"
    with pytest.raises(ProtocolError):
        encode(Hello(software="x" * 200, jobs=[HeldJob(job_id=i + 1, version=0, state="pending")
                                               for i in range(2000)]))


def test_invalid_utf8_and_control_characters() -> None:
    raw = msgpack.packb({"v": 1, "type": "job-status", "id": "a1", "job_id": 1, "version": 0,
                         "state": "processing", "message": "x"})
    assert bad(raw.replace(b"\xa1x", b"\xa1\xff")).code == "malformed"
    err = bad(msgpack.packb({"v": 1, "type": "job-status", "id": "a2", "job_id": 1, "version": 0,
                             "state": "processing", "message": "evil\x1b[2J"}))
    assert err.code == "bad-request" and "message" in err.message


def test_extra_fields_and_bad_values_refused() -> None:
    base = {"v": 1, "type": "acknowledge-job", "id": "a3", "job_id": 1, "version": 0, "accept": True}
    assert isinstance(decode_up(msgpack.packb(base)), AcknowledgeJob)
    assert bad(msgpack.packb({**base, "admin": True})).code == "bad-request"
    assert bad(msgpack.packb({**base, "job_id": -1})).code == "bad-request"
    assert bad(msgpack.packb({**base, "id": "x" * 100})).code == "bad-request"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_up(data)


KEYS = ["v", "type", "id", "job_id", "version", "state", "accept", "jobs"]
VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.booleans(), st.none())


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_arbitrary_maps_never_crash(obj: dict) -> None:
    with contextlib.suppress(ProtocolError):
        decode_up(msgpack.packb(obj))


def test_topics_and_acl_rules() -> None:
    assert topics.parse("ci/v1/dev/printer-1/up") == ("printer-1", "up")
    assert topics.parse("ci/v1/dev/Printer/up") is None
    assert topics.parse("ci/v1/dev/a/b/up") is None
    assert topics.device_may_publish("a", topics.up("a"))
    assert not topics.device_may_publish("a", topics.up("b"))
    assert not topics.device_may_publish("a", topics.down("a"))
    assert topics.device_may_subscribe("a", topics.down("a"))
    assert not topics.device_may_subscribe("a", "ci/v1/dev/+/down")
    assert not topics.valid_device_id(topics.SERVICE_USERNAME)


def test_job_status_requires_state() -> None:
    with pytest.raises(ProtocolError):
        decode_up(msgpack.packb({"v": 1, "type": "job-status", "job_id": 1, "version": 0}))
    assert JobStatus(job_id=1, version=0, state="completed").state == "completed"
