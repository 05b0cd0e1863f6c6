"""A whole stack for end-to-end tests: a real broker, the real service, real Managers, TLS on.

``async with running_stack(tmp_path, broker="embedded"|"mosquitto") as stack:`` starts the
broker on an ephemeral 127.0.0.1 port, the service on another, and gives helpers to add
Managers (in-process, as `cloudimaging up` runs them) and to talk HTTP with an admin token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from broker.credentials import generate_password
from cloud_service.app import CloudService
from cloud_service.config import ServiceConfig
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from schemas.enums import JobState


@dataclass
class Stack:
    tmp: Path
    broker: Any
    service: CloudService
    token: str
    http: httpx.AsyncClient
    managers: dict[str, Any] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.broker.pki.ca_cert

    def manager_config(self, device_id: str, driver: str = "file", options: dict | None = None,
                       capabilities: dict | None = None, password: str | None = None,
                       services: list[dict] | None = None) -> dict[str, Any]:
        """One device's Manager config; ``services`` (of any kinds) replaces the print service."""
        out = self.tmp / "devices" / device_id / "output"
        if services is not None:
            return {"device_id": device_id, "broker_url": self.broker.url, "password": password,
                    "ca_file": str(self.ca), "state_dir": str(self.tmp / "devices" / device_id / "state"),
                    "keepalive": 5, "request_timeout": 3.0, "services": services}
        return {
            "device_id": device_id, "broker_url": self.broker.url, "password": password,
            "ca_file": str(self.ca), "state_dir": str(self.tmp / "devices" / device_id / "state"),
            "keepalive": 5, "request_timeout": 3.0,
            "services": [{"kind": "print", "name": device_id, "driver": driver,
                          "driver_options": {"output_dir": str(out), **(options or {})},
                          "capabilities": capabilities or SIMULATED_PRINTER_CAPABILITIES,
                          "make_and_model": "test printer"}],
        }

    async def add_manager(self, device_id: str, driver: str = "file", options: dict | None = None,
                          capabilities: dict | None = None, wait_online: bool = True,
                          services: list[dict] | None = None) -> Any:
        from manager.app import Manager
        from manager.config import ManagerConfig

        password = generate_password()
        await self.add_user(device_id, password)
        config = ManagerConfig.model_validate(self.manager_config(device_id, driver, options, capabilities,
                                                                  password, services))
        manager = Manager(config)
        await asyncio.to_thread(manager.start)
        self.managers[device_id] = manager
        if wait_online:
            first = (services or [{"kind": "print", "name": device_id}])[0]
            await self.wait_service(first["name"], kind=first.get("kind", "print"))
        return manager

    async def add_user(self, name: str, password: str) -> None:
        await asyncio.to_thread(self.broker.add_user, name, password)

    async def stop_manager(self, device_id: str) -> None:
        manager = self.managers.pop(device_id)
        await asyncio.to_thread(manager.stop, 10.0)

    def output_dir(self, device_id: str) -> Path:
        return self.tmp / "devices" / device_id / "output"

    async def wait_service(self, name: str, timeout: float = 20.0, online: bool = True,
                           kind: str = "print") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = await self.http.get(f"/api/v1/services/{kind}/{name}")
            if response.status_code == 200 and response.json()["online"] == online:
                return response.json()
            await asyncio.sleep(0.1)
        raise AssertionError(f"service {name} not {'online' if online else 'offline'} within {timeout}s")

    async def submit(self, data: bytes, ticket: dict | None = None, service: str | None = None,
                     fmt: str = "application/pdf", name: str = "doc.pdf") -> httpx.Response:
        import orjson

        job = {"ticket": ticket or {}, "service": service, "document_format": fmt, "document_name": name}
        return await self.http.post("/api/v1/jobs", files={"job": (None, orjson.dumps(job), "application/json"),
                                                           "document": (name, data, fmt)})

    async def wait_job(self, job_id: int, until: Callable[[dict], bool] | None = None,
                       timeout: float = 30.0) -> dict:
        until = until or (lambda job: JobState(job["state"]).terminal)
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = (await self.http.get(f"/api/v1/jobs/{job_id}")).json()
            if until(job):
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} did not reach the expected state in {timeout}s: {job}")


S = TypeVar("S", bound=Stack)


@contextlib.asynccontextmanager
async def running_stack(tmp: Path, broker: str = "embedded", **config: Any) -> AsyncIterator[Stack]:
    """``config``: more ServiceConfig fields, e.g. ``database_url``."""
    from tests.support.brokers import embedded_broker, mosquitto_broker

    service_password = generate_password()
    if broker == "embedded":
        broker_cm: Any = embedded_broker(tmp / "broker")
    else:
        from broker.pki import ensure_pki

        broker_cm = async_wrap(mosquitto_broker(tmp / "mosquitto", ensure_pki(tmp / "pki")))
    async with broker_cm as b:
        await asyncio.to_thread(b.add_user, "cloud-service", service_password)
        async with serving(Stack, tmp, b, service_password, **config) as stack:
            yield stack


@contextlib.asynccontextmanager
async def serving(make: Callable[..., S], tmp: Path, b: Any, service_password: str, admin: str = "admin",
                  **config: Any) -> AsyncIterator[S]:
    """The real service on broker ``b`` (TLS on its CA), an admin token, and ``make(tmp, b, service,
    token, http)``; stops the stack's Managers and the service at the end."""
    service = CloudService(ServiceConfig(
        data_dir=tmp / "service", broker_url=b.url, broker_password=service_password, ca_file=b.pki.ca_cert,
        tls_cert=b.pki.server_cert, tls_key=b.pki.server_key, http_host="127.0.0.1", http_port=0, keepalive=5,
        **config))
    await service.start()
    assert service.mqtt.connected.is_set(), "service did not connect to the broker"
    token = await service.create_token(admin, "admin")
    async with httpx.AsyncClient(base_url=service.url, verify=str(b.pki.ca_cert), timeout=20.0,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        stack = make(tmp, b, service, token, http)
        try:
            yield stack
        finally:
            for device_id in list(stack.managers):
                await stack.stop_manager(device_id)
            await service.stop()


@contextlib.asynccontextmanager
async def async_wrap(cm: Any) -> AsyncIterator[Any]:
    with cm as value:
        yield value
