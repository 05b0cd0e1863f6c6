"""`cloudimaging service` as an operator runs it: a process configured by the environment only
(no configuration file, the broker password from a secret file), with documents in S3 (moto's
standalone server). ``/readyz`` says 503 and names the broker while the broker is down, 200 once
it is up (``/healthz`` is 200 throughout); then a 1 GiB document goes through the service to S3
while the service's memory stays flat (its peak RSS growth is printed)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from broker.credentials import generate_password
from tests.support.brokers import embedded_broker, free_port, terminate
from tests.support.s3 import s3_server

GIB = 1024 * 1024 * 1024
DEVICE = "big-printer"
CLI = [sys.executable, "-c", "from client.cli import main; raise SystemExit(main())", "service"]


def _memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


async def _until(probe, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = await probe()
            if last is not None:
                return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {timeout}s: {what}")


async def _start_listening(env: dict[str, str], log: IO[bytes], log_path: Path,
                           attempts: int = 5) -> tuple[subprocess.Popen[bytes], str]:
    """The service on a free port, listening; its process and URL. A port found free can be
    taken by another test before the service binds it: then another port, a few times."""
    for _ in range(attempts):
        port = free_port()
        service = subprocess.Popen(CLI, env={**env, "CLOUDIMAGING_HTTP_PORT": str(port)}, stdout=log,
                                   stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while service.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return service, f"https://127.0.0.1:{port}"
            await asyncio.sleep(0.1)
        terminate(service)
        if "Address already in use" not in log_path.read_text(errors="replace"):
            break
    raise AssertionError(f"the service did not listen: {log_path.read_text(errors='replace')[-3000:]}")


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_service_from_environment_readiness_and_a_1_gib_document_in_constant_memory(tmp_path: Path) -> None:
    from manager.app import Manager
    from manager.config import ManagerConfig
    from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES

    service_password, device_password = generate_password(), generate_password()
    secret = tmp_path / "secrets" / "broker-password"
    secret.parent.mkdir()
    secret.write_text(service_password + "\n")
    with s3_server(tmp_path / "moto") as s3:
        async with embedded_broker(tmp_path / "broker") as b:
            await asyncio.to_thread(b.add_user, "cloud-service", service_password)
            await asyncio.to_thread(b.add_user, DEVICE, device_password)
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDIMAGING_")}
            env |= s3.env("big-bucket") | {
                "CLOUDIMAGING_DATA_DIR": str(tmp_path / "service"),
                "CLOUDIMAGING_BROKER_URL": b.url,
                "CLOUDIMAGING_BROKER_PASSWORD_SECRET_FILE": str(secret),
                "CLOUDIMAGING_CA_FILE": str(b.pki.ca_cert),
                "CLOUDIMAGING_TLS_CERT": str(b.pki.server_cert),
                "CLOUDIMAGING_TLS_KEY": str(b.pki.server_key),
                "CLOUDIMAGING_MAX_DOCUMENT_BYTES": str(2 * GIB),
                "CLOUDIMAGING_LOG_LEVEL": "WARNING",
            }
            made = await asyncio.to_thread(subprocess.run, [*CLI, "--new-token", "admin"], env=env,
                                           capture_output=True, text=True, timeout=60)
            assert made.returncode == 0, made.stdout + made.stderr
            token = made.stdout.strip().splitlines()[-1]

            await b.stop()  # the broker is down when the service starts
            log = (tmp_path / "service.log").open("wb")
            service, url = await _start_listening(env, log, tmp_path / "service.log")
            try:
                async with httpx.AsyncClient(base_url=url, verify=str(b.pki.ca_cert), timeout=30.0,
                                             headers={"Authorization": f"Bearer {token}"}) as http:

                    async def not_ready() -> httpx.Response | None:
                        response = await http.get("/readyz")
                        return response if response.status_code == 503 else None

                    down = await _until(not_ready, 60, "/readyz answering 503")
                    print("readyz with the broker down:", down.status_code, down.json())
                    assert down.json()["checks"] == {"database": "ok", "broker": "not connected", "objects": "ok"}
                    assert (await http.get("/healthz")).status_code == 200

                    await b.start()  # same port

                    async def ready() -> httpx.Response | None:
                        response = await http.get("/readyz")
                        return response if response.status_code == 200 else None

                    up = await _until(ready, 60, "/readyz answering 200 once the broker is up")
                    print("readyz with the broker up:", up.status_code, up.json())

                    # A printer registers, then goes away: the big job waits for it, so only
                    # the upload is measured.
                    config = ManagerConfig.model_validate({
                        "device_id": DEVICE, "broker_url": b.url, "password": device_password,
                        "ca_file": str(b.pki.ca_cert), "state_dir": str(tmp_path / "device"), "keepalive": 5,
                        "services": [{"kind": "print", "name": DEVICE, "driver": "simulated",
                                      "driver_options": {"output_dir": str(tmp_path / "out")},
                                      "capabilities": SIMULATED_PRINTER_CAPABILITIES}]})
                    manager = Manager(config)
                    await asyncio.to_thread(manager.start)
                    try:
                        async def registered() -> bool | None:
                            response = await http.get(f"/api/v1/services/print/{DEVICE}")
                            return True if response.status_code == 200 else None

                        await _until(registered, 30, "the printer registered")
                    finally:
                        await asyncio.to_thread(manager.stop, 10.0)

                    created = await http.post("/api/v1/jobs", json={
                        "service": DEVICE, "upload": True, "document_format": "text/plain",
                        "document_name": "big.txt"})
                    assert created.status_code == 201, created.text
                    job = created.json()
                    digest = hashlib.sha256()
                    block = (b"0123456789abcdef" * 63 + b"0123456789abcde\n") * 1024  # 1 MiB of lines

                    async def body() -> AsyncIterator[bytes]:
                        for _ in range(GIB // len(block)):
                            digest.update(block)
                            yield block

                    before = _memory_kib(service.pid, "VmRSS")
                    peak_before = _memory_kib(service.pid, "VmHWM")
                    started = time.monotonic()
                    put = await http.put(job["upload_url"], content=body(),
                                         headers={"Content-Length": str(GIB), "Content-Type": "text/plain"},
                                         timeout=480.0)
                    took = time.monotonic() - started
                    assert put.status_code == 200, put.text
                    peak_after = _memory_kib(service.pid, "VmHWM")
                    growth = peak_after - max(before, peak_before)
                    print(f"1 GiB through the service to S3 in {took:.1f} s; service RSS {before // 1024} MiB "
                          f"before, peak {peak_after // 1024} MiB after: peak growth {max(0, growth) // 1024} MiB")
                    assert put.json() == {"size": GIB, "sha256": digest.hexdigest()}
                    head = await asyncio.to_thread(s3.client().head_object, Bucket="big-bucket",
                                                   Key=f"jobs/{job['id']}/doc-1")
                    assert head["ContentLength"] == GIB
                    # Constant memory: a few parts in flight, never the document (1024 MiB).
                    assert growth < 256 * 1024, f"service peak RSS grew by {growth // 1024} MiB"
                    info = (await http.get(f"/api/v1/jobs/{job['id']}")).json()
                    assert info["documents"][0]["size"] == GIB
                    assert info["documents"][0]["sha256"] == digest.hexdigest()
            finally:
                terminate(service)
                log.close()
                if service.returncode not in (0, -15):
                    print((tmp_path / "service.log").read_text()[-3000:])
