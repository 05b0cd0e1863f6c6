"""The simulated-device fleet as its own process, so its CPU is counted apart from the service's.

``python -m tests.bench.fleetproc SPEC.json``: prints ``ready`` once started, waits for a line
on stdin (so several fleet processes start connecting together), connects the devices of the
spec (``mode`` ``broker`` = CONNECT and SUBSCRIBE only, the broker-alone baseline; ``service`` =
the real protocol up to online; ``resume``: TLS sessions resumed, see
``tests.support.fleet.ResumingContext``), prints one JSON line per event on stdout
(``connected`` with the wall-clock ``t`` it finished, ``doorbell``, ``done``), serves jobs until
its stdin closes, then disconnects every session and prints ``bye``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import httpx

from client._base import KEEPALIVE_EXPIRY
from tests.support.fleet import FleetContext, FleetDevice, client_context, connect_all


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    tls = client_context(spec["ca"], spec.get("resume", False))
    limits = httpx.Limits(max_connections=spec.get("http_connections", 64), max_keepalive_connections=64,
                          keepalive_expiry=KEEPALIVE_EXPIRY)  # the clients' own, under the service's keep-alive
    web_tls = client_context(spec["ca"], resume=False)  # a broker's session is for the broker only
    async with httpx.AsyncClient(verify=web_tls, timeout=60.0, limits=limits) as http:
        ctx = FleetContext(
            host=spec["host"], port=spec["port"], tls=tls, http=http, capabilities=spec.get("capabilities", {}),
            on_doorbell=lambda device, job, t: emit("doorbell", device=device, job=job, t=t),
            on_done=lambda device, job, state, t: emit("done", device=device, job=job, state=state, t=t),
            keepalive=spec.get("keepalive", 120))
        devices = [FleetDevice(ctx, name, password) for name, password in spec["devices"]]
        loop = asyncio.get_running_loop()
        emit("ready")
        await loop.run_in_executor(None, sys.stdin.readline)  # the bench's go
        started = time.monotonic()
        errors = await connect_all(devices, spec.get("concurrency", 100), spec["mode"] == "service")
        emit("connected", n=len(devices) - len(errors), errors=errors[:5], n_errors=len(errors),
             elapsed=time.monotonic() - started, t=time.time(),
             resumed=sum(1 for d in devices if d.session.resumed))
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
        await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
    emit("bye")


if __name__ == "__main__":
    # asyncio gives each TLS connection a 256 KiB read buffer (SSLProtocol.max_size): 2.5 GB for
    # 10,000 sessions whose messages are at most 64 KiB. 16 KiB (one TLS record) is plenty.
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(Path(sys.argv[1])))
