"""The service's MQTT identity and subscriptions: a unique client id by default (replicas must
not knock each other off) that the embedded broker accepts for the service user, and shared
subscriptions only when a group is configured; on Mosquitto, a stable client id resumes its
MQTT 5 session (what came while it was away is delivered) and a generated one starts clean."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker import acl
from cloud_service.clf import ClfLog
from cloud_service.config import ServiceConfig
from cloud_service.mqtt import MqttAdapter, default_client_id, service_subscriptions, shared_filter
from schemas import topics
from tests.support.brokers import MqttTestClient, mosquitto_broker


def test_default_client_ids_are_unique_and_accepted_by_the_embedded_broker() -> None:
    ids = {default_client_id() for _ in range(50)}
    assert len(ids) == 50
    for client_id in ids:
        assert client_id.startswith(topics.SERVICE_USERNAME + "-")
        assert acl.client_id_allowed(topics.SERVICE_USERNAME, client_id)
        assert all(ch.isalnum() or ch == "-" for ch in client_id)


def test_plain_subscriptions_without_a_group() -> None:
    assert service_subscriptions(None) == list(topics.SERVICE_SUBSCRIPTIONS)


def test_shared_subscriptions_with_a_group() -> None:
    assert service_subscriptions("cloud") == ["$share/cloud/ci/v1/dev/+/up", "$share/cloud/ci/v1/dev/+/presence"]


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_invalid_group_names_are_refused(group: str) -> None:
    with pytest.raises(ValueError):
        shared_filter(group, "ci/v1/dev/+/up")
    if group:
        with pytest.raises(ValidationError):
            ServiceConfig(mqtt_shared_group=group)


def test_config_defaults_keep_the_embedded_stack_as_it_was() -> None:
    config = ServiceConfig()
    assert config.mqtt_shared_group is None and config.mqtt_client_id is None and config.mqtt_session_expiry == 0


# -- sessions on Mosquitto 2 (TLS, the deploy/mosquitto ACL) ------------------------------------


class _Counting:
    """Stands in for DeviceProtocol: counts what the adapter hands over."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def handle(self, device_id: str, leaf: str, payload: bytes) -> list:
        self.seen.append((device_id, leaf))
        return []


def _crash(adapter: MqttAdapter) -> None:
    """The process dies: the network stops and the socket closes without DISCONNECT."""
    adapter.abandon()


async def _session_keeps_messages(tmp_path: Path, client_id: str | None) -> int:
    """A replica crashes, the device sends 5 messages, a replica with the same settings comes
    back: how many of the 5 it is given."""
    with mosquitto_broker(tmp_path / "mosquitto") as broker:
        password = await asyncio.to_thread(broker.add_user, topics.SERVICE_USERNAME)
        device_password = await asyncio.to_thread(broker.add_user, "dev-a")
        clf = ClfLog(tmp_path / "access.log")

        def adapter(protocol: _Counting) -> MqttAdapter:
            return MqttAdapter(broker.url, topics.SERVICE_USERNAME, password, broker.pki.ca_cert,
                               protocol, clf, client_id=client_id, shared_group="cloud",  # type: ignore[arg-type]
                               session_expiry=60)

        first = adapter(_Counting())
        await first.start()
        assert first.connected.is_set()
        await asyncio.sleep(0.5)  # SUBACK
        _crash(first)
        await first.inbox.stop()
        await asyncio.sleep(0.5)  # the broker notices the closed socket
        with MqttTestClient(broker, "dev-a", device_password) as device:
            assert await asyncio.to_thread(device.connect) == 0
            for n in range(5):
                assert await asyncio.to_thread(device.publish, topics.up("dev-a"), b"m%d" % n)
        again = _Counting()
        second = adapter(again)
        await second.start()
        deadline = time.monotonic() + 5
        while len(again.seen) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await second.stop()
        clf.close()
        return len(again.seen)


@pytest.mark.mosquitto
async def test_a_stable_client_id_gets_what_came_while_it_was_away(tmp_path: Path) -> None:
    assert await _session_keeps_messages(tmp_path, "cloud-service-stable") == 5


@pytest.mark.mosquitto
async def test_a_generated_client_id_starts_clean(tmp_path: Path) -> None:
    assert await _session_keeps_messages(tmp_path, None) == 0


# -- the session on the event loop ----------------------------------------------------------------


async def _until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.mosquitto
async def test_the_session_runs_on_the_event_loop_through_bursts_and_a_broker_restart(tmp_path: Path) -> None:
    """No paho thread: bursts both ways cross whole (several packets per TLS record, read on
    while the TLS buffer holds some), the session comes back after the broker restarts, and a
    stop says DISCONNECT."""
    with mosquitto_broker(tmp_path / "mosquitto") as broker:
        password = await asyncio.to_thread(broker.add_user, topics.SERVICE_USERNAME)
        device_password = await asyncio.to_thread(broker.add_user, "dev-a")
        clf = ClfLog(tmp_path / "access.log")
        seen = _Counting()
        adapter = MqttAdapter(broker.url, topics.SERVICE_USERNAME, password, broker.pki.ca_cert,
                              seen, clf, keepalive=5)  # type: ignore[arg-type]
        await adapter.start()
        try:
            assert adapter.connected.is_set()
            assert not [t.name for t in threading.enumerate() if t.name.startswith("paho")]
            await asyncio.sleep(0.3)  # SUBACK

            def burst(count: int) -> None:
                with MqttTestClient(broker, "dev-a", device_password) as device:
                    assert device.connect() == 0
                    assert device.subscribe(topics.down("dev-a")) == [1]
                    infos = [device.client.publish(topics.up("dev-a"), b"m%d" % n, qos=1) for n in range(count)]
                    for info in infos:
                        info.wait_for_publish(10)
                    for n in range(count):  # and the other way: the service publishes a burst
                        adapter.client.publish(topics.down("dev-a"), b"d%d" % n, qos=1)
                    got = device.collect(3.0) if count else []
                    assert len(got) == count, len(got)

            loop = asyncio.get_running_loop()
            # The adapter's publish runs on the loop in the service; here the burst is queued
            # from the test's thread, which paho allows, and written by the loop.
            await loop.run_in_executor(None, burst, 300)
            assert await _until(lambda: len(seen.seen) == 300, 10), len(seen.seen)

            broker.stop()
            assert await _until(lambda: not adapter.connected.is_set(), 10)
            await asyncio.to_thread(broker.start)  # same port
            assert await _until(adapter.connected.is_set, 15)
            await asyncio.sleep(0.3)  # SUBACK
            await loop.run_in_executor(None, burst, 20)
            assert await _until(lambda: len(seen.seen) == 320, 10), len(seen.seen)
        finally:
            await adapter.stop()
            clf.close()
        assert adapter.client.socket() is None
        # The broker names clients by username (deploy/mosquitto: use_username_as_clientid); a
        # socket closed without DISCONNECT would read "closed its connection".
        said = [line for line in broker.log_path.read_text(errors="replace").splitlines()
                if f"Client {topics.SERVICE_USERNAME} " in line]
        assert said and said[-1].endswith(f"Client {topics.SERVICE_USERNAME} disconnected."), said
