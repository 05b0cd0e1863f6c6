"""The whole Manager (threads, paho session, TLS, Will, reconnect, Bye) against a real broker.

Mosquitto runs on 127.0.0.1 with TLS and passwords; the service side is the scripted fake of
test_manager_runner driven by a plain paho client, so this tests the Manager's MQTT plumbing,
not the real Cloud Service (the lead's end-to-end tests do that).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.pki import Pki
from manager import Manager, ManagerConfig
from schemas import topics
from schemas.enums import JobState
from schemas.messages import Bye, Hello, JobFetchable, Message, Presence, decode_presence, encode
from tests.support.docserver import DocServer
from tests.support.documents import make_pdf
from tests.support.fakeservice import FakeService

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(MOSQUITTO is None or shutil.which("mosquitto_passwd") is None, reason="mosquitto not installed"),
]
DEVICE = "printer-7"
SERVICE_USER = "cloud-service"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[int]:
    port = free_port()
    passwd = tmp_path / "passwd"
    for user, password in ((DEVICE, "device-pw"), (SERVICE_USER, "service-pw")):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if user == DEVICE else []), str(passwd), user, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        f"allow_anonymous false\npassword_file {passwd}\npersistence false\nuser root\n"
    )
    proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class CloudSide:
    """A paho client with the service's credentials feeding FakeService."""

    def __init__(self, port: int, pki: Pki, docs: DocServer) -> None:
        self.fake = FakeService(docs, sender=self._send)
        self.presence: list[Presence] = []
        self.ready = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud-test", protocol=mqtt.MQTTv311)
        client.username_pw_set(SERVICE_USER, "service-pw")
        client.tls_set_context(pki.client_context())
        client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics.SERVICE_SUBSCRIPTIONS])
        client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        client.on_message = self._on_message
        self.client = client
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/presence"):
            self.presence.append(decode_presence(message.payload))
        else:
            self.fake.publish(message.topic, message.payload)

    def _send(self, message: Message) -> None:
        self.client.publish(topics.down(DEVICE), encode(message), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_manager_over_a_real_broker(broker: int, pki: Pki, docs: DocServer, tmp_path: Path) -> None:
    cloud = CloudSide(broker, pki, docs)
    config = ManagerConfig(
        device_id=DEVICE,
        broker_url=f"mqtts://127.0.0.1:{broker}",
        password="device-pw",
        ca_file=pki.ca_cert,
        state_dir=tmp_path / "state",
        keepalive=5,
        request_timeout=2,
        services=[
            {
                "name": "office",
                "driver": "file",  # type: ignore[list-item]
                "capabilities": {"document-format-supported": ["application/pdf"]},
            }
        ],
    )
    manager = Manager(config)
    try:
        manager.start()
        assert manager.connected.wait(10) and manager.synced.wait(10)
        wait(lambda: [p.state for p in cloud.presence] == ["online"])
        assert len(cloud.fake.of(Hello)) == 1

        pdf = make_pdf(2)
        cloud.fake.add(1, [(pdf, "application/pdf")])
        cloud.fake.send(JobFetchable(job_id=1))
        assert manager.wait_for_job(1, timeout=10) is JobState.COMPLETED
        assert (tmp_path / "state" / "output" / "office" / "job-1-doc-1.pdf").read_bytes() == pdf
        wait(lambda: cloud.fake.jobs[1].job.state is JobState.COMPLETED)
        assert manager.jobs() == {} and manager.service_state("office")[0] == "idle"

        # Connection lost: the broker publishes the Will; paho reconnects; Hello again.
        manager.drop_connection()
        wait(lambda: [p.state for p in cloud.presence][-1:] == ["offline"])
        wait(lambda: len(cloud.fake.of(Hello)) == 2, timeout=15)
        assert manager.connected.wait(5)
        wait(lambda: [p.state for p in cloud.presence][-1:] == ["online"])
        first, will, second = cloud.presence
        assert first.session and first.session == will.session != second.session  # one id per connection

        # A job sent while the device is away arrives through the Sync answering Hello.
        cloud.fake.add(2, [(make_pdf(1), "application/pdf")])
        manager.drop_connection()
        assert manager.wait_for_job(2, timeout=20) is JobState.COMPLETED
        manager.stop(timeout=10)
        wait(lambda: bool(cloud.fake.of(Bye)) and cloud.presence[-1].state == "offline", timeout=5)
    finally:
        manager.stop(timeout=10)
        cloud.close()
    assert manager.stopped.is_set() and not manager.running
    assert len(cloud.fake.of(Bye)) == 1
    assert not any(t.name.startswith("manager-") for t in threading.enumerate())


def test_bad_password_never_connects_and_stops_cleanly(broker: int, pki: Pki, tmp_path: Path) -> None:
    config = ManagerConfig(
        device_id=DEVICE,
        broker_url=f"mqtts://127.0.0.1:{broker}",
        password="wrong",
        ca_file=pki.ca_cert,
        state_dir=tmp_path / "state",
        services=[{"name": "office", "driver": "file"}],
    )  # type: ignore[list-item]
    manager = Manager(config)
    manager.start()
    assert not manager.connected.wait(1.5)
    started = time.monotonic()
    manager.stop(timeout=5)
    assert time.monotonic() - started < 5 and not manager.running


def test_cli_runs_in_the_foreground_until_sigterm(broker: int, pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(
        f'device_id = "{DEVICE}"\nbroker_url = "mqtts://127.0.0.1:{broker}"\n'
        f'password = "device-pw"\nca_file = "{pki.ca_cert}"\nstate_dir = "state"\n'
        '[[services]]\nname = "office"\ndriver = "simulated"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager", "--config", str(config)],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        wait(lambda: any("-> hello" in line for line in lines), timeout=15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        reader.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    output = "".join(lines)
    assert "-> presence state=online" in output and "-> attributes office=idle" in output
    assert "-> bye reason=shutdown" in output and "manager printer-7 stopped" in output
