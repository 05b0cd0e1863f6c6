"""A device connecting (presence online, hello, attributes) on the real DeviceProtocol and
JobStore (SQLite and PostgreSQL, no broker): what it costs the database, and that coalescing the
online presence loses nothing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud_service import devices as devices_module
from cloud_service.devices import DeviceProtocol
from cloud_service.store import JobStore
from schemas.enums import ServiceKind
from schemas.messages import Attributes, Hello, Presence, PrintServiceAttributes, Reply, Sync, decode_down, encode
from tests.support.hops import count_hops
from tests.support.inprocess import service_parts


@dataclass
class Parts:
    store: JobStore
    devices: DeviceProtocol
    hops: list[str]

    async def up(self, device_id: str, message: Attributes | Hello) -> Reply | Sync:
        out = await self.devices.handle(device_id, "up", encode(message))
        (answer,) = [decode_down(encode(m)) for _, m in out]
        assert isinstance(answer, Reply | Sync)
        return answer

    async def presence(self, device_id: str, state: str, session: str) -> None:
        assert await self.devices.handle(device_id, "presence",
                                         encode(Presence(state=state, session=session))) == []  # type: ignore[arg-type]


@pytest.fixture
async def parts(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Parts]:
    async with service_parts(tmp_path, database_url=database_url) as p:
        store = p.store
        hops = count_hops(monkeypatch, store)
        devices = p.devices()
        try:
            yield Parts(store, devices, hops)
        finally:
            await devices.close()


def office(state: str = "idle") -> Attributes:
    return Attributes(services=[PrintServiceAttributes(name="office", state=state)])  # type: ignore[arg-type]


async def test_a_device_connecting_costs_two_transactions(parts: Parts) -> None:
    """The online presence is written with the hello (one transaction), the services with the
    attributes (another); the device is then online with its session and services."""
    await parts.presence("dev-1", "online", "s1")
    sync = await parts.up("dev-1", Hello(software="fw 1"))
    reply = await parts.up("dev-1", office())
    assert isinstance(sync, Sync) and isinstance(reply, Reply) and reply.ok
    assert len(parts.hops) == 2, parts.hops
    device = await parts.store.device("dev-1")
    assert device is not None and device.online and device.session == "s1" and device.software == "fw 1"
    assert device.last_seen is not None
    assert await parts.store.service(ServiceKind.PRINT.value, "office") is not None


async def test_unchanged_attributes_write_no_service(parts: Parts) -> None:
    await parts.presence("dev-1", "online", "s1")
    assert (await parts.up("dev-1", office())).ok  # type: ignore[union-attr]
    first = await parts.store.service(ServiceKind.PRINT.value, "office")
    assert first is not None
    await asyncio.sleep(0.01)
    assert (await parts.up("dev-1", office())).ok  # type: ignore[union-attr]
    same = await parts.store.service(ServiceKind.PRINT.value, "office")
    assert same is not None and same.updated_at == first.updated_at and same.state == "idle"
    assert (await parts.up("dev-1", office("processing"))).ok  # type: ignore[union-attr]
    changed = await parts.store.service(ServiceKind.PRINT.value, "office")
    assert changed is not None and changed.state == "processing" and changed.updated_at > first.updated_at


async def test_a_state_change_takes_no_lock_a_new_service_does(parts: Parts) -> None:
    """A device reporting a new state of its own service is one hop that takes no lock (on
    PostgreSQL, no transaction either): it goes through while another transaction holds the
    device's row. A message that adds a service takes the lock (the cap on services is counted
    under it) and waits for it."""
    await parts.presence("dev-1", "online", "s1")
    assert (await parts.up("dev-1", office())).ok  # type: ignore[union-attr]
    parts.hops.clear()
    lobby = PrintServiceAttributes(name="lobby", state="idle")  # type: ignore[arg-type]
    if parts.store.engine.dialect.name != "postgresql":  # SQLite has no row locks: the hops only
        assert (await parts.up("dev-1", office("processing"))).ok  # type: ignore[union-attr]
        assert parts.hops == ["JobStore.upsert_services.<locals>.<lambda>"], parts.hops
        assert (await parts.up("dev-1", Attributes(services=[office().services[0], lobby]))).ok  # type: ignore[union-attr]
        assert len(parts.hops) == 2, parts.hops  # a service not seen before: the locked path at once
    else:
        async with parts.store.engine.connect() as locker:
            await locker.begin()
            await locker.execute(text("SELECT id FROM devices WHERE id = 'dev-1' FOR UPDATE"))
            reply = await asyncio.wait_for(parts.up("dev-1", office("processing")), 10)
            assert reply.ok and len(parts.hops) == 1, parts.hops  # type: ignore[union-attr]
            adding = asyncio.create_task(parts.up("dev-1", Attributes(services=[office().services[0], lobby])))
            await asyncio.sleep(0.5)
            assert not adding.done()  # waits for the lock
            await locker.rollback()
        assert (await asyncio.wait_for(adding, 10)).ok  # type: ignore[union-attr]
    assert (await parts.store.service(ServiceKind.PRINT.value, "lobby")) is not None
    now = await parts.store.service(ServiceKind.PRINT.value, "office")
    assert now is not None and now.state == "idle"


async def test_online_presences_without_a_message_are_written_together(
        parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices_module, "PRESENCE_COALESCE", 0.05)
    for i in range(5):
        await parts.presence(f"dev-{i}", "online", f"s{i}")
    assert parts.hops == []
    for _ in range(200):
        if parts.hops:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert parts.hops == ["JobStore.set_devices.<locals>.work"]
    for i in range(5):
        device = await parts.store.device(f"dev-{i}")
        assert device is not None and device.online and device.session == f"s{i}"


async def test_a_failing_presence_write_is_retried_with_growing_waits(
        parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the database refuses the write, the waiting presences are kept and tried again,
    each wait twice the last (up to a bound), and written once it works."""
    monkeypatch.setattr(devices_module, "PRESENCE_COALESCE", 0.02)
    monkeypatch.setattr(devices_module, "PRESENCE_RETRY_MAX", 0.08)
    real = parts.store.set_devices
    tries: list[float] = []

    async def failing(pending):  # type: ignore[no-untyped-def]
        tries.append(time.monotonic())
        if len(tries) <= 4:
            raise OSError("database unreachable")
        return await real(pending)

    monkeypatch.setattr(parts.store, "set_devices", failing)
    await parts.presence("dev-1", "online", "s1")
    for _ in range(300):
        device = await parts.store.device("dev-1")
        if device is not None and device.online:
            break
        await asyncio.sleep(0.01)
    assert device is not None and device.online and device.session == "s1"
    assert len(tries) == 5
    waits = [b - a for a, b in itertools.pairwise(tries)]
    # 0.04, 0.08, 0.08, 0.08 s: doubling, then bounded (unbounded: 0.16 and 0.32 last; timers
    # only ever run late)
    assert waits[0] >= 0.04 and waits[1] >= 0.08 and waits[2] >= 0.08 and waits[3] >= 0.08, waits
    assert waits[2] + waits[3] < 0.4, waits


