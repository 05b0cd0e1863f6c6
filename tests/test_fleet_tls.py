"""The bench fleet's TLS client: a device that connects after another resumes the TLS session
the broker issued (Mosquitto and the embedded broker both issue tickets), and each device is
still its own MQTT session, authenticated by its own password."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.brokers import embedded_broker, mosquitto_broker
from tests.support.fleet import FleetContext, FleetDevice, client_context, connect_all


async def _connect_in_turn(host: str, port: int, ca: Path, users: dict[str, str], resume: bool) -> list[bool]:
    ctx = FleetContext(host=host, port=port, tls=client_context(str(ca), resume))
    devices = [FleetDevice(ctx, name, password) for name, password in users.items()]
    try:
        assert await connect_all(devices, concurrency=1, service=False) == []
        return [d.session.resumed for d in devices]
    finally:
        await asyncio.gather(*(d.close() for d in devices))


async def _wrong_password_refused(host: str, port: int, ca: Path, name: str) -> None:
    ctx = FleetContext(host=host, port=port, tls=client_context(str(ca), resume=True))
    device = FleetDevice(ctx, name, "not-the-password")
    try:
        assert await connect_all([device], concurrency=1, service=False) != []
    finally:
        await device.close()


async def test_fleet_resumes_tls_sessions_on_mosquitto(tmp_path: Path) -> None:
    with mosquitto_broker(tmp_path) as broker:
        users = {f"fleet-{i}": broker.add_user(f"fleet-{i}") for i in range(4)}
        resumed = await _connect_in_turn(broker.host, broker.port, broker.pki.ca_cert, users, resume=True)
        assert resumed == [False, True, True, True]
        full = await _connect_in_turn(broker.host, broker.port, broker.pki.ca_cert, users, resume=False)
        assert full == [False] * 4
        await _wrong_password_refused(broker.host, broker.port, broker.pki.ca_cert, "fleet-0")


async def test_fleet_resumes_tls_sessions_on_the_embedded_broker(tmp_path: Path) -> None:
    async with embedded_broker(tmp_path) as broker:
        users = {f"fleet-{i}": broker.add_user(f"fleet-{i}") for i in range(3)}
        resumed = await _connect_in_turn(broker.host, broker.port, broker.pki.ca_cert, users, resume=True)
        assert resumed == [False, True, True]
        await _wrong_password_refused(broker.host, broker.port, broker.pki.ca_cert, "fleet-1")

