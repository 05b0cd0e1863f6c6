"""A stack of real processes for fault tests: broker, service and Managers each in their own
process (so each can be SIGKILLed and restarted), plus a loopback TCP proxy that can cut the
path between a Manager and the broker. Everything binds 127.0.0.1; everything is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker.credentials import CredentialStore, generate_password
from broker.pki import Pki, ensure_pki
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from tests.support.brokers import MosquittoHandle, find_mosquitto, free_port, tls_port_ready, wait_until

CLI = str(Path(sys.executable).parent / "cloudimaging")


@dataclass
class Proc:
    """One child process with its log; started in its own process group so kill takes all."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n==== start {time.strftime('%H:%M:%S')} ====\n".encode())
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash or a power cut looks like."""
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class TcpProxy:
    """Forwards 127.0.0.1:port to the broker; ``cut()`` blackholes the path (bytes vanish,
    no FIN or RST, as in a real network partition) until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.blackhole = True

    def restore(self) -> None:
        self.blackhole = False
        for writer in list(self._writers):  # the stalled connections are dead anyway
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.restore()
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.blackhole:
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass  # swallowed until restore() closes it
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.blackhole:
                continue
            writer.write(data)
            await writer.drain()
        writer.close()


@dataclass
class FaultStack:
    tmp: Path
    broker_kind: str
    devices: list[str]
    proxied: tuple[str, ...] = ()
    keepalive: int = 5
    procs: dict[str, Proc] = field(default_factory=dict)
    proxies: dict[str, TcpProxy] = field(default_factory=dict)
    token: str = ""
    url: str = ""
    mosquitto: MosquittoHandle | None = None
    passwords: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ setup

    @property
    def pki(self) -> Pki:
        return ensure_pki(self.tmp / "broker-data" / "pki")

    async def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        self.passwords = {name: generate_password() for name in ["cloud-service", *self.devices]}
        if self.broker_kind == "embedded":
            self.broker_port = free_port()
            store = CredentialStore(self.tmp / "broker-data" / "broker" / "passwd")
            for name, password in self.passwords.items():
                store.set(name, password)
            self.procs["broker"] = Proc("broker", [CLI, "broker", "--data-dir", str(self.tmp / "broker-data"),
                                                   "--host", "127.0.0.1", "--port", str(self.broker_port)],
                                        self.tmp / "broker.log")
            self.start_broker()
        else:
            binary, passwd_tool = find_mosquitto()
            self.mosquitto = MosquittoHandle(self.tmp / "mosquitto", pki, binary, passwd_tool)
            self.mosquitto.start()
            self.broker_port = self.mosquitto.port
            for name, password in self.passwords.items():
                await asyncio.to_thread(self.mosquitto.add_user, name, password)
        for device in self.proxied:
            proxy = TcpProxy(self.broker_port)
            await proxy.start()
            self.proxies[device] = proxy

        http_port = free_port()
        self.url = f"https://127.0.0.1:{http_port}"
        service_config = {
            "data_dir": str(self.tmp / "service"), "broker_url": f"mqtts://127.0.0.1:{self.broker_port}",
            "broker_password": self.passwords["cloud-service"], "ca_file": str(pki.ca_cert),
            "tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key), "http_host": "127.0.0.1",
            "http_port": http_port, "keepalive": self.keepalive, "supervise_interval": 1.0,
            "redeliver_after": 5.0, "offline_grace": 10.0, "step_timeout": 60.0, "offline_abort_after": 300.0,
        }
        config_path = self.tmp / "service.json"
        config_path.write_text(json.dumps(service_config))
        made = subprocess.run([CLI, "service", "--config", str(config_path), "--new-token", "admin"],
                              capture_output=True, text=True, timeout=60, check=True)
        self.token = made.stdout.strip().splitlines()[-1]
        self.procs["service"] = Proc("service", [CLI, "service", "--config", str(config_path)],
                                     self.tmp / "service.log")
        self.procs["service"].start()
        await self.wait_http()
        for device in self.devices:
            self._manager_proc(device).start()
        for device in self.devices:
            await self.wait_online(device, timeout=30)

    def _manager_proc(self, device: str) -> Proc:
        port = self.proxies[device].port if device in self.proxies else self.broker_port
        config = {
            "device_id": device, "broker_url": f"mqtts://127.0.0.1:{port}", "password": self.passwords[device],
            "ca_file": str(self.pki.ca_cert), "state_dir": str(self.tmp / device / "state"),
            "keepalive": self.keepalive, "request_timeout": 3.0,
            "services": [{"kind": "print", "name": device, "driver": "simulated",
                          "driver_options": {"output_dir": str(self.tmp / device / "output"),
                                             # dev-1 is slow so a kill lands mid-print
                                             "pages_per_second": 8 if device == "dev-1" else 100},
                          "capabilities": SIMULATED_PRINTER_CAPABILITIES}],
        }
        path = self.tmp / device / "manager.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        proc = self.procs.get(device) or Proc(device, [CLI, "manager", "--config", str(path)],
                                              self.tmp / f"{device}.log")
        self.procs[device] = proc
        return proc

    def start_broker(self) -> None:
        if self.broker_kind == "embedded":
            self.procs["broker"].start()
            if not wait_until(lambda: tls_port_ready("127.0.0.1", self.broker_port, self.pki.ca_cert, 0.5), 20):
                raise RuntimeError("embedded broker did not start:\n" + (self.tmp / "broker.log").read_text()[-2000:])
        else:
            assert self.mosquitto is not None
            self.mosquitto.start()

    def kill_broker(self) -> None:
        if self.broker_kind == "embedded":
            self.procs["broker"].kill()
        else:
            assert self.mosquitto and self.mosquitto.process
            self.mosquitto.process.kill()
            self.mosquitto.process.wait(10)
            self.mosquitto.process = None

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.name != "broker":
                proc.stop()
        for proxy in self.proxies.values():
            await proxy.stop()
        if self.broker_kind == "embedded":
            self.procs["broker"].stop()
        elif self.mosquitto:
            self.mosquitto.stop()

    # ------------------------------------------------------------------ HTTP

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=str(self.pki.ca_cert), timeout=10.0,
                                 headers={"Authorization": f"Bearer {self.token}"})

    async def wait_http(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with self.client() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("service did not come up:\n" + (self.tmp / "service.log").read_text()[-3000:])

    async def wait_online(self, device: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with self.client() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get(f"/api/v1/services/print/{device}")
                    if response.status_code == 200 and response.json()["online"]:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{device} not online in {timeout}s:\n" + (self.tmp / f"{device}.log").read_text()[-3000:])

    async def submit(self, http: httpx.AsyncClient, device: str, number: int, attempts: int = 200) -> int:
        """Submit one job, retrying while the service is down (as a client would)."""
        pages = 1 + number % 3
        body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 1) for i in range(pages))
        job = json.dumps({"service": device, "ticket": {}, "document_format": "application/pdf"})
        for _ in range(attempts):
            try:
                response = await http.post("/api/v1/jobs", files={"job": (None, job, "application/json"),
                                                                  "document": (f"j{number}.pdf", body,
                                                                               "application/pdf")})
                if response.status_code == 201:
                    return int(response.json()["id"])
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
        raise RuntimeError(f"could not submit job {number}")

    async def states(self, http: httpx.AsyncClient) -> dict[int, dict[str, Any]]:
        response = await http.get("/api/v1/jobs", params={"all": True, "limit": 5000})
        return {job["id"]: job for job in response.json()["jobs"]}

    def printed_by(self, device: str) -> int:
        log = self.tmp / device / "output" / "printed.log"
        return len(log.read_text().split()) if log.exists() else 0

    def printed(self) -> Counter[int]:
        counts: Counter[int] = Counter()
        for device in self.devices:
            log = self.tmp / device / "output" / "printed.log"
            if log.exists():
                counts.update(int(line) for line in log.read_text().split())
        return counts
