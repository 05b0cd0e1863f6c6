"""The processes a benchmark stack is made of, and what is read from them.

Every part runs in its own process so its CPU can be read apart: the broker (``cloudimaging
broker`` or Mosquitto from deploy/mosquitto), the service (``cloudimaging service``), each
Manager (``cloudimaging manager``), the simulated fleet (``tests.bench.fleetproc``). CPU is
utime + stime of /proc/PID/stat (all threads), memory VmRSS of /proc/PID/status. Everything
binds 127.0.0.1 on ephemeral ports and is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.credentials import CredentialStore, generate_password, hash_password, is_random_token
from broker.pki import Pki
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from schemas import topics

CLI = [sys.executable, "-c", "from client.cli import main; raise SystemExit(main())"]
TICK = os.sysconf("SC_CLK_TCK")
PG_HOST = "127.0.0.1"


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) first."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass(frozen=True)
class Switches:
    """What a process's time in the kernel and its threads' switches came to so far: the costs a
    profile of Python code does not show (system calls, page faults; waiting for a lock, the
    GIL or I/O; being preempted by another process)."""

    system: float
    voluntary: int
    preempted: int

    def since(self, before: Switches) -> Switches:
        return Switches(self.system - before.system, self.voluntary - before.voluntary,
                        self.preempted - before.preempted)


def switches(pid: int) -> Switches:
    """System CPU of /proc/PID/stat (all threads) and the context switches of the threads alive
    now (/proc/PID/task/*/status; a thread that ended takes its count with it)."""
    system = int(_stat_fields(pid)[12]) / TICK
    voluntary = preempted = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/status") as fh:
            for line in fh:
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    preempted += int(line.split()[1])
    return Switches(system, voluntary, preempted)


def switches_note(used: Switches, jobs: int) -> str:
    """Per job, in the words of a figure's note."""
    return (f"of which in the kernel {used.system / jobs * 1000:.2f} ms (system calls, page faults); its "
            f"threads gave up the CPU {used.voluntary / jobs:.1f} times a job (waiting) and were preempted "
            f"{used.preempted / jobs:.1f} times")


def switches_extra(used: Switches, jobs: int) -> dict[str, float]:
    """Per job, for the figure's JSON."""
    return {"system_ms_per_job": used.system / jobs * 1000, "voluntary_switches_per_job": used.voluntary / jobs,
            "preempted_per_job": used.preempted / jobs}


def python_loop_ms(rounds: int = 3) -> float:
    """CPU milliseconds of a fixed pure-Python loop, the best of ``rounds``: the speed of this
    machine's cores for the interpreter today. Machines of one kind differ several-fold from
    day to day (a slower host, caches shared with other guests), and not all of it shows as
    steal time; runs of different days compare only after dividing by this."""
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.process_time() - began)
    return best * 1000


def speed_change(before_ms: float, after_ms: float) -> float:
    """How much the machine's speed moved between two timings of ``python_loop_ms``: the
    slower over the faster (1.0: unchanged). On a shared host a figure group can start on a
    fast machine and end on one twice as slow; its figures then compare with nothing."""
    low, high = sorted((before_ms, after_ms))
    return high / low if low > 0 else float("inf")


def machine_ticks() -> tuple[int, int] | None:
    """The whole machine's (steal, total) CPU clock ticks so far, from /proc/stat; None where
    there is no such file."""
    try:
        with open("/proc/stat") as fh:
            return cpu_line_ticks(fh.readline())
    except OSError:
        return None


def cpu_line_ticks(line: str) -> tuple[int, int] | None:
    """(steal, total) of /proc/stat's ``cpu`` line: user nice system idle iowait irq softirq
    steal [guest guest_nice]. Guest time is already counted in user and nice, so it is left out
    of the total."""
    fields = line.split()
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(f) for f in fields[1:9]]
    return ticks[7], sum(ticks)


def stolen_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time that the hypervisor gave to others between two
    readings (steal time): a run on a machine whose host is busy is slower for no fault of its
    own, and says so."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pids_named(command: str) -> list[int]:
    """Every process whose command name (``/proc/PID/comm``) is ``command``, e.g. PostgreSQL's
    server and its backends ("postgres")."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/comm") as fh:
                if fh.read().strip() == command:
                    found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds of named processes between ``start()`` and ``stop()``.

    ``named`` counts processes by command name, looked up at both ends: a process that started
    in between counts from zero (PostgreSQL starts a backend per new connection). One that ended
    in between is not counted; the service's pool keeps its connections, so few do.
    """

    def __init__(self, pids: dict[str, list[int]], named: dict[str, str] | None = None) -> None:
        self.pids = pids
        self.named = named or {}
        self.before: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        groups = {**self.pids, **{name: pids_named(command) for name, command in self.named.items()}}
        out: dict[str, dict[int, float]] = {}
        for name, pids in groups.items():
            seen = out.setdefault(name, {})
            for pid in pids:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    seen[pid] = cpu_seconds(pid)
        return out

    def start(self) -> CpuMeter:
        self.before = self._read()
        return self

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.used = {name: sum(cpu - self.before.get(name, {}).get(pid, 0.0) for pid, cpu in seen.items())
                     for name, seen in after.items()}
        return self.used


@contextlib.asynccontextmanager
async def running_sink(pki: Pki, out: Path) -> Any:
    """The bare HTTPS sink (tests/bench/sink.py) in a process of its own, writing to ``out``;
    yields its port, and stops it (by its pid) and removes ``out`` after."""
    sink = subprocess.Popen([sys.executable, "-m", "tests.bench.sink", str(pki.server_cert), str(pki.server_key),
                             str(out)], stdout=subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[2]),
                            start_new_session=True)
    try:
        assert sink.stdout is not None
        yield int((await asyncio.to_thread(sink.stdout.readline)).strip())
    finally:
        await asyncio.to_thread(stop_process, sink)
        out.unlink(missing_ok=True)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a process we started (by its pid), then kill its group if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def wait_line(log: Path, pattern: str, proc: subprocess.Popen[Any], timeout: float) -> re.Match[str]:
    """Wait until ``log`` holds a line matching ``pattern``; fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: no {pattern!r} within {timeout} s:\n{text[-3000:]}")
        await asyncio.sleep(0.05)


def spawn(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kw)


# -- brokers -----------------------------------------------------------------------------------


@dataclass
class BrokerProc:
    """A broker in its own process: ``kind`` is ``embedded`` (amqtt) or ``mosquitto``."""

    kind: str
    directory: Path
    pki: Pki
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    passwd: Path = field(init=False)
    mosquitto: Any = None

    def __post_init__(self) -> None:
        self.passwd = (self.directory / "broker" / "passwd") if self.kind == "embedded" else \
            (self.directory / "passwd")

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        if self.kind == "embedded":
            log = self.directory / "broker.out"
            self.proc = spawn([*CLI, "broker", "--data-dir", str(self.directory), "--port", "0"], log)
            match = await wait_line(log, r"broker listening on mqtts://[^:]+:(\d+)", self.proc, 60)
            self.port = int(match.group(1))
        else:
            from tests.support.brokers import MosquittoHandle

            binary, passwd_tool = mosquitto_tools()
            self.mosquitto = MosquittoHandle(self.directory, self.pki, binary, passwd_tool)
            await asyncio.to_thread(self.mosquitto.start)
            self.proc, self.port = self.mosquitto.process, self.mosquitto.port

    def add_users(self, users: dict[str, str]) -> None:
        """Write many users at once (the service adds one at a time; a fleet needs thousands), in
        the scheme each broker is given in production: the CredentialStore's default for the
        embedded broker (it rereads the file when it changes), Mosquitto's ``$7$`` (then SIGHUP)."""
        def scheme(password: str) -> str:
            if self.kind != "embedded":
                return "pbkdf2-sha512"
            chosen = CredentialStore(self.passwd).scheme
            if chosen == "auto":  # as CredentialStore.set: random tokens by HMAC, the rest by scrypt
                return "hmac-sha256" if is_random_token(password) else "scrypt"
            return chosen
        kept = []
        if self.passwd.exists():
            kept = [line for line in self.passwd.read_text().splitlines()
                    if line.strip() and line.split(":", 1)[0] not in users]
        lines = kept + [f"{name}:{hash_password(password, scheme(password))}" for name, password in users.items()]
        self.passwd.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.passwd.with_name(f".{self.passwd.name}.bench.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{line}\n" for line in lines))
        os.replace(tmp, self.passwd)
        if self.kind == "mosquitto" and self.proc is not None:
            from tests.support.brokers import connect_code, wait_until

            self.proc.send_signal(signal.SIGHUP)
            name, password = next(reversed(users.items()))
            if not wait_until(lambda: connect_code(self, name, password) == 0, timeout=30, interval=0.2):
                raise RuntimeError("Mosquitto did not take the new password file")

    def stop(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.stop()
        elif self.proc is not None:
            stop_process(self.proc)


def mosquitto_tools() -> tuple[str, str]:
    binary = next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
                  None) or shutil.which("mosquitto")
    passwd = shutil.which("mosquitto_passwd")
    if not (binary and passwd):
        raise Unavailable("mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)")
    return binary, passwd


class Unavailable(Exception):
    """A tool a stack or a figure needs is missing; the bench prints the reason."""


# -- PostgreSQL --------------------------------------------------------------------------------


async def pg_sql(sql: str, database: str = "postgres") -> None:
    psql = shutil.which("psql")
    if psql is None:
        raise Unavailable("psql is needed to create the benchmark's database (apt-get install postgresql-client)")
    proc = await asyncio.create_subprocess_exec(
        psql, "-h", PG_HOST, "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        raise Unavailable(f"PostgreSQL at {PG_HOST}:5432 (user postgres, trust): {out.decode(errors='replace')}")


@contextlib.asynccontextmanager
async def pg_database() -> Any:
    """A uniquely named database, dropped at the end; yields its SQLAlchemy URL."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise Unavailable("asyncpg is needed for PostgreSQL (pip install -e '.[postgres]')") from None
    name = f"cloudimaging_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await pg_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{name}"
    finally:
        await pg_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the service and Managers ------------------------------------------------------------------


@dataclass
class ServiceProc:
    directory: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    token: str = ""
    #: A command the service runs under (``tests.bench.instructions.prefix``: callgrind).
    under: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "service.json"
        path.write_text(json.dumps(self.config, default=str))
        made = await asyncio.create_subprocess_exec(*CLI, "service", "--config", str(path), "--new-token", "admin",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(made.communicate(), 120)
        if made.returncode != 0:
            raise RuntimeError(f"could not make an admin token: {err.decode(errors='replace')[-2000:]}")
        self.token = out.decode().strip().splitlines()[-1]
        log = self.directory / "service.out"
        self.proc = spawn([*self.under, *CLI, "service", "--config", str(path)], log)
        # Under valgrind, start-up (imports, TLS context, the database) runs several times slower.
        match = await wait_line(log, r"cloudimaging service at (https://\S+);", self.proc, 600 if self.under else 120)
        self.url = match.group(1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, 20)


@dataclass
class ManagerProc:
    device_id: str
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> Path:
        return self.directory / "output"


def start_manager(directory: Path, device_id: str, password: str, broker: BrokerProc,
                  driver: str = "file", driver_options: dict[str, Any] | None = None,
                  capabilities: dict[str, Any] | None = SIMULATED_PRINTER_CAPABILITIES) -> ManagerProc:
    home = directory / device_id
    home.mkdir(parents=True, exist_ok=True)
    service: dict[str, Any] = {"kind": "print", "name": device_id, "driver": driver,
                               "driver_options": driver_options or {"output_dir": str(home / "output")},
                               "make_and_model": "bench printer"}
    if capabilities is not None:
        service["capabilities"] = capabilities
    config = {"device_id": device_id, "broker_url": broker.url, "password": password,
              "ca_file": str(broker.pki.ca_cert), "state_dir": str(home / "state"), "services": [service]}
    path = home / "manager.json"
    path.write_text(json.dumps(config))
    proc = spawn([*CLI, "manager", "--config", str(path), "--log-level", "WARNING"], home / "manager.out")
    return ManagerProc(device_id, home, proc)


def new_users(prefix: str, count: int) -> dict[str, str]:
    return {f"{prefix}-{i}": generate_password() for i in range(count)}


SERVICE_USER = topics.SERVICE_USERNAME
