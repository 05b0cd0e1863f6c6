"""Helpers for the security tests: a stack wired for revocation, users with tokens, devices
enrolled with the real ``cloudimaging manager enroll`` verb, and MQTT clients holding a
device certificate. Everything on 127.0.0.1, ephemeral ports, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from broker.credentials import generate_password
from broker.pki import Pki, ensure_pki, write_crl
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from tests.support.brokers import MOSQUITTO_DIR, MosquittoHandle, embedded_broker, find_mosquitto, free_port
from tests.support.stack import Stack, async_wrap, serving

ADMIN = "admin"


class MtlsMosquitto(MosquittoHandle):
    """deploy/mosquitto with its mTLS device listener appended (mtls-listener.conf.template)."""

    device_port: int = 0

    def _render(self) -> None:
        import string

        super()._render()
        self.device_port = free_port(self.host)
        template = string.Template((MOSQUITTO_DIR / "mtls-listener.conf.template").read_text())
        extra = template.substitute({
            "BIND_HOST": self.host, "DEVICE_PORT": str(self.device_port), "CAFILE": str(self.pki.ca_cert),
            "CERTFILE": str(self.pki.server_cert), "KEYFILE": str(self.pki.server_key),
            "CRLFILE": str(self.pki.crl)})
        with self.conf.open("a") as fh:
            fh.write("\n" + extra)

    @property
    def device_url(self) -> str:
        return f"mqtts://{self.host}:{self.device_port}"


@contextlib.contextmanager
def mtls_mosquitto(directory: Path, pki: Pki) -> Iterator[MtlsMosquitto]:
    binary, passwd_tool = find_mosquitto()
    directory.mkdir(parents=True, exist_ok=True)
    if not pki.crl.exists():
        write_crl(pki, [])  # Mosquitto will not start without its crlfile
    handle = MtlsMosquitto(directory, pki, binary, passwd_tool)
    try:
        handle.start()
        yield handle
    finally:
        handle.stop()


@dataclass
class SecureStack(Stack):
    """A Stack whose service can revoke: it knows the broker's password file and reload."""

    async def client(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.service.url, verify=str(self.ca), timeout=20.0,
                                 headers={"Authorization": f"Bearer {token}"})

    async def make_user(self, name: str, role: str = "user", groups: list[str] | None = None,
                        kind: str = "person") -> str:
        """Create a user through the admin API; return their first token."""
        response = await self.http.post("/api/v1/users", json={"name": name, "role": role, "kind": kind,
                                                               "groups": groups or [], "token": True})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    @property
    def device_broker_url(self) -> str:
        return getattr(self.broker, "device_url", self.broker.url)

    async def enroll(self, token: str, device_id: str, code: str | None = None) -> Path:
        """Register (unless ``code`` is given) and enroll with the CLI verb; the config path."""
        if code is None:
            async with await self.client(token) as http:
                response = await http.post("/api/v1/devices", json={"device_id": device_id})
            assert response.status_code == 201, response.text
            code = response.json()["enrollment_code"]
        directory = self.tmp / "devices" / device_id
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "manager.json"
        if not config.exists():
            config.write_text(json.dumps({
                "device_id": device_id, "state_dir": "state", "keepalive": 5, "request_timeout": 3.0,
                "services": [{"kind": "print", "name": device_id, "driver": "file",
                              "driver_options": {"output_dir": str(directory / "output")},
                              "capabilities": SIMULATED_PRINTER_CAPABILITIES, "make_and_model": "enrolled printer"}]}))
        code_run = await asyncio.to_thread(cli, ["manager", "enroll", code, "--url", self.service.url, "--ca",
                                                 str(self.ca), "--config", str(config)])
        assert code_run == 0, "enrollment failed"
        return config

    async def start_enrolled(self, config: Path, wait_online: bool = True) -> Any:
        from manager.app import Manager
        from manager.config import load_config

        loaded = load_config(config)
        manager = Manager(loaded)
        await asyncio.to_thread(manager.start)
        self.managers[loaded.device_id] = manager
        if wait_online:
            await self.wait_service(loaded.device_id)
        return manager


def cli(argv: list[str]) -> int:
    from client.cli import main

    return main(argv)


@contextlib.asynccontextmanager
async def secure_stack(tmp: Path, broker: str = "embedded", **options: Any) -> AsyncIterator[SecureStack]:
    """Broker + service, the service configured to revoke on that broker; admin token in .http."""
    service_password = generate_password()
    if broker == "embedded":
        broker_cm: Any = embedded_broker(tmp / "broker")
    else:
        broker_cm = async_wrap(mtls_mosquitto(tmp / "mosquitto", ensure_pki(tmp / "pki")))
    async with broker_cm as b:
        await asyncio.to_thread(b.add_user, "cloud-service", service_password)
        extra: dict[str, Any] = {"broker_password_file": b.passwd, "pki_dir": b.pki.ca_cert.parent,
                                 "sweep_interval": 3600.0}
        if broker == "mosquitto":
            extra.update(broker_kind="mosquitto", device_broker_url=b.device_url,
                         broker_reload_command=[_hup_script(tmp), str(b.process.pid)])
        extra.update(options)
        async with serving(SecureStack, tmp, b, service_password, ADMIN, **extra) as stack:
            yield stack


def _hup_script(tmp: Path) -> str:
    """A reload command for a test's own Mosquitto: SIGHUP to the pid it is given, then a short
    pause so the reload has happened when the service goes on (Mosquitto reloads in its loop)."""
    script = tmp / "reload-mosquitto"
    script.write_text("#!/bin/sh\nkill -HUP \"$1\" && sleep 0.3\n")
    os.chmod(script, 0o700)
    return str(script)



def cert_context(ca: Path, cert: Path, key: Path) -> Any:
    """A TLS client context presenting a device certificate."""
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(cert, key)
    return context


class CertBroker:
    """Looks like a broker handle to MqttTestClient, but its TLS context carries a certificate."""

    def __init__(self, url: str, ca: Path, cert: Path, key: Path) -> None:
        self.url = url
        self.pki = self
        self._files = (ca, cert, key)

    def client_context(self) -> Any:
        return cert_context(*self._files)


def make_device_cert(pki: Pki, directory: Path, device_id: str) -> tuple[Path, Path, int]:
    """A client certificate for ``device_id`` straight from the CA (broker-level tests)."""
    from cryptography.hazmat.primitives import serialization

    from broker.pki import issue_device_cert
    from manager.enroll import make_key_and_csr

    key, csr = make_key_and_csr()
    cert = issue_device_cert(pki, csr, device_id)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{device_id}.pem", directory / f"{device_id}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.serial_number


def kill_hup(pid: int) -> None:
    os.kill(pid, signal.SIGHUP)
