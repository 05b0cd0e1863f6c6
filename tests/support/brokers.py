"""Real brokers and a small MQTT client for tests (127.0.0.1 only, ephemeral ports, bounded waits).

    async with embedded_broker(tmp_path) as b:        # amqtt in this event loop
        b.add_user("printer-1", "pw")
    with embedded_broker_thread(tmp_path) as b:       # amqtt in its own thread and loop
        ...
    with mosquitto_broker(tmp_path) as b:             # /usr/sbin/mosquitto with deploy/mosquitto
        ...
    with MqttTestClient(b, "printer-1", "pw") as c:   # paho, TLS, blocking helpers
        c.subscribe(topics.down("printer-1"))
        msg = c.wait_message(5)

Every handle has .url, .host, .port, .pki, .add_user(name, password=None) -> password,
.remove_user(name), .stop(), .start() (restart on the same port). MqttTestClient blocks: from an
async test whose event loop also runs the broker, call it through asyncio.to_thread (or use
embedded_broker_thread, whose broker does not share the test's loop).

Mosquitto missing: pytest.skip, unless CI=true, where it is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import queue
import shutil
import signal
import socket
import ssl
import string
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.credentials import CredentialStore, generate_password
from broker.embedded import EmbeddedBroker
from broker.pki import Pki, ensure_pki
from schemas import topics

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO_DIR = REPO / "deploy" / "mosquitto"
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
SERVICE_USERNAME = topics.SERVICE_USERNAME


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass; returns its last truthiness."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind :0 and close); callers retry on a lost race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tls_port_ready(host: str, port: int, ca_file: Path, timeout: float = 1.0) -> bool:
    """True when a TLS handshake to host:port succeeds against `ca_file`."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except OSError:
        return False


def plain_mqtt_connect(host: str, port: int, timeout: float = 3.0) -> bytes:
    """Send a plain-TCP MQTT 3.1.1 CONNECT; return whatever comes back (b"" when the peer closed).

    Against a TLS-only port the broker sees garbage instead of a ClientHello, so no CONNACK
    (``20 02 00 00``) can ever come back.
    """
    client_id = b"plain-probe"
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    packet = bytes([0x10, len(body)]) + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            s.sendall(packet)
            return s.recv(16)
        except (TimeoutError, ConnectionError):
            return b""


# -- broker handles -------------------------------------------------------------------------------