async def test_the_last_will_of_a_pending_online_presence(parts: Parts) -> None:
    """A Last Will of an earlier connection is ignored even while the new connection's online
    presence is not written yet; the will of the current connection takes the device offline."""
    await parts.presence("dev-1", "online", "s1")
    await parts.up("dev-1", Hello(software="fw 1"))
    await parts.presence("dev-1", "online", "s2")
    await parts.presence("dev-1", "offline", "s1")  # the late will of the first connection
    await parts.devices.flush()
    device = await parts.store.device("dev-1")
    assert device is not None and device.online and device.session == "s2"
    await parts.presence("dev-1", "online", "s3")
    await parts.presence("dev-1", "offline", "s3")
    await parts.devices.flush()
    device = await parts.store.device("dev-1")
    assert device is not None and not device.online



async def test_a_pending_online_presence_never_overwrites_a_later_offline(parts: Parts) -> None:
    """The service may record a device offline by itself (its password revoked on Mosquitto)
    while the device's online presence still waits: the flush leaves the later state alone."""
    await parts.presence("dev-1", "online", "s1")
    await parts.store.set_device("dev-1", online=False, last_seen=time.time() + 1)
    await parts.devices.flush()
    device = await parts.store.device("dev-1")
    assert device is not None and not device.online


async def test_with_several_replicas_an_online_presence_is_written_at_once(parts: Parts) -> None:
    """Another replica may get the device's hello or its Last Will: it must find the session."""
    devices = DeviceProtocol(parts.store, parts.devices.documents, parts.devices.clf, coalesce_presence=False)
    assert await devices.handle("dev-1", "presence", encode(Presence(state="online", session="s1"))) == []
    assert len(parts.hops) == 1
    device = await parts.store.device("dev-1")
    assert device is not None and device.online and device.session == "s1"
    parts.hops.clear()
    sync = await devices.handle("dev-1", "up", encode(Hello(software="fw 1")))
    assert len(sync) == 1 and len(parts.hops) == 1  # the hello's own transaction, nothing more
