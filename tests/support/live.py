"""The real stack for client tests, on a background event loop, shared by a test module.

``LiveStack`` runs :func:`tests.support.stack.running_stack` (real broker over TLS, the real
service, one real Manager) in a thread of its own, so sync tests call the client and the CLI
directly. The Manager ("lab") has simulated print services that behave differently:

- ``office``: prints quickly; sides one-sided or two-sided-long-edge only;
- ``slow``: five pages a second, so a job can be watched or canceled while it prints;
- ``rejecting``: refuses every job at fetch (the job is aborted);
- ``parked``: its device is stopped, so jobs sent there stay pending;
- ``lab-scanner``: a simulated scanner (feeder of 2 sheets).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from client.api import CloudImagingClient
from manager.drivers.scanner import SIMULATED_SCANNER_CAPABILITIES
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from tests.support.stack import Stack, running_stack

T = TypeVar("T")

OFFICE_CAPABILITIES = {**SIMULATED_PRINTER_CAPABILITIES, "sides-supported": ["one-sided", "two-sided-long-edge"]}


def print_service(name: str, capabilities: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    return {"kind": "print", "name": name, "driver": "simulated", "driver_options": options,
            "capabilities": capabilities or SIMULATED_PRINTER_CAPABILITIES, "make_and_model": f"Simulated {name}",
            "info": f"{name} printer", "location": "2nd floor"}


class LiveStack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._exit = contextlib.AsyncExitStack()
        self.stack: Stack

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LiveStack:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.stack = await self._exit.enter_async_context(running_stack(self.tmp))
        await self.stack.add_manager("lab", services=[
            print_service("office", OFFICE_CAPABILITIES, pages_per_second=50),
            print_service("slow", pages_per_second=5),
            print_service("rejecting", reject=True),
            {"kind": "scan", "name": "lab-scanner", "driver": "simulated-scanner",
             "driver_options": {"adf_sheets": 2, "pages_per_second": 50},
             "capabilities": SIMULATED_SCANNER_CAPABILITIES, "make_and_model": "Simulated scanner"},
        ])
        for name in ("slow", "rejecting"):
            await self.stack.wait_service(name)
        await self.stack.wait_service("lab-scanner", kind="scan")
        await self.stack.add_manager("shelf", services=[print_service("parked")])
        await self.stack.stop_manager("shelf")
        await self.stack.wait_service("parked", online=False)
        for device in ("lab", "shelf"):  # every user may print on them
            response = await self.stack.http.post(f"/api/v1/devices/{device}/shares", json={"everyone": True})
            assert response.status_code == 201, response.text

    def stop(self) -> None:
        try:
            self.call(self._exit.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the stack's loop (e.g. a Stack helper) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ what tests use

    @property
    def url(self) -> str:
        return self.stack.service.url

    @property
    def token(self) -> str:
        return self.stack.token

    @property
    def ca(self) -> Path:
        return self.stack.ca

    @property
    def port(self) -> int:
        return int(self.stack.service.port or 0)

    def client(self, **kwargs: Any) -> CloudImagingClient:
        kwargs.setdefault("timeout", 10.0)
        return CloudImagingClient(kwargs.pop("url", self.url), kwargs.pop("token", self.token), self.ca, **kwargs)

    def token_for(self, user: str, role: str = "user") -> str:
        """A token for a new user, so a test sees only its own jobs."""
        return self.call(self.stack.service.create_token(user, role))

    def wait_job(self, job_id: int, until: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.call(self.stack.wait_job(job_id, until, timeout), timeout + 5)
