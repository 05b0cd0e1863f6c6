"""The embedded amqtt broker: the shared security contract plus what only it does, the ACL rules,
the credential store and the ``broker`` CLI verb."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import acl
from broker.credentials import CredentialStore, check_password, generate_password, hash_password
from schemas import topics
from tests.support.brokers import (
    DEV_A,
    QUIET,
    BrokerContract,
    MqttTestClient,
    ThreadedEmbeddedHandle,
    connect_code,
    embedded_broker,
    embedded_broker_thread,
    tls_port_ready,
    wait_until,
)

SVC = topics.SERVICE_USERNAME


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedEmbeddedHandle]:
    with embedded_broker_thread(tmp_path_factory.mktemp("embedded")) as b:
        yield b


class TestEmbeddedContract(BrokerContract):
    SUBACK_REFUSES = True


# -- what only the embedded broker enforces -------------------------------------------------------


def test_device_client_id_must_equal_username(broker: ThreadedEmbeddedHandle) -> None:
    pw = broker.add_user("cid-dev")
    assert connect_code(broker, "cid-dev", pw, "cid-dev") == 0
    assert connect_code(broker, "cid-dev", pw, "someone-else") not in (0, -1)
    assert connect_code(broker, "cid-dev", pw, "") not in (0, -1)


def test_service_client_ids_start_with_cloud_service(broker: ThreadedEmbeddedHandle) -> None:
    pw = broker.add_user(SVC)
    assert connect_code(broker, SVC, pw, "cloud-service-replica-7") == 0
    assert connect_code(broker, SVC, pw, "dev-a") not in (0, -1)


def test_failed_connect_does_not_disturb_the_device_it_names(broker: ThreadedEmbeddedHandle) -> None:
    """amqtt alone drops a session's subscriptions on any clean-session CONNECT with its client id,
    before checking the password; the gate refuses such a CONNECT before amqtt sees it."""
    pw, svc_pw = broker.add_user("victim"), broker.add_user(SVC)
    with MqttTestClient(broker, "victim", pw) as v, MqttTestClient(broker, SVC, svc_pw, "cloud-service-x") as s:
        assert v.connect() == 0 and s.connect() == 0
        assert v.subscribe(topics.down("victim")) == [1]
        for clean in (True, False):
            with MqttTestClient(broker, "victim", "wrong", clean_session=clean) as attacker:
                assert attacker.connect() not in (0, -1)
        assert not v.disconnected.is_set()
        assert s.publish(topics.down("victim"), b"still subscribed")
        msg = v.wait_message(5)
        assert msg is not None and msg.payload == b"still subscribed"


def test_silent_client_is_dropped_and_its_will_published(broker: ThreadedEmbeddedHandle) -> None:
    """amqtt never enforces keepalive; the broker's sweeper does (1.5 x keepalive)."""
    pw, svc_pw = broker.add_user("silent"), broker.add_user(SVC)
    with (
        MqttTestClient(broker, SVC, svc_pw, "cloud-service-w") as s,
        MqttTestClient(broker, "silent", pw, keepalive=1, will=(topics.presence("silent"), b"gone", 1, False)) as d,
    ):
        assert s.connect() == 0 and s.subscribe(topics.presence("silent")) == [1]
        assert d.connect() == 0
        d.client.loop_stop()  # stops pinging; the socket stays open
        msg = s.wait_message(8)
        assert msg is not None and msg.payload == b"gone"


def test_oversized_packet_closes_the_connection(broker: ThreadedEmbeddedHandle) -> None:
    pw, svc_pw = broker.add_user("big"), broker.add_user(SVC)
    with MqttTestClient(broker, SVC, svc_pw, "cloud-service-b") as s, MqttTestClient(broker, "big", pw) as d:
        assert s.connect() == 0 and s.subscribe(topics.up("big")) == [1]
        assert d.connect() == 0
        d.publish(topics.up("big"), b"x" * 200_000, timeout=2)
        assert d.disconnected.wait(5)
        assert s.collect(QUIET) == []


