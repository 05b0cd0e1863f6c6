"""Device identity: registration, one-time enrollment codes, mTLS at the broker, confinement,
revocation and re-enrollment, on the embedded broker and on Mosquitto.

What is proved here (docs/security.md lists it with the rest):
- only an owner or admin registers a device; codes are one-time, expire, and die when a newer
  code is issued; a bad CSR is refused;
- an enrolled device logs in by its certificate and is confined to its own topics;
- revoking disconnects it at once, refuses it afterwards, ends its unfinished jobs with a
  reason; re-enrolling restores it under the same identity with its shares;
- a password device's revocation removes its password and closes its connection too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.credentials import CredentialStore
from broker.pki import ensure_pki, write_crl
from cloud_service.clock import ManualClock
from manager.enroll import make_key_and_csr
from schemas import topics
from tests.support.brokers import QUIET, MqttTestClient, embedded_broker_thread
from tests.support.secstack import CertBroker, make_device_cert, mtls_mosquitto, secure_stack

BROKERS = ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
PDF = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF\n"


async def submit(http: httpx.AsyncClient, service: str, **job: Any) -> httpx.Response:
    import orjson

    spec = {"service": service, "document_format": "application/pdf", **job}
    return await http.post("/api/v1/jobs", files={"job": (None, orjson.dumps(spec), "application/json"),
                                                  "document": ("d.pdf", PDF, "application/pdf")})


def cert_connect_code(url: str, ca: Path, cert: Path, key: Path, client_id: str, username: str | None = None) -> int:
    with MqttTestClient(CertBroker(url, ca, cert, key), username, None, client_id) as client:
        return client.connect(timeout=5)


@pytest.mark.parametrize("broker", BROKERS)
async def test_enroll_print_revoke_and_reenroll(tmp_path: Path, broker: str) -> None:
    async with secure_stack(tmp_path, broker) as stack:
        olga = await stack.make_user("olga", "owner")
        alice = await stack.make_user("alice")
        config = await stack.enroll(olga, "enr-a")
        directory = config.parent
        manager = await stack.start_enrolled(config)
        async with await stack.client(olga) as owner, await stack.client(alice) as user:
            device = (await owner.get("/api/v1/devices/enr-a")).json()
            assert device["owner"] == "olga" and device["auth"] == "certificate" and device["online"]
            assert len(device["certificates"]) == 1
            share = await owner.post("/api/v1/devices/enr-a/shares", json={"user": "alice"})
            assert share.status_code == 201
            job = (await submit(user, "enr-a")).json()
            done = await stack.wait_job(job["id"])
            assert done["state"] == "completed" and done["owner"] == "alice"

            # A job that cannot finish yet (waiting for its upload) ends when the device is revoked.
            held = await user.post("/api/v1/jobs", json={"service": "enr-a", "upload": True,
                                                         "document_format": "application/pdf"})
            assert held.status_code == 201
            revoked = await owner.post("/api/v1/devices/enr-a/revoke", json={"reason": "stolen"})
            assert revoked.status_code == 200, revoked.text
            body = revoked.json()
            assert body["disconnected"] is True and body["certificates_revoked"] == 1
            assert held.json()["id"] in body["jobs_ended"]
            assert not manager.connected.is_set(), "the revoked device is still connected"
            ended = (await user.get(f"/api/v1/jobs/{held.json()['id']}")).json()
            assert ended["state"] == "aborted" and "revoked" in ended["state_message"]
            # Its certificate is refused from now on, and the Manager's own retries stay out.
            code = await asyncio.to_thread(cert_connect_code, stack.device_broker_url, stack.ca,
                                           directory / "device.pem", directory / "device.key", "enr-a")
            assert code != 0
            await asyncio.sleep(1.5)
            assert not manager.connected.is_set()
            assert not (await stack.http.get("/api/v1/services/print/enr-a")).json()["online"]
            refused = await submit(user, "enr-a")
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "service-unavailable"

            # Re-enrollment: same identity, same shares, a new certificate; the old one stays dead.
            old_cert = (directory / "device.pem").read_bytes()
            await stack.stop_manager("enr-a")
            fresh = await owner.post("/api/v1/devices/enr-a/enrollment-codes")
            assert fresh.status_code == 201
            await stack.enroll(olga, "enr-a", code=fresh.json()["enrollment_code"])
            assert (directory / "device.pem").read_bytes() != old_cert
            await stack.start_enrolled(config)
            again = (await submit(user, "enr-a")).json()
            assert (await stack.wait_job(again["id"]))["state"] == "completed"
            device = (await owner.get("/api/v1/devices/enr-a")).json()
            assert device["revoked_at"] is None and [c["revoked_at"] is not None for c in device["certificates"]] \
                == [True, False]


async def test_enrollment_codes_are_one_time_short_lived_and_owner_only(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        olga = await stack.make_user("olga", "owner")
        otto = await stack.make_user("otto", "owner")
        alice = await stack.make_user("alice")
        clock = ManualClock()
        stack.service.registry.clock = clock
        _, csr = make_key_and_csr()
        async with (await stack.client(olga) as owner, await stack.client(otto) as other,
                    await stack.client(alice) as user, httpx.AsyncClient(base_url=stack.service.url,
                                                                        verify=str(stack.ca)) as anon):
            async def enroll(code: str, csr_text: str = csr.decode()) -> httpx.Response:
                return await anon.post("/api/v1/enroll", json={"code": code, "csr": csr_text})

            assert (await user.post("/api/v1/devices", json={"device_id": "dev-x"})).status_code == 403
            first = (await owner.post("/api/v1/devices", json={"device_id": "dev-x"})).json()["enrollment_code"]
            assert (await other.post("/api/v1/devices", json={"device_id": "dev-x"})).status_code == 409
            assert (await other.get("/api/v1/devices/dev-x")).status_code == 404
            assert (await other.post("/api/v1/devices/dev-x/revoke")).status_code == 404
            assert (await other.post("/api/v1/devices/dev-x/enrollment-codes")).status_code == 404

            clock.advance(stack.service.config.enrollment_ttl + 1)
            expired = await enroll(first)
            assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]

            second = (await owner.post("/api/v1/devices/dev-x/enrollment-codes")).json()["enrollment_code"]
            third = (await owner.post("/api/v1/devices/dev-x/enrollment-codes")).json()["enrollment_code"]
            superseded = await enroll(second)
            assert superseded.status_code == 401, "a newer code must void the older one"
            assert (await enroll(third, "not a CSR")).status_code == 400
            fourth = (await owner.post("/api/v1/devices/dev-x/enrollment-codes")).json()["enrollment_code"]
            ok = await enroll(fourth.lower().replace("-", " "))  # typed sloppily: still the code
            assert ok.status_code == 200 and ok.json()["device_id"] == "dev-x"
            assert "BEGIN CERTIFICATE" in ok.json()["certificate"]
            reused = await enroll(fourth)
            assert reused.status_code == 401 and "used" in reused.json()["error"]["message"]
            assert (await enroll("AAAA-BBBB")).status_code == 401

            # Shared with alice: she may now see the device exists, but not manage it (403).
            await owner.post("/api/v1/devices/dev-x/shares", json={"user": "alice"})
            assert (await user.post("/api/v1/devices/dev-x/revoke")).status_code == 403
        events = (stack.service.config.logs_dir / "security.log").read_text()
        assert events.count('"event":"enrollment-refused"') >= 4 and '"event":"device-enrolled"' in events


@pytest.mark.parametrize("broker", BROKERS)
async def test_revoking_a_password_device_closes_its_connection(tmp_path: Path, broker: str) -> None:
    async with secure_stack(tmp_path, broker) as stack:
        manager = await stack.add_manager("pw-dev")
        response = await stack.http.post("/api/v1/devices/pw-dev/revoke")
        assert response.status_code == 200 and response.json()["disconnected"] is True
        assert not manager.connected.is_set()
        assert "pw-dev" not in CredentialStore(stack.broker.passwd)
        await asyncio.sleep(1.5)
        assert not manager.connected.is_set()


async def test_deregistering_drops_shares_and_hides_the_services(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        olga = await stack.make_user("olga", "owner")
        alice = await stack.make_user("alice")
        await stack.add_manager("dereg-dev")
        claimed = await stack.http.post("/api/v1/devices", json={"device_id": "dereg-dev", "owner": "olga"})
        assert claimed.status_code == 201
        async with await stack.client(olga) as owner, await stack.client(alice) as user:
            assert (await owner.post("/api/v1/services/print/dereg-dev/shares", json={"everyone": True})).is_success
            assert (await user.get("/api/v1/services/print/dereg-dev")).status_code == 200
            gone = await owner.delete("/api/v1/devices/dereg-dev")
            assert gone.status_code == 200 and gone.json()["disconnected"] is True
            assert (await user.get("/api/v1/services/print/dereg-dev")).status_code == 404
            assert (await owner.get("/api/v1/devices/dereg-dev")).status_code == 404
            assert (await stack.http.get("/api/v1/devices/dereg-dev/shares")).json()["shares"] == []
            # The id is free again for a new registration.
            assert (await owner.post("/api/v1/devices", json={"device_id": "dereg-dev"})).status_code == 201


# -- the broker alone: certificates and confinement ------------------------------------------------


@pytest.fixture(params=BROKERS)
def cert_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        with embedded_broker_thread(directory) as handle:
            handle.device_url = handle.url
            yield handle
    else:
        with mtls_mosquitto(directory / "mosquitto", ensure_pki(directory / "pki")) as handle:
            yield handle


def test_certificate_confines_a_device_to_its_own_topics(cert_broker: Any, tmp_path: Path) -> None:
    b = cert_broker
    certs = {name: make_device_cert(b.pki, tmp_path, name) for name in ("dev-a", "dev-b")}
    url, ca = b.device_url, b.pki.ca_cert
    service_pw = b.add_user("cloud-service")

    def device(name: str, **kw: Any) -> MqttTestClient:
        cert, key, _ = certs[name]
        client = MqttTestClient(CertBroker(url, ca, cert, key), kw.pop("username", None), None,
                                kw.pop("client_id", name), **kw)
        assert client.connect() == 0
        return client

    with (MqttTestClient(b, "cloud-service", service_pw, "cloud-service-t") as svc,
          device("dev-a") as a, device("dev-b") as other):
        assert svc.connect() == 0
        for topic_filter in topics.SERVICE_SUBSCRIPTIONS:
            assert svc.subscribe(topic_filter) == [1]
        assert other.subscribe(topics.down("dev-b")) == [1]
        assert a.subscribe(topics.down("dev-a")) == [1]
        for foreign in (topics.down("dev-b"), f"{topics.PREFIX}/+/down", "#"):
            assert a.subscribe(foreign) in ([128], [1])  # amqtt refuses; Mosquitto grants, sends nothing
        # Another device's messages never reach dev-a, not even retained ones later.
        assert svc.publish(topics.down("dev-b"), b"for b only")
        got = other.wait_message(5)
        assert got is not None and got.payload == b"for b only"
        other.publish(topics.up("dev-b"), b"retained by b", retain=True, timeout=2)
        assert a.collect(QUIET) == []
        # dev-a cannot speak for dev-b.
        a.publish(topics.up("dev-b"), b"forged")
        a.publish(topics.presence("dev-b"), b"forged")
        a.publish(topics.down("dev-b"), b"forged")
        assert a.publish(topics.up("dev-a"), b"marker")
        first = svc.wait_message(5)
        assert first is not None and (first.topic, first.payload) == (topics.up("dev-a"), b"marker")
        assert svc.collect(QUIET) == []  # neither the forgeries nor the retained publish
    # Nothing was retained: a service connecting later is not handed anything either.
    with MqttTestClient(b, "cloud-service", service_pw, "cloud-service-late") as late:
        assert late.connect() == 0
        for topic_filter in (*topics.SERVICE_SUBSCRIPTIONS, topics.up("dev-b")):
            assert late.subscribe(topic_filter) == [1]
        assert late.collect(QUIET) == []


def test_certificate_identity_cannot_be_borrowed_and_revocation_is_immediate(cert_broker: Any,
                                                                             tmp_path: Path) -> None:
    b = cert_broker
    cert, key, serial = make_device_cert(b.pki, tmp_path, "dev-a")
    url, ca = b.device_url, b.pki.ca_cert
    # Naming another device in the username or client id gets nothing of that device.
    if b.kind == "embedded":
        assert cert_connect_code(url, ca, cert, key, "dev-b", "dev-b") not in (0, -1)
        assert cert_connect_code(url, ca, cert, key, "dev-b") not in (0, -1)
    # A certificate from another CA does not even finish the TLS handshake.
    stranger = ensure_pki(tmp_path / "other-ca")
    s_cert, s_key, _ = make_device_cert(stranger, tmp_path / "other", "dev-a")
    assert cert_connect_code(url, ca, s_cert, s_key, "dev-a") == -1
    # Revocation: the embedded broker sees the new CRL at once; Mosquitto after SIGHUP.
    with MqttTestClient(CertBroker(url, ca, cert, key), None, None, "dev-a") as a:
        assert a.connect() == 0
        write_crl(b.pki, [(serial, dt.datetime.now(dt.UTC))])
        if b.kind == "mosquitto":
            b._reload(lambda: cert_connect_code(url, ca, cert, key, "dev-a-probe") != 0)
        else:
            assert a.disconnected.wait(5), "the embedded broker kept a revoked certificate connected"
        assert cert_connect_code(url, ca, cert, key, "dev-a") != 0