class EmbeddedHandle:
    """An EmbeddedBroker in the caller's event loop."""

    def __init__(self, directory: Path, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> None:
        self.directory = directory
        self.pki: Pki = ensure_pki(directory / "pki", hostnames)
        self.passwd = directory / "broker" / "passwd"
        self.credentials = CredentialStore(self.passwd)
        self.broker = EmbeddedBroker(self.pki, self.passwd, host="127.0.0.1", port=0)
        self.kind = "embedded"

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def url(self) -> str:
        return self.broker.url

    def add_user(self, name: str, password: str | None = None) -> str:
        """Add or change a user; effective for the next CONNECT (the broker rereads the file)."""
        password = password or generate_password()
        self.credentials.set(name, password)
        return password

    def remove_user(self, name: str) -> None:
        self.credentials.remove(name)

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()


@contextlib.asynccontextmanager
async def embedded_broker(directory: Path) -> AsyncIterator[EmbeddedHandle]:
    """An embedded broker on 127.0.0.1:<ephemeral> in the running loop; stopped on exit."""
    handle = EmbeddedHandle(Path(directory))
    await handle.start()
    try:
        yield handle
    finally:
        await handle.stop()


class ThreadedEmbeddedHandle:
    """An EmbeddedBroker running in its own thread and event loop, with a blocking interface."""

    def __init__(self, directory: Path) -> None:
        self._inner = EmbeddedHandle(directory)
        self.pki = self._inner.pki
        self.credentials = self._inner.credentials
        self.kind = "embedded"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._thread.start()

    @property
    def broker(self) -> EmbeddedBroker:
        return self._inner.broker

    @property
    def host(self) -> str:
        return self._inner.host

    @property
    def port(self) -> int:
        return self._inner.port

    @property
    def url(self) -> str:
        return self._inner.url

    def add_user(self, name: str, password: str | None = None) -> str:
        return self._inner.add_user(name, password)

    def remove_user(self, name: str) -> None:
        self._inner.remove_user(name)

    def run(self, coro: Any, timeout: float = 20) -> Any:
        """Run `coro` in the broker's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self.run(self._inner.start())

    def stop(self) -> None:
        self.run(self._inner.stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


@contextlib.contextmanager
def embedded_broker_thread(directory: Path) -> Iterator[ThreadedEmbeddedHandle]:
    """An embedded broker that does not share the caller's loop (usable from sync tests)."""
    handle = ThreadedEmbeddedHandle(Path(directory))
    try:
        handle.start()
        yield handle
    finally:
        handle.close()


def find_mosquitto() -> tuple[str, str]:
    """(mosquitto, mosquitto_passwd) paths, or skip the test (fail under CI=true) when missing."""
    broker = next((p for p in MOSQUITTO_CANDIDATES if os.access(p, os.X_OK)), None) or shutil.which("mosquitto")
    passwd = shutil.which("mosquitto_passwd")
    if broker and passwd:
        return broker, passwd
    reason = "mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def render_mosquitto_conf(target: Path, values: dict[str, str]) -> Path:
    """Fill deploy/mosquitto/mosquitto.conf.template; a missing value raises KeyError."""
    template = string.Template((MOSQUITTO_DIR / "mosquitto.conf.template").read_text())
    target.write_text(template.substitute(values))
    return target


def terminate(proc: subprocess.Popen) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL if it has not gone within 5 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class MosquittoHandle:
    """A private Mosquitto (never the system one on :1883) configured from deploy/mosquitto."""

    directory: Path
    pki: Pki
    binary: str
    passwd_tool: str
    host: str = "127.0.0.1"
    port: int = 0
    kind: str = "mosquitto"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    passwd: Path = field(init=False)
    conf: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.passwd = self.directory / "passwd"
        self.conf = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        if not self.passwd.exists():
            # mosquitto refuses to start with a missing password file; an empty one is fine.
            self.passwd.touch(mode=0o600)

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    def _render(self) -> None:
        render_mosquitto_conf(
            self.conf,
            {
                "BIND_HOST": self.host,
                "PORT": str(self.port),
                "CAFILE": str(self.pki.ca_cert),
                "CERTFILE": str(self.pki.server_cert),
                "KEYFILE": str(self.pki.server_key),
                "PASSWORD_FILE": str(self.passwd),
                "ACL_FILE": str(MOSQUITTO_DIR / "acl"),
                "RUN_AS_USER": pwd.getpwuid(os.getuid()).pw_name,
            },
        )

    def start(self, attempts: int = 5) -> None:
        """Start on self.port (a fresh ephemeral port when 0); retries when a port race is lost."""
        fixed = self.port != 0
        last_error = ""
        for _ in range(attempts):
            if not fixed:
                self.port = free_port(self.host)
            self._render()
            log = self.log_path.open("ab")
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            proc = self.process
            if (
                wait_until(
                    lambda proc=proc: (
                        proc.poll() is not None or tls_port_ready(self.host, self.port, self.pki.ca_cert, 0.5)
                    ),
                    timeout=10,
                    interval=0.05,
                )
                and proc.poll() is None
            ):
                return
            last_error = self.log_path.read_text(errors="replace")[-2000:]
            self._terminate()
        raise RuntimeError(f"mosquitto did not start on {self.host}:{self.port}:\n{last_error}")

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            terminate(proc)

    def stop(self) -> None:
        self._terminate()

    def add_user(self, name: str, password: str | None = None) -> str:
        """mosquitto_passwd -b, then SIGHUP, then wait until the new password is accepted."""
        password = password or generate_password()
        subprocess.run(
            [self.passwd_tool, "-b", str(self.passwd), name, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
        self._reload(lambda: connect_code(self, name, password) == 0)
        return password

    def remove_user(self, name: str) -> None:
        subprocess.run([self.passwd_tool, "-D", str(self.passwd), name], check=True, capture_output=True, timeout=10)
        self._reload(lambda: connect_code(self, name, "x") != 0)

    def _reload(self, took_effect: Any) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGHUP)
        if not wait_until(took_effect, timeout=10, interval=0.1):
            raise RuntimeError("mosquitto did not apply the password file change")


@contextlib.contextmanager
def mosquitto_broker(directory: Path, pki: Pki | None = None) -> Iterator[MosquittoHandle]:
    """A Mosquitto on 127.0.0.1:<ephemeral>, TLS only, from deploy/mosquitto; stopped on exit."""
    binary, passwd_tool = find_mosquitto()
    directory = Path(directory)
    pki = pki or ensure_pki(directory / "pki")
    handle = MosquittoHandle(directory, pki, binary, passwd_tool)
    try:
        handle.start()
        yield handle
    finally:
        handle.stop()


# -- a small blocking MQTT client -----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTestClient:
    """paho 2.x over TLS with blocking, time-bounded helpers. MQTT 3.1.1 (what amqtt speaks).

    `broker` is any handle above (or anything with .url and .pki). The client never reconnects by
    itself: tests see exactly one connection.
    """

    def __init__(
        self,
        broker: Any,
        username: str | None,
        password: str | None = None,
        client_id: str | None = None,
        *,
        clean_session: bool = True,
        keepalive: int = 30,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        url = urlsplit(broker.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 8883
        self.client_id = client_id if client_id is not None else (username or "")
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connect_code: int | None = None
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self._subacks: dict[int, list[int]] = {}
        self._acked: set[int] = set()
        self._cond = threading.Condition()
        self._keepalive = keepalive
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        self.client.tls_set_context(broker.pki.client_context())
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._loop_started = False

    # paho callbacks (network thread; never block)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        # paho reports MQTT 3.1.1 CONNACK codes as MQTT 5 reason codes: 0 accepted,
        # 132 bad protocol, 134 bad username or password, 135 not authorized.
        self.connect_code = int(rc.value)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnected.set()
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self._cond:
            self._subacks[mid] = [int(c.value) for c in codes]
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    # blocking API
    def connect(self, timeout: float = 10) -> int:
        """Connect and wait for CONNACK: 0 on success, paho's reason code for a refusal (134 bad
        username or password, 135 not authorized), -1 on a transport failure (TLS error,
        connection closed without CONNACK, timeout)."""
        try:
            self.client.connect(self.host, self.port, keepalive=self._keepalive)
        except (OSError, ssl.SSLError):
            self.connect_code = -1
            return -1
        self.client.loop_start()
        self._loop_started = True
        if not self._connected.wait(timeout) or self.connect_code is None:
            self.connect_code = -1
        return self.connect_code

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5) -> list[int]:
        """SUBSCRIBE and wait for SUBACK; returns the granted codes (128 = refused)."""
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return [-1]
        with self._cond:
            self._cond.wait_for(lambda: mid in self._subacks, timeout)
            return self._subacks.get(mid, [-1])

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 5) -> bool:
        """PUBLISH; for QoS > 0 wait for the broker's ack. True when acknowledged (or QoS 0 sent)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return info.rc == mqtt.MQTT_ERR_SUCCESS
        with self._cond:
            return self._cond.wait_for(lambda: info.mid in self._acked, timeout)

    def wait_message(self, timeout: float = 5) -> Received | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def collect(self, duration: float) -> list[Received]:
        """Everything that arrives within `duration` seconds."""
        out: list[Received] = []
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            msg = self.wait_message(left)
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> None:
        """DISCONNECT (no Last Will) and stop the network thread."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._loop_started:
            self.client.loop_stop()
            self._loop_started = False

    def drop(self) -> None:
        """Vanish without DISCONNECT (the broker should publish the Last Will)."""
        if self._loop_started:
            self.client.loop_stop()
            self._loop_started = False
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_code(broker: Any, username: str | None, password: str | None, client_id: str | None = None) -> int:
    """Open, CONNECT, close: the CONNACK code (0 = accepted, -1 = transport failure)."""
    with MqttTestClient(broker, username, password, client_id) as c:
        return c.connect(timeout=5)


# -- the behaviour every supported broker must show -----------------------------------------------

DEV_A, DEV_B = "dev-a", "dev-b"
#: How long "nothing arrives" is watched after a positive marker already arrived.
QUIET = 0.4


class BrokerContract:
    """Security contract tests, shared by the embedded broker and Mosquitto.

    Subclass it in a test module that provides a `broker` fixture (a blocking handle: the threaded
    embedded broker or Mosquitto). Users dev-a, dev-b and cloud-service are made once per class.
    """

    #: amqtt refuses a forbidden SUBSCRIBE in the SUBACK (0x80); Mosquitto's acl_file grants every
    #: subscription and only withholds the messages (mosquitto#2042).
    SUBACK_REFUSES = True

    @pytest.fixture(scope="class")
    def users(self, broker: Any) -> dict[str, str]:
        return {name: broker.add_user(name) for name in (DEV_A, DEV_B, SERVICE_USERNAME)}

    @pytest.fixture
    def clients(self) -> Iterator[list[MqttTestClient]]:
        made: list[MqttTestClient] = []
        yield made
        for c in made:
            c.close()

    @pytest.fixture
    def connect(self, broker: Any, users: dict[str, str], clients: list[MqttTestClient]) -> Any:
        """connect(name, client_id=None, **kw) -> a connected MqttTestClient (asserts CONNACK 0)."""

        def _connect(name: str, client_id: str | None = None, **kw: Any) -> MqttTestClient:
            if client_id is None:
                client_id = f"{SERVICE_USERNAME}-{len(clients)}" if name == SERVICE_USERNAME else name
            c = MqttTestClient(broker, name, users[name], client_id, **kw)
            clients.append(c)
            assert c.connect() == 0, f"{name} could not connect"
            return c

        return _connect

    @pytest.fixture
    def service(self, connect: Any) -> MqttTestClient:
        svc = connect(SERVICE_USERNAME)
        for topic_filter in topics.SERVICE_SUBSCRIPTIONS:
            assert svc.subscribe(topic_filter) == [1]
        return svc

    def test_no_username_is_refused(self, broker: Any, users: dict[str, str]) -> None:
        assert connect_code(broker, None, None, DEV_A) not in (0, -1)

    def test_wrong_password_is_refused(self, broker: Any, users: dict[str, str]) -> None:
        assert connect_code(broker, DEV_A, users[DEV_A] + "x") not in (0, -1)
        assert connect_code(broker, DEV_A, users[DEV_B]) not in (0, -1)
        assert connect_code(broker, "nobody", "whatever") not in (0, -1)

    def test_plain_tcp_mqtt_gets_no_connack(self, broker: Any) -> None:
        reply = plain_mqtt_connect(broker.host, broker.port)
        assert not reply.startswith(b"\x20\x02"), reply

    def test_service_and_device_round_trip(self, connect: Any, service: MqttTestClient) -> None:
        a = connect(DEV_A)
        assert a.subscribe(topics.down(DEV_A)) == [1]
        assert a.publish(topics.presence(DEV_A), b"online")
        assert a.publish(topics.up(DEV_A), b"hello")
        got = [service.wait_message(5), service.wait_message(5)]
        assert [(m.topic, m.payload) for m in got if m] == [
            (topics.presence(DEV_A), b"online"),
            (topics.up(DEV_A), b"hello"),
        ]
        assert service.publish(topics.down(DEV_A), b"doorbell")
        msg = a.wait_message(5)
        assert msg is not None and (msg.topic, msg.payload, msg.retain) == (topics.down(DEV_A), b"doorbell", False)

    def test_device_cannot_read_another_devices_down_topic(self, connect: Any, service: MqttTestClient) -> None:
        a, b = connect(DEV_A), connect(DEV_B)
        assert b.subscribe(topics.down(DEV_B)) == [1]
        expected = [128] if self.SUBACK_REFUSES else [1]
        assert a.subscribe(topics.down(DEV_B)) == expected
        assert a.subscribe(f"{topics.PREFIX}/+/down") == expected
        assert a.subscribe("#") == expected
        assert service.publish(topics.down(DEV_B), b"secret for b")
        msg = b.wait_message(5)
        assert msg is not None and msg.payload == b"secret for b"
        assert a.collect(QUIET) == []

    def test_device_cannot_forge_another_devices_reports(self, connect: Any, service: MqttTestClient) -> None:
        a = connect(DEV_A)
        a.publish(topics.up(DEV_B), b"forged up")
        a.publish(topics.presence(DEV_B), b"forged presence")
        a.publish(f"{topics.PREFIX}/{DEV_B}/other", b"forged other")
        assert a.publish(topics.up(DEV_A), b"marker")
        msg = service.wait_message(5)
        assert msg is not None and (msg.topic, msg.payload) == (topics.up(DEV_A), b"marker")
        assert service.collect(QUIET) == []

    def test_device_cannot_publish_to_down_topics(self, connect: Any, service: MqttTestClient) -> None:
        a, b = connect(DEV_A), connect(DEV_B)
        assert b.subscribe(topics.down(DEV_B)) == [1]
        a.publish(topics.down(DEV_B), b"fake doorbell")
        assert service.publish(topics.down(DEV_B), b"real doorbell")
        msg = b.wait_message(5)
        assert msg is not None and msg.payload == b"real doorbell"
        assert b.collect(QUIET) == []

    def test_service_cannot_publish_reports(self, connect: Any, service: MqttTestClient) -> None:
        service.publish(topics.up(DEV_A), b"service posing as device")
        a = connect(DEV_A)
        assert a.publish(topics.up(DEV_A), b"marker")
        msg = service.wait_message(5)
        assert msg is not None and msg.payload == b"marker"
        assert service.collect(QUIET) == []

    def test_retained_publish_is_never_delivered(self, connect: Any, service: MqttTestClient) -> None:
        a = connect(DEV_A)
        a.publish(topics.up(DEV_A), b"retained report", retain=True, timeout=2)
        # Whatever the broker did to the publisher (amqtt drops it, Mosquitto disconnects it),
        # nobody gets the message, now or on a later CONNECT/SUBSCRIBE.
        assert service.collect(QUIET) == []
        later = connect(SERVICE_USERNAME)
        for topic_filter in (*topics.SERVICE_SUBSCRIPTIONS, topics.up(DEV_A)):
            assert later.subscribe(topic_filter) == [1]
        b = connect(DEV_B)
        assert b.subscribe(topics.down(DEV_B)) == [1]
        assert later.collect(QUIET) == []
        assert b.collect(0) == []

    def test_last_will_reaches_the_service(self, connect: Any, service: MqttTestClient) -> None:
        a = connect(DEV_A, will=(topics.presence(DEV_A), b"offline", 1, False))
        a.drop()
        msg = service.wait_message(5)
        assert msg is not None and (msg.topic, msg.payload) == (topics.presence(DEV_A), b"offline")

    def test_last_will_on_a_foreign_topic_is_never_delivered(
        self, broker: Any, users: dict[str, str], connect: Any, service: MqttTestClient
    ) -> None:
        b = connect(DEV_B)
        assert b.subscribe(topics.down(DEV_B)) == [1]
        for will in (
            (topics.down(DEV_B), b"forged will", 1, False),
            (topics.presence(DEV_B), b"forged will", 1, False),
            (topics.presence(DEV_A), b"retained will", 1, True),
        ):
            a = MqttTestClient(broker, DEV_A, users[DEV_A], will=will)
            if a.connect() == 0:  # amqtt refuses the CONNECT; Mosquitto may accept and drop the will
                a.drop()
            a.close()
        assert service.publish(topics.down(DEV_B), b"marker")
        msg = b.wait_message(5)
        assert msg is not None and msg.payload == b"marker"
        assert b.collect(QUIET) == []
        assert service.collect(QUIET) == []

    def test_second_connection_takes_over(self, connect: Any, service: MqttTestClient) -> None:
        first = connect(DEV_A)
        assert first.subscribe(topics.down(DEV_A)) == [1]
        second = connect(DEV_A)
        assert second.subscribe(topics.down(DEV_A)) == [1]
        assert first.disconnected.wait(5), "the first connection was left open"
        assert service.publish(topics.down(DEV_A), b"to the new one")
        msg = second.wait_message(5)
        assert msg is not None and msg.payload == b"to the new one"