def test_mqtt5_and_garbage_are_refused(broker: ThreadedEmbeddedHandle) -> None:
    pw = broker.add_user("v5dev")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v5dev", protocol=mqtt.MQTTv5)
    client.tls_set_context(broker.pki.client_context())
    client.username_pw_set("v5dev", pw)
    codes: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(int(rc.value))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert wait_until(lambda: codes, 5)
        assert codes[0] == 132  # Unsupported protocol version
    finally:
        client.loop_stop()
    ctx = broker.pki.client_context()
    with (
        socket.create_connection((broker.host, broker.port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname=broker.host) as tls,
    ):
        tls.sendall(b"\x30\x05hello")  # a PUBLISH before any CONNECT
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            assert tls.recv(4) == b""


def test_nothing_is_ever_retained(broker: ThreadedEmbeddedHandle) -> None:
    """A retained publish is denied before amqtt stores it, and anything stored another way
    (here: amqtt's own API) is deleted at once, so amqtt's ACL-free retained delivery has nothing to send."""
    pw = broker.add_user("keeper")
    amqtt = broker.broker.amqtt
    assert amqtt is not None
    with MqttTestClient(broker, "keeper", pw) as d:
        assert d.connect() == 0
        assert d.publish(topics.up("keeper"), b"retain me", retain=True)  # PUBACKed, then dropped
        assert d.publish(topics.up("keeper"), b"after")
        assert not d.disconnected.is_set()
    assert amqtt.retained_messages == {}
    broker.run(amqtt.retain_message(None, topics.down("keeper"), b"stored behind our back"))
    assert wait_until(lambda: not amqtt.retained_messages, 5)


def test_credentials_change_while_running(broker: ThreadedEmbeddedHandle) -> None:
    """The file is the interface: another process adding or removing a device takes effect at once."""
    other = CredentialStore(broker.credentials.path)  # a separate instance, as another process has
    other.set("late-dev", "late-pw")
    assert connect_code(broker, "late-dev", "late-pw") == 0
    other.set("late-dev", "new-pw")
    assert connect_code(broker, "late-dev", "late-pw") not in (0, -1)
    assert connect_code(broker, "late-dev", "new-pw") == 0
    other.remove("late-dev")
    assert connect_code(broker, "late-dev", "new-pw") not in (0, -1)


def test_restart_keeps_the_port_and_devices_reconnect(tmp_path: Path) -> None:
    with embedded_broker_thread(tmp_path) as b:
        pw = b.add_user(DEV_A)
        url = b.url
        assert connect_code(b, DEV_A, pw) == 0
        b.stop()
        assert connect_code(b, DEV_A, pw) == -1
        b.start()
        assert b.url == url
        assert connect_code(b, DEV_A, pw) == 0


async def test_embedded_broker_in_the_callers_loop(tmp_path: Path) -> None:
    async with embedded_broker(tmp_path) as b:
        assert b.port != 0 and b.url == f"mqtts://127.0.0.1:{b.port}"
        pw = b.add_user(DEV_A)
        assert await asyncio.to_thread(connect_code, b, DEV_A, pw) == 0
        assert await asyncio.to_thread(connect_code, b, DEV_A, "nope") not in (0, -1)
    assert not b.broker.running


# -- the rules, as pure functions ------------------------------------------------------------------


def test_acl_rules() -> None:
    a, b = "printer-1", "printer-2"
    assert acl.client_id_allowed(a, a) and not acl.client_id_allowed(a, b)
    assert acl.client_id_allowed(SVC, SVC) and acl.client_id_allowed(SVC, "cloud-service-2")
    assert not acl.client_id_allowed(SVC, "x-cloud-service") and not acl.client_id_allowed("Bad_Id", "Bad_Id")
    assert acl.may_publish(a, topics.up(a)) and acl.may_publish(a, topics.presence(a))
    assert not acl.may_publish(a, topics.down(a)) and not acl.may_publish(a, topics.up(b))
    assert acl.may_subscribe(a, topics.down(a))
    assert not any(acl.may_subscribe(a, f) for f in (topics.down(b), "#", "ci/v1/dev/+/down", topics.up(a)))
    assert all(acl.may_subscribe(SVC, f) for f in (*topics.SERVICE_SUBSCRIPTIONS, topics.up(a), topics.presence(b)))
    assert not any(acl.may_subscribe(SVC, f) for f in ("#", "ci/v1/dev/+/down", topics.down(a), "ci/v1/dev/#"))
    assert acl.may_publish(SVC, topics.down(a)) and not acl.may_publish(SVC, topics.up(a))
    assert not acl.may_publish(SVC, "ci/v1/dev/+/down")
    assert acl.may_receive(a, topics.down(a)) and not acl.may_receive(a, topics.down(b))
    assert acl.may_receive(SVC, topics.up(a)) and not acl.may_receive(SVC, topics.down(a))
    assert acl.will_allowed(a, True, topics.presence(a), False)
    assert not acl.will_allowed(a, True, topics.presence(a), True)
    assert not acl.will_allowed(a, True, topics.down(b), False)
    assert acl.will_allowed(a, False, None, False)
    assert not acl.may_publish(None, topics.up(a)) and not acl.may_subscribe("", topics.down(a))


# -- the credential store ----------------------------------------------------------------------------


def test_credential_store_verify_set_remove(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "passwd")
    assert store.usernames() == [] and not store.verify("a", "x")
    store.set("a", "pw-a")
    store.set("b", "pw-b")
    assert store.verify("a", "pw-a") and store.verify("a", "pw-a")  # second one from the cache
    assert not store.verify("a", "pw-b") and not store.verify("a", "") and not store.verify("c", "pw-a")
    assert store.usernames() == ["a", "b"] and "a" in store
    assert (tmp_path / "passwd").stat().st_mode & 0o777 == 0o600
    line = (tmp_path / "passwd").read_text().splitlines()[0]
    assert line.startswith("a:scrypt$16384$8$1$")
    store.set("a", "pw-a2")
    assert not store.verify("a", "pw-a") and store.verify("a", "pw-a2")
    assert store.remove("a") and not store.remove("a")
    assert not store.verify("a", "pw-a2") and store.usernames() == ["b"]
    with pytest.raises(ValueError):
        store.set("x:y", "pw")


def test_credential_store_sees_changes_made_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    store, other = CredentialStore(path), CredentialStore(path)
    other.set("dev", "one")
    assert store.verify("dev", "one")
    other.set("dev", "two")  # cached success for "one" must not survive the change
    assert not store.verify("dev", "one") and store.verify("dev", "two")
    # A hand edit that keeps the size and lands within the same mtime tick still changes the inode.
    text = path.read_text()
    tmp = path.with_name("edit")
    tmp.write_text(text.replace("dev:", "vex:"))
    os.replace(tmp, path)
    assert not store.verify("dev", "two") and store.verify("vex", "two")
    other.remove("vex")
    assert store.usernames() == []


def test_password_hashes() -> None:
    for scheme in ("scrypt", "pbkdf2-sha512"):
        encoded = hash_password("pw", scheme)  # type: ignore[arg-type]
        assert check_password("pw", encoded) and not check_password("pW", encoded)
    assert hash_password("pw", "pbkdf2-sha512").startswith("$7$101$")
    assert not check_password("pw", "garbage") and not check_password("pw", "scrypt$x$y$z$a$b")
    p1, p2 = generate_password(), generate_password()
    assert p1 != p2 and len(p1) == 32


# -- the CLI verb --------------------------------------------------------------------------------------


@contextlib.contextmanager
def cli_broker(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``python -m broker.cli broker`` on any free port, with its banner read up to its last line
    (``event loop``): {"url": ..., "event loop": ...} and whatever else it names. Killed at the
    end if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "broker", "--data-dir", str(data_dir), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        banner: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "event loop" not in banner:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("broker listening on "):
                banner["url"] = line.split()[-1]
            elif line.strip().startswith("event loop"):
                banner["event loop"] = line.split()[-1]
        yield proc, banner
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_broker_runs_until_interrupted(tmp_path: Path) -> None:
    with cli_broker(tmp_path) as (proc, banner):
        url = banner.get("url", "")
        assert url.startswith("mqtts://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        assert tls_port_ready("127.0.0.1", port, tmp_path / "pki" / "ca.pem")
        assert (tmp_path / "pki" / "server.key").stat().st_mode & 0o777 == 0o600
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_cli_broker_carries_a_message_on_either_event_loop(tmp_path: Path, event_loop: str) -> None:
    """``--event-loop``: the broker says which loop it runs on, and a device and the service
    exchange a message through it on that loop (the default, auto, is uvloop where installed)."""
    pytest.importorskip("uvloop")
    from types import SimpleNamespace

    from broker.pki import ensure_pki

    device_pw, service_pw = generate_password(), generate_password()
    store = CredentialStore(tmp_path / "broker" / "passwd")
    store.set(DEV_A, device_pw)
    store.set(SVC, service_pw)
    clients: list[MqttTestClient] = []
    with cli_broker(tmp_path, "--event-loop", event_loop) as (proc, banner):
        try:
            url, loop = banner.get("url", ""), banner.get("event loop")
            assert loop == event_loop and url.startswith("mqtts://127.0.0.1:"), (loop, url)
            handle = SimpleNamespace(url=url, pki=ensure_pki(tmp_path / "pki"))
            device = MqttTestClient(handle, DEV_A, device_pw)
            service = MqttTestClient(handle, SVC, service_pw, client_id=f"{SVC}-test")
            clients += [device, service]
            assert device.connect() == 0 and service.connect() == 0
            assert device.subscribe(topics.down(DEV_A)) == [1]
            assert service.publish(topics.down(DEV_A), b"doorbell")
            got = device.wait_message(10)
            assert got is not None and got.payload == b"doorbell"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(15) == 0
        finally:
            for client in clients:
                client.close()


def test_cli_broker_refuses_an_unknown_event_loop(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "broker", "--data-dir", str(tmp_path), "--port", "0",
         "--event-loop", "tornado"],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 2 and "invalid choice: 'tornado'" in done.stderr
    assert not (tmp_path / "pki").exists()
