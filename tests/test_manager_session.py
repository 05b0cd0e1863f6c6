"""The whole Manager (threads, paho session, TLS, Will, reconnect, Bye) against a real broker.

Mosquitto runs on 127.0.0.1 with TLS and passwords; the service side is the real
DeviceProtocol (tests.support.devicelink) behind a plain paho client, so this tests the
Manager's MQTT plumbing against the real protocol rules without the rest of the Cloud Service
(the end-to-end tests run that).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.pki import Pki
from manager import Manager, ManagerConfig
from schemas import topics
from schemas.enums import JobState
from schemas.messages import Bye, Hello, JobFetchable
from tests.support.brokers import terminate
from tests.support.devicelink import ServiceSide, service_side
from tests.support.documents import make_pdf

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(MOSQUITTO is None or shutil.which("mosquitto_passwd") is None, reason="mosquitto not installed"),
]
DEVICE = "printer-7"
SERVICE_USER = "cloud-service"
T = TypeVar("T")


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
        terminate(proc)


class CloudSide:
    """The real service's device side (tests.support.devicelink, on its own loop thread)
    behind a paho client with the service's credentials: what the Manager publishes goes to
    DeviceProtocol, what the service sends goes back on the device's down topic."""

    def __init__(self, port: int, pki: Pki, directory: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cloud-side", daemon=True)
        self._thread.start()
        self._context = service_side(directory, pki, DEVICE)
        self.side: ServiceSide = self.call(self._context.__aenter__())
        self.link = self.side.link
        self.link.to_device = self._send
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

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def job_state(self, job_id: int) -> str:
        return self.call(self.side.state(job_id))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.link.publish, message.topic, message.payload)

    def _send(self, data: bytes) -> None:
        self.client.publish(topics.down(DEVICE), data, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.call(self._context.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def test_manager_over_a_real_broker(broker: int, pki: Pki, tmp_path: Path) -> None:
    cloud = CloudSide(broker, pki, tmp_path / "service")
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
        wait(lambda: [p.state for p in cloud.link.presence] == ["online"])
        assert len(cloud.link.of(Hello)) == 1
        wait(lambda: cloud.call(cloud.side.store.service("print", "office")) is not None)  # attributes applied

        pdf = make_pdf(2)
        first = cloud.call(cloud.side.add_job([(pdf, "application/pdf")]))  # the doorbell rings
        assert manager.wait_for_job(first, timeout=10) is JobState.COMPLETED
        assert (tmp_path / "state" / "output" / "office" / f"job-{first}-doc-1.pdf").read_bytes() == pdf
        wait(lambda: cloud.job_state(first) == JobState.COMPLETED)
        assert manager.jobs() == {} and manager.service_state("office")[0] == "idle"

        # Connection lost: the broker publishes the Will; paho reconnects; Hello again.
        manager.drop_connection()
        wait(lambda: [p.state for p in cloud.link.presence][-1:] == ["offline"])
        wait(lambda: len(cloud.link.of(Hello)) == 2, timeout=15)
        assert manager.connected.wait(5)
        wait(lambda: [p.state for p in cloud.link.presence][-1:] == ["online"])
        first_on, will, second_on = cloud.link.presence
        assert first_on.session and first_on.session == will.session != second_on.session  # one id per connection

        # A job whose doorbell is lost arrives through the Sync answering the next Hello.
        cloud.link.lose_down = lambda m: isinstance(m, JobFetchable)
        second = cloud.call(cloud.side.add_job([(make_pdf(1), "application/pdf")]))
        manager.drop_connection()
        assert manager.wait_for_job(second, timeout=20) is JobState.COMPLETED
        manager.stop(timeout=10)
        wait(lambda: bool(cloud.link.of(Bye)) and cloud.link.presence[-1].state == "offline", timeout=5)
    finally:
        manager.stop(timeout=10)
        cloud.close()
    assert manager.stopped.is_set() and not manager.running
    assert len(cloud.link.of(Bye)) == 1
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
