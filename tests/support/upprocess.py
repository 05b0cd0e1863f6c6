"""``cloudimaging up`` in a child process, for tests that need the real entry point: its umask,
its open-files limit, its logs. Ephemeral ports on 127.0.0.1; stopped with SIGINT, then killed
if it does not stop in time.

``async with up_process(tmp, umask=0o022, nofile=256) as up:`` starts it and waits for its
banner; ``up.url``, ``up.broker_port``, ``up.token``, ``up.ca`` and ``up.output`` (stdout and
stderr so far) are then available.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class UpProcess:
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    url: str = ""
    broker_port: int = 0
    token: str = ""

    @property
    def ca(self) -> Path:
        return self.data_dir / "pki" / "ca.pem"

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _limits(umask: int, nofile: int | None) -> Callable[[], None]:
    def apply() -> None:
        os.umask(umask)
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    return apply


@contextlib.asynccontextmanager
async def up_process(tmp: Path, *, umask: int = 0o022, nofile: int | None = None, printer: bool = True,
                     extra: list[str] | None = None, timeout: float = 60.0) -> AsyncIterator[UpProcess]:
    data_dir = tmp / "up"
    log = tmp / "up.out"
    argv = [sys.executable, "-c", "from client.cli import main; raise SystemExit(main())", "up",
            "--data-dir", str(data_dir), "--http-port", "0", "--broker-port", "0", *(extra or [])]
    if not printer:
        argv.append("--no-printer")
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_limits(umask, nofile), start_new_session=True)
    up = UpProcess(data_dir, log, process)
    try:
        deadline = time.monotonic() + timeout
        while "cloudimaging is up." not in up.output:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"cloudimaging up did not start:\n{up.output[-4000:]}")
            await asyncio.sleep(0.1)
        config = json.loads((data_dir / "client.json").read_text())
        up.url, up.token = config["url"], config["token"]
        match = re.search(r"MQTT broker\s+mqtts://[^:]+:(\d+)", up.output)
        assert match, up.output
        up.broker_port = int(match.group(1))
        yield up
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGINT (a clean stop), then SIGKILL of its group if it is still there after ``timeout``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
