"""One stack under the benchmark: start its processes, measure each figure group, stop them.

The bench process is the client (httpx, as a user's program would be) and the clock; the
broker, the service, each Manager and the fleet are processes of their own, so the CPU of each
is read apart (procs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from broker.credentials import generate_password
from broker.pki import ensure_pki
from client._base import KEEPALIVE_EXPIRY
from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from schemas import topics
from tests.bench.instructions import Callgrind
from tests.bench.instructions import prefix as callgrind_prefix
from tests.bench.procs import (
    SERVICE_USER,
    BrokerProc,
    CpuMeter,
    ManagerProc,
    ServiceProc,
    Unavailable,
    machine_ticks,
    new_users,
    pg_database,
    python_loop_ms,
    rss_bytes,
    running_sink,
    speed_change,
    start_manager,
    stolen_share,
    switches,
    switches_extra,
    switches_note,
)
from tests.bench.report import Row, percentile, row, skipped
from tests.bench.sizes import Size

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
#: Devices per fleet process (up to one process per core): one process does ~250-700 TLS
#: handshakes a second on one core, so 10,000 devices in one would take the fleet alone 15-40 s.
FLEET_DEVICES_PER_PROCESS = 2500
#: A connect storm is devices coming back (after a network or broker outage): they resume their
#: TLS sessions, as real TLS clients do. Only the broker-alone "first time" row shows full handshakes.
FLEET_RESUMES_TLS = True

HOP_USER = "bench-hop"
#: A figure group during which the hypervisor took at least this share of the machine's CPU
#: time gets a row saying how much (below it, the progress line alone says).
STOLEN_NOTED = 0.01
#: A figure group whose machine ran the fixed Python loop this many times slower (or faster) at
#: its end than at its start gets a row saying so: a figure measured half on a fast machine and
#: half on a slow one compares neither with its baseline nor with another run.
SPEED_NOTED = 1.25
#: Rounds of ``python_loop_ms`` at each end of a group (the best is kept; about 0.1 s each).
SPEED_ROUNDS = 2


def ten_kb_pdf() -> bytes:
    """A one-page PDF padded to 10 KB with a comment (the page counter still sees one page)."""
    head = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
            b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >> endobj\n")
    tail = b"trailer << /Root 1 0 R >>\n%%EOF\n"
    pad = 10 * 1024 - len(head) - len(tail) - 2
    return head + b"%" + b"x" * pad + b"\n" + tail


class BenchError(Exception):
    """A figure could not be measured (the stack misbehaved); the row says why."""


# -- the broker alone: paho pairs -----------------------------------------------------------------


def _paho_pair(broker: Any, service_pw: str, hop_pw: str) -> tuple[Any, Any, queue.Queue]:
    from tests.support.brokers import MqttTestClient

    got: queue.Queue = queue.Queue()
    sub = MqttTestClient(broker, HOP_USER, hop_pw)
    if sub.connect() != 0:
        raise BenchError(f"{HOP_USER} could not connect to the broker")
    if sub.subscribe(topics.down(HOP_USER)) != [1]:
        raise BenchError("subscription refused")
    sub.client.on_message = lambda _c, _u, m: got.put((time.perf_counter(), m.payload))
    pub = MqttTestClient(broker, SERVICE_USER, service_pw, client_id=f"{SERVICE_USER}-bench")
    pub.client.max_inflight_messages_set(100)
    if pub.connect() != 0:
        sub.close()
        raise BenchError("the service's account could not connect to the broker")
    for client in (sub, pub):
        sock = client.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return pub, sub, got


def measure_onehop(broker: Any, service_pw: str, hop_pw: str, n: int) -> list[float]:
    """One message at a time, publisher -> broker -> subscriber, QoS 1 as the service sends:
    the latencies in ms."""
    pub, sub, got = _paho_pair(broker, service_pw, hop_pw)
    topic = topics.down(HOP_USER)
    out = []
    try:
        for _ in range(n):
            sent = time.perf_counter()
            pub.client.publish(topic, struct.pack("!d", sent) + b"x" * 52, qos=1)
            try:
                received, payload = got.get(timeout=10)
            except queue.Empty:
                raise BenchError("a one-hop message was lost") from None
            out.append((received - struct.unpack("!d", payload[:8])[0]) * 1000)
    finally:
        pub.close()
        sub.close()
    return out


def measure_msgrate(broker: Any, service_pw: str, hop_pw: str, n: int, window: int = 100) -> tuple[float, int]:
    """Messages per second through the broker, QoS 1, 60-byte payloads, with at most ``window``
    on their way (beyond the broker's queue for a slow subscriber, messages would be dropped):
    (msg/s, messages lost)."""
    pub, sub, got = _paho_pair(broker, service_pw, hop_pw)
    topic = topics.down(HOP_USER)
    sent = received = 0
    try:
        started = last = time.perf_counter()
        while received < n:
            while sent < n and sent - received < window:
                pub.client.publish(topic, b"x" * 60, qos=1)
                sent += 1
            try:
                last, _payload = got.get(timeout=10)
            except queue.Empty:
                break
            received += 1
        if not received:
            raise BenchError("no message came through in the msg/s run")
        return received / (last - started), n - received
    finally:
        pub.close()
        sub.close()


# -- the fleet process ----------------------------------------------------------------------------


class Fleet:
    """The simulated-device fleet: one or more processes (devices split evenly among them, so
    the TLS handshakes of a large fleet use more than one core) and what they reported."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs
        self.connected: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.doorbells: dict[int, float] = {}
        self.done: dict[int, tuple[str, float]] = {}
        self.changed = asyncio.Event()
        self._ready = [asyncio.get_running_loop().create_future() for _ in procs]
        self._reports: list[dict] = []
        self._went = 0.0
        self._readers = [asyncio.create_task(self._read(i, p)) for i, p in enumerate(procs)]

    @classmethod
    async def start(cls, directory: Path, broker: BrokerProc, users: dict[str, str], mode: str,
                    concurrency: int = 100, processes: int = 1, resume: bool = False,
                    under: list[str] | None = None) -> Fleet:
        """Start the processes and, once all are ready, let them connect together (``concurrency``
        handshakes at once in all). ``under``: a command to run the (single) process under."""
        directory.mkdir(parents=True, exist_ok=True)
        items = list(users.items())
        processes = max(1, min(processes, len(items)))
        procs = []
        for i in range(processes):
            spec = directory / f"fleet-{mode}-{i}.json"
            spec.write_text(json.dumps({"host": broker.host, "port": broker.port, "ca": str(broker.pki.ca_cert),
                                        "mode": mode, "concurrency": max(1, concurrency // processes),
                                        "resume": resume, "devices": items[i::processes],
                                        "capabilities": SIMULATED_PRINTER_CAPABILITIES}))
            err = (directory / f"fleet-{mode}-{i}.err").open("ab")
            procs.append(await asyncio.create_subprocess_exec(
                *(under or []), sys.executable, "-m", "tests.bench.fleetproc", str(spec), cwd=str(REPO),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, limit=1 << 20,
                start_new_session=True))
            err.close()
        fleet = cls(procs)
        try:
            await asyncio.wait_for(asyncio.gather(*fleet._ready), 600 if under else 120)
        except BaseException:
            await fleet.stop()
            raise
        fleet._went = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        return fleet

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def _read(self, index: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            event = json.loads(line)
            kind = event["event"]
            if kind == "ready" and not self._ready[index].done():
                self._ready[index].set_result(None)
            elif kind == "connected":
                self._reports.append(event)
                if len(self._reports) == len(self.procs) and not self.connected.done():
                    self.connected.set_result(self._merged())
            elif kind == "doorbell":
                self.doorbells.setdefault(event["job"], event["t"])
            elif kind == "done":
                self.done[event["job"]] = (event["state"], event["t"])
                self.changed.set()
        for future in (self._ready[index], self.connected):
            if not future.done():
                future.set_exception(BenchError("a fleet process ended before connecting"))
        self.changed.set()

    def _merged(self) -> dict:
        """One ``connected`` event for all processes: elapsed from the go to the last one done."""
        errors = [e for r in self._reports for e in r["errors"]]
        return {"event": "connected", "n": sum(r["n"] for r in self._reports), "errors": errors[:5],
                "n_errors": sum(r["n_errors"] for r in self._reports),
                "elapsed": max(r["t"] for r in self._reports) - self._went, "processes": len(self.procs),
                "resumed": sum(r.get("resumed", 0) for r in self._reports)}

    async def wait_connected(self, timeout: float) -> dict:
        return await asyncio.wait_for(asyncio.shield(self.connected), timeout)

    async def wait_done(self, job_ids: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not job_ids <= self.done.keys():
            if any(p.returncode is not None for p in self.procs):
                raise BenchError("a fleet process ended")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{len(job_ids - self.done.keys())} of {len(job_ids)} fleet jobs not done "
                                 f"within {timeout:.0f} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))

    async def stop(self) -> None:
        await asyncio.gather(*(self._stop(p) for p in self.procs))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._readers, return_exceptions=True), 10)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


# -- the stack ------------------------------------------------------------------------------------


class StackRun:
    """One stack (``embedded``: amqtt in its own process, SQLite; ``mosquitto-pg``: Mosquitto from
    deploy/mosquitto, PostgreSQL) and its figures."""

    def __init__(self, kind: str, size: Size, groups: set[str], work: Path, results: Path, profile: bool,
                 say: Callable[[str], None]) -> None:
        self.kind = kind
        self.broker_kind = "embedded" if kind == "embedded" else "mosquitto"
        self.size = size
        self.groups = groups
        self.dir = work / kind
        self.results = results
        self.profile = profile
        self.say = say
        self.rows: list[Row] = []
        self.exits = contextlib.AsyncExitStack()
        self.onehop: list[float] = []
        self.managers: list[ManagerProc] = []
        self.fleet: Fleet | None = None
        self.pdf = ten_kb_pdf()

    # -- helpers ----------------------------------------------------------------------------------

    def add(self, r: Row) -> None:
        self.rows.append(r)
        value = "-" if r.value is None else f"{r.value:.2f} {r.unit}"
        self.say(f"  [{self.kind}] {r.figure}: {value}{'  ' + r.note if r.note else ''}")

    def wants(self, *groups: str) -> bool:
        return any(g in self.groups for g in groups)

    async def guarded(self, group: str, figure: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run one figure group; a failure becomes a row saying why, and the next group runs."""
        if group not in self.groups:
            return
        self.say(f"[{self.kind}] {group} ...")
        began = time.monotonic()
        ticks = machine_ticks()
        loop_before = python_loop_ms(SPEED_ROUNDS)
        try:
            await body()
            stolen = stolen_share(ticks, machine_ticks())
            loop_after = python_loop_ms(SPEED_ROUNDS)
            self.say(f"[{self.kind}] {group}: {time.monotonic() - began:.1f} s"
                     + ("" if stolen is None else f", the hypervisor took {stolen:.0%} of the machine's CPU time")
                     + f", the fixed loop took {loop_before:.0f} ms before and {loop_after:.0f} ms after")
            changed = speed_change(loop_before, loop_after)
            if changed >= SPEED_NOTED:
                self.add(row(self.kind, group, f"the machine's speed changed during the {group} figures",
                             changed, "x", loop_before_ms=loop_before, loop_after_ms=loop_after,
                             note=f"the fixed Python loop took {loop_before:.0f} ms before the group and "
                                  f"{loop_after:.0f} ms after: the host ran this machine at another speed "
                                  f"meanwhile, and this group's figures compare with nothing but each other"))
            if stolen is not None and stolen >= STOLEN_NOTED:
                self.add(row(self.kind, group, f"CPU time the hypervisor took during the {group} figures",
                             stolen * 100, "%",
                             note="steal time in /proc/stat: for that share of the time the host ran other work on "
                                  "this machine's cores, and this group's figures are slower by as much"))
        except Unavailable as exc:
            self.add(skipped(self.kind, group, figure, str(exc), unavailable=True))
        except (BenchError, httpx.HTTPError, OSError, RuntimeError, TimeoutError) as exc:
            self.add(skipped(self.kind, group, figure, f"{type(exc).__name__}: {exc}"))

    def meter(self, **extra: list[int]) -> CpuMeter:
        """CPU of the service, the broker, ``extra``, this process (the clients submitting and
        watching) and, on PostgreSQL, every ``postgres`` process of the machine's server."""
        pids = {"service": [self.service.pid], "broker": [self.broker.pid], "bench": [os.getpid()], **extra}
        named = {"postgres": "postgres"} if self.kind == "mosquitto-pg" else {}
        return CpuMeter(pids, named).start()

    def ceiling(self, group: str, used: dict[str, float], jobs: int, label: str) -> None:
        """What this machine's cores allow: every process of the run shares them, so the jobs/s
        of a group can be no more than cores / (CPU per job of all of them). Printed beside the
        jobs/s goals: it says how much of a miss is the service's and how much is the rest."""
        cores, per_job, everything, others = cpu_shares(used, jobs)
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in per_job.items())
        self.add(row(self.kind, group, f"jobs/s {cores} cores allow at the CPU per job of every process ({label})",
                     cores * 1000 / everything if everything else math_nan(), "jobs/s",
                     note=f"CPU per job of every process: {everything:.1f} ms ({parts}); with the service at "
                          f"its 5 ms goal and the rest as measured: {cores * 1000 / (others + 5):.0f} jobs/s; "
                          f"with the service costing nothing: {cores * 1000 / others if others else math_nan():.0f}",
                     cpu_ms_per_job=per_job, cores=cores))

    async def submit(self, service: str, data: bytes | None = None) -> tuple[int, float, float]:
        """POST a 10 KB multipart job; (job id, wall time before, wall time at the 201)."""
        form = self._job_form(service, data)
        before = time.time()
        response = await self.http.post("/api/v1/jobs", files=form)
        after = time.time()
        if response.status_code != 201:
            raise BenchError(f"submit refused: {response.status_code} {response.text[:300]}")
        return response.json()["id"], before, after

    async def submit_many(self, services: list[str], count: int, concurrency: int) -> list[int]:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            async with gate:
                return (await self.submit(services[i % len(services)]))[0]

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def wait_online(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                response = await self.http.get(f"/api/v1/services/print/{name}")
                if response.status_code == 200 and response.json()["online"]:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"service {name} not online within {timeout:.0f} s")
                await asyncio.sleep(0.1)

    async def wait_ended(self, job_ids: list[int] | set[int], timeout: float, interval: float = 0.05) -> None:
        """Until none of ``job_ids`` is active (jobs left over by an earlier figure do not count)."""
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            jobs = (await self.http.get("/api/v1/jobs", params={"limit": 5000})).json()["jobs"]
            active = [j for j in jobs if j["id"] in wanted]
            if not active:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{len(active)} jobs still active after {timeout:.0f} s: "
                                 f"{sorted({j['state'] for j in active})}")
            await asyncio.sleep(interval)

    async def count_ended(self, job_ids: list[int]) -> dict[str, int]:
        jobs = (await self.http.get("/api/v1/jobs", params={"all": "true", "limit": 5000})).json()["jobs"]
        wanted = set(job_ids)
        states: dict[str, int] = {}
        for job in jobs:
            if job["id"] in wanted:
                states[job["state"]] = states.get(job["state"], 0) + 1
        return states

    # -- the run ----------------------------------------------------------------------------------

    async def run(self) -> list[Row]:
        try:
            await self._run()
        finally:
            await self._cleanup()
        return self.rows

    async def _cleanup(self) -> None:
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                await self.fleet.stop()
        for manager in self.managers:
            from tests.bench.procs import stop_process

            await asyncio.to_thread(stop_process, manager.proc, signal.SIGTERM, 15)
        await self.exits.aclose()

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        size = self.size
        pki_dir = self.dir / "broker" / "pki" if self.broker_kind == "embedded" else self.dir / "pki"
        pki = ensure_pki(pki_dir)
        self.broker = BrokerProc(self.broker_kind, self.dir / "broker", pki)
        self.exits.callback(self.broker.stop)
        await self.broker.start()
        self.service_pw = generate_password()
        self.hop_pw = generate_password()
        fleet_n = size.fleet_devices[self.broker_kind] if self.wants("connect", "doorbell", "fleet") else 0
        if self.wants("instructions"):
            fleet_n = size.fleet_active  # only the devices that print: a connect storm is not counted
        self.fleet_users = new_users("fleet", fleet_n)
        self.manager_users = new_users("mgr", max(size.managers))
        users = {SERVICE_USER: self.service_pw, HOP_USER: self.hop_pw, **self.fleet_users, **self.manager_users}
        self.say(f"[{self.kind}] broker at {self.broker.url}; writing {len(users)} accounts")
        await asyncio.to_thread(self.broker.add_users, users)

        await self.guarded("onehop", "broker one-hop latency", self.fig_onehop)
        await self.guarded("msgrate", "broker msg/s", self.fig_msgrate)
        await self.guarded("connect", "broker alone accepting N connections", self.fig_connect_baseline)

        database_url = None
        if self.kind == "mosquitto-pg":
            database_url = await self.exits.enter_async_context(pg_database())
        self.service = ServiceProc(self.dir / "service", {
            "data_dir": str(self.dir / "service"), "database_url": database_url, "broker_url": self.broker.url,
            "broker_password": self.service_pw, "ca_file": str(pki.ca_cert), "tls_cert": str(pki.server_cert),
            "tls_key": str(pki.server_key), "http_host": "127.0.0.1", "http_port": 0,
            "broker_kind": self.broker_kind, "max_document_bytes": 4 * 1024 * MiB})
        self.callgrind: Callgrind | None = None
        if self.wants("instructions"):
            counted = self.results / f"callgrind-{self.kind}-service.out"
            self.service.under = callgrind_prefix(counted)
            self.callgrind = Callgrind(counted)
        self.exits.callback(self.service.stop)
        await self.service.start()
        if self.callgrind is not None:
            self.callgrind.pid = self.service.pid
        self.say(f"[{self.kind}] service at {self.service.url} (pid {self.service.pid})")
        if self.profile:
            await self._profile()
        # Idle connections kept as the clients keep them, under the service's keep-alive: reusing
        # one the service is closing at that moment fails ("Server disconnected ...").
        limits = httpx.Limits(max_connections=size.submit_concurrency + 8,
                              max_keepalive_connections=size.submit_concurrency + 8,
                              keepalive_expiry=KEEPALIVE_EXPIRY)
        self.http = await self.exits.enter_async_context(httpx.AsyncClient(
            base_url=self.service.url, verify=str(pki.ca_cert), timeout=120.0, limits=limits,
            headers={"Authorization": f"Bearer {self.service.token}"}))

        await self.guarded("connect", "devices connecting until online", self.fig_connect)
        await self.guarded("doorbell", "POST -> doorbell", self.fig_doorbell)
        await self.guarded("fleet", "jobs/s with the simulated fleet", self.fig_fleet)
        if self.fleet is not None:
            await self.fleet.stop()
            self.fleet = None
        await self.guarded("managers", "jobs/s with real Managers", self.fig_managers)
        await self.guarded("idle", "idle latencies", self.fig_idle)
        await self.guarded("big", "large document end to end", self.fig_big)
        await self.guarded("ipp", "ipp driver", self.fig_ipp)
        await self.guarded("transform", "PDF -> PWG raster", self.fig_transform)
        await self.guarded("instructions", "the service's instructions per job", self.fig_instructions)

    async def _profile(self) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.access(spy, os.X_OK):
            self.say("  --profile: py-spy is not installed (pip install py-spy); no profile")
            return
        self.results.mkdir(parents=True, exist_ok=True)
        out = self.results / f"profile-{self.kind}-service.speedscope.json"
        log = (self.dir / "py-spy.out").open("ab")
        proc = subprocess.Popen([spy, "record", "--pid", str(self.service.pid), "--format", "speedscope",
                                 "--output", str(out), "--rate", "100", "--nonblocking", "--gil"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def stop() -> None:
            from tests.bench.procs import stop_process

            stop_process(proc, signal.SIGINT, 60)
            self.say(f"  profile of the {self.kind} service: {out} (open it in https://www.speedscope.app)")
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                for line in profile_summary(out):
                    self.say(f"    {line}")

        self.exits.callback(stop)

    # -- figures ----------------------------------------------------------------------------------

    async def fig_onehop(self) -> None:
        self.onehop = await asyncio.to_thread(measure_onehop, self.broker, self.service_pw, self.hop_pw,
                                              self.size.onehop_messages)
        self.add(row(self.kind, "onehop", "broker one-hop latency p50 (QoS 1, paho pair)",
                     percentile(self.onehop, 50), "ms"))
        self.add(row(self.kind, "onehop", "broker one-hop latency p99 (QoS 1, paho pair)",
                     percentile(self.onehop, 99), "ms"))

    @property
    def onehop_p99(self) -> float | None:
        return percentile(self.onehop, 99) if self.onehop else None

    async def fig_msgrate(self) -> None:
        n = self.size.msgrate_messages
        rate, lost = await asyncio.to_thread(measure_msgrate, self.broker, self.service_pw, self.hop_pw, n)
        notes = [f"{lost} of {n} messages lost"] if lost else []
        if self.broker_kind == "mosquitto":
            self.add(row(self.kind, "msgrate", "broker msg/s (Mosquitto)", rate, "msg/s", note="; ".join(notes)))
            return
        baseline = None
        try:
            mosq = BrokerProc("mosquitto", self.dir / "mosquitto-baseline", self.broker.pki)
            await mosq.start()
            try:
                await asyncio.to_thread(mosq.add_users, {SERVICE_USER: self.service_pw, HOP_USER: self.hop_pw})
                baseline, lost = await asyncio.to_thread(measure_msgrate, mosq, self.service_pw, self.hop_pw, n)
                if lost:
                    notes.append(f"Mosquitto lost {lost} of {n}")
            finally:
                mosq.stop()
        except Unavailable as exc:
            notes.append(f"no Mosquitto baseline: {exc}")
        note = "; ".join(notes)
        self.add(row(self.kind, "msgrate", "embedded broker msg/s vs Mosquitto", rate, "msg/s", baseline=baseline,
                     baseline_label="Mosquitto, same run", note=note))

    def fleet_processes(self) -> int:
        """Fleet processes for this many devices: one per ``FLEET_DEVICES_PER_PROCESS``, at most
        one per core (a process does its TLS handshakes on one core)."""
        return max(1, min(os.cpu_count() or 1, math.ceil(len(self.fleet_users) / FLEET_DEVICES_PER_PROCESS)))

    async def start_fleet(self, mode: str, resume: bool, under: list[str] | None = None) -> Fleet:
        return await Fleet.start(self.dir / "fleet", self.broker, self.fleet_users, mode,
                                 processes=self.fleet_processes(), resume=resume, under=under)

    async def _broker_alone(self, resume: bool) -> tuple[dict, int, int, float]:
        """The fleet's devices CONNECT and SUBSCRIBE only: (event, RSS before, RSS with them, CPU s)."""
        n = len(self.fleet_users)
        rss_before = rss_bytes(self.broker.pid)
        meter = CpuMeter({"broker": [self.broker.pid]}).start()
        fleet = await self.start_fleet("broker", resume)
        meter.pids["fleet"] = fleet.pids
        try:
            event = await fleet.wait_connected(120 + n * 0.2)
            used = meter.stop()
            cpu = used["broker"]
            event["fleet_cpu"] = used["fleet"]
            await asyncio.sleep(0.5)
            rss_after = rss_bytes(self.broker.pid)
        finally:
            await fleet.stop()
        if event["n_errors"]:
            raise BenchError(f"{event['n_errors']} devices could not connect: {event['errors']}")
        return event, rss_before, rss_after, cpu

    async def fig_connect_baseline(self) -> None:
        n = len(self.fleet_users)
        # The first connection of each device pays its password check and a full TLS handshake;
        # a broker remembers a good password (the embedded broker caches it) and a device that
        # reconnects resumes its TLS session, so a reconnect storm costs less: both shown.
        # Memory from the first time: a process seldom gives freed memory back, so a second
        # round of sessions reuses it and would look almost free.
        cold, rss_before, rss_after, cold_cpu = await self._broker_alone(resume=False)
        event, _before, _after, cpu = await self._broker_alone(resume=FLEET_RESUMES_TLS)
        self.connect_baseline = event["elapsed"]
        per_device = (rss_after - rss_before) / max(n, 1) / 1024
        self.add(row(self.kind, "connect", f"broker alone: {n} TLS connections, first time (passwords checked)",
                     cold["elapsed"], "s", note=f"broker CPU per device: {cold_cpu / n * 1000:.1f} ms; "
                     f"the fleet's (TLS client side): {cold['fleet_cpu'] / n * 1000:.1f} ms"))
        again = "again, TLS sessions resumed" if FLEET_RESUMES_TLS else "again"
        self.add(row(self.kind, "connect", f"broker alone: {n} TLS connections {again} (CONNECT + SUBSCRIBE)",
                     event["elapsed"], "s", note=f"broker CPU per device: {cpu / n * 1000:.1f} ms; "
                     f"the fleet's: {event['fleet_cpu'] / n * 1000:.1f} ms; "
                     f"{event['processes']} fleet process(es), {event['resumed']} TLS sessions resumed"))
        self.add(row(self.kind, "connect", f"broker memory per connected TLS device ({n} devices)", per_device,
                     "KB", note="" if n >= 100 else "few devices: RSS noise dominates"))

    async def fig_connect(self) -> None:
        n = len(self.fleet_users)
        meter = self.meter()
        rss_before = rss_bytes(self.service.pid)
        fleet = await self.start_fleet("service", FLEET_RESUMES_TLS)
        self.fleet = fleet
        meter.pids["fleet"] = fleet.pids
        event = await fleet.wait_connected(180 + n * 0.2)
        used = meter.stop()
        if event["n_errors"]:
            raise BenchError(f"{event['n_errors']} devices did not come online: {event['errors']}")
        rss = rss_bytes(self.service.pid)
        listed = (await self.http.get("/api/v1/services", params={"kind": "print"})).json()["services"]
        online = sum(1 for s in listed if s["online"] and s["name"].startswith("fleet-"))
        note = "" if online == n else f"the service lists {online} of {n} fleet services online"
        at_goal = n >= 10000 and self.broker_kind == "mosquitto"
        baseline = getattr(self, "connect_baseline", None)
        self.add(row(self.kind, "connect", f"{n} simulated devices connecting (hello + attributes): all online",
                     event["elapsed"], "s", baseline=baseline, baseline_label="broker alone, same devices",
                     goal="<= 10 s for 10,000 on Mosquitto",
                     check=(lambda v, b: v <= 10) if at_goal else None, note=note))
        self.add(row(self.kind, "connect", "service CPU per device connecting", used["service"] / n * 1000,
                     "ms", baseline=used["broker"] / n * 1000, baseline_label="broker CPU per device",
                     note=f"the fleet's CPU per device: {used['fleet'] / n * 1000:.1f} ms "
                     f"({event['processes']} process(es), {event['resumed']} TLS sessions resumed)"))
        self.add(row(self.kind, "connect", f"service RSS with {n} devices online", rss / MiB, "MB",
                     goal="<= 512 MB with 10,000", check=(lambda v, b: v <= 512) if at_goal else None,
                     note=f"growth while they connected: {(rss - rss_before) / MiB:.1f} MB"))
        self.connect_floor(used, n)

    def connect_floor(self, used: dict[str, float], n: int) -> None:
        """What this machine's cores allow for a connect storm: every process of the run (the
        fleet's TLS clients, the broker, the service, PostgreSQL) shares them, so N devices
        take at least N x (CPU per device of all of them) / cores. Printed beside the 10 s goal
        for 10,000: how much of a miss is the service's and how much is the rest."""
        cores, per_device, everything, others = cpu_shares(used, n)
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in per_device.items())
        self.add(row(self.kind, "connect", f"least time {cores} cores allow {n} devices at the CPU per device "
                     "of every process", n * everything / 1000 / cores, "s",
                     note=f"CPU per device of every process: {everything:.2f} ms ({parts}); 10,000 devices: "
                          f"{10000 * everything / 1000 / cores:.1f} s, with the service costing nothing "
                          f"{10000 * others / 1000 / cores:.1f} s",
                     cpu_ms_per_device=per_device, cores=cores))

    def fleet_targets(self) -> list[str]:
        names = list(self.fleet_users)[: self.size.fleet_active]
        if not names or self.fleet is None:
            raise BenchError("the fleet is not connected (the connect group must run first)")
        return names

    async def fig_doorbell(self) -> None:
        if self.fleet is None:
            await self.fig_connect()
        assert self.fleet is not None
        targets = self.fleet_targets()
        n, rate = self.size.doorbell_jobs, self.size.doorbell_rate
        posted: dict[int, tuple[float, float]] = {}
        started = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            job_id, before, after = await self.submit(targets[i % len(targets)])
            posted[job_id] = (before, after)

        await asyncio.gather(*(one(i) for i in range(n)))
        await self.fleet.wait_done(set(posted), 60 + n)
        rung = {j: self.fleet.doorbells[j] for j in posted if j in self.fleet.doorbells}
        latencies = [(t - posted[j][0]) * 1000 for j, t in rung.items()]
        # Where the time goes: the POST's own answer under the same load (the client, TLS and the
        # service's submit), and the doorbell's arrival against that answer (the publish, the
        # broker and the fleet's loop; negative when the doorbell came first).
        answered = [(after - before) * 1000 for before, after in posted.values()]
        past_201 = [(t - posted[j][1]) * 1000 for j, t in rung.items()]
        missing = len(posted) - len(latencies)
        connected = len(self.fleet_users)
        note = (f"the POST's own 201 under the same load: p50 {percentile(answered, 50):.1f} ms, p99 "
                f"{percentile(answered, 99):.1f} ms; the doorbell at the device after the 201: p50 "
                f"{percentile(past_201, 50):.1f} ms, p99 {percentile(past_201, 99):.1f} ms")
        if missing:
            note += f"; {missing} jobs had no doorbell (fetched from a sync)"
        p99 = percentile(latencies, 99)
        self.add(row(self.kind, "doorbell", f"POST -> doorbell at the device p99, {rate:.0f} jobs/s, "
                     f"{connected} devices connected", p99, "ms", baseline=self.onehop_p99,
                     baseline_label="broker one-hop p99", goal="<= 3x broker one-hop p99",
                     check=(lambda v, b: v <= 3 * b) if self.onehop_p99 is not None else None, note=note,
                     p50=percentile(latencies, 50), submit_p50=percentile(answered, 50),
                     submit_p99=percentile(answered, 99), after_201_p50=percentile(past_201, 50),
                     after_201_p99=percentile(past_201, 99)))
        if connected >= 10000:
            self.add(row(self.kind, "doorbell", f"POST -> doorbell p99 with {connected} devices connected", p99,
                         "ms", goal="<= 50 ms", check=lambda v, b: v <= 50))

    async def fig_fleet(self) -> None:
        if self.fleet is None:
            await self.fig_connect()
        assert self.fleet is not None
        targets = self.fleet_targets()
        n = self.size.fleet_jobs
        meter = self.meter(fleet=self.fleet.pids)
        switched = switches(self.service.pid)
        started = time.monotonic()
        job_ids = await self.submit_many(targets, n, self.size.submit_concurrency)
        await self.fleet.wait_done(set(job_ids), 120 + n)
        elapsed = time.monotonic() - started
        used = meter.stop()
        switched = switches(self.service.pid).since(switched)
        failed = [self.fleet.done[j][0] for j in job_ids if self.fleet.done[j][0] != "completed"]
        note = f"{len(failed)} jobs not completed, e.g. {failed[0]}" if failed else ""
        rate = n / elapsed
        goal = self.kind == "mosquitto-pg"
        self.add(row(self.kind, "fleet", f"completed jobs/s, simulated fleet ({len(targets)} devices), "
                     f"{n} jobs", rate, "jobs/s", goal=">= 300 jobs/s (Mosquitto + PostgreSQL)" if goal else "",
                     check=(lambda v, b: v >= 300) if goal else None, note=note))
        self.add(row(self.kind, "fleet", "service CPU per completed job (fleet)", used["service"] / n * 1000, "ms",
                     baseline=used["broker"] / n * 1000, baseline_label="broker CPU/job",
                     goal="<= 5 ms", check=lambda v, b: v <= 5, note=switches_note(switched, n),
                     fleet_ms_per_job=used["fleet"] / n * 1000, **switches_extra(switched, n)))
        self.ceiling("fleet", used, n, "fleet")

    async def fig_instructions(self) -> None:
        """The service's instructions per print job through the fleet, and the fleet's for the same
        jobs, counted by callgrind: figures the machine's changing speed does not move
        (tests/bench/instructions.py)."""
        assert self.callgrind is not None
        counted = self.results / f"callgrind-{self.kind}-fleet.out"
        self.fleet = fleet = await self.start_fleet("service", FLEET_RESUMES_TLS, under=callgrind_prefix(counted))
        devices = Callgrind(counted)
        devices.pid = fleet.pids[0]
        event = await fleet.wait_connected(600)
        if event["n_errors"]:
            raise BenchError(f"{event['n_errors']} devices did not come online: {event['errors']}")
        targets = self.fleet_targets()
        concurrency = self.size.submit_concurrency
        # Uncounted first: the first jobs make what later ones reuse (statement plans, pooled
        # connections, the devices' download connections).
        warm = await self.submit_many(targets, len(targets), concurrency)
        await fleet.wait_done(set(warm), 600)
        n = self.size.instruction_jobs
        await asyncio.gather(self.callgrind.start(), devices.start())
        job_ids = await self.submit_many(targets, n, concurrency)
        await fleet.wait_done(set(job_ids), 600 + 5 * n)
        service, fleet_count = await asyncio.gather(self.callgrind.stop(), devices.stop())
        failed = [fleet.done[j][0] for j in job_ids if fleet.done[j][0] != "completed"]
        if failed:
            raise BenchError(f"{len(failed)} of {n} counted jobs did not complete, e.g. {failed[0]}")
        self.add(row(self.kind, "instructions", f"service instructions per completed job (fleet, {len(targets)} "
                     f"devices, {n} jobs counted)", service / n / 1e6, "M", baseline=fleet_count / n / 1e6,
                     baseline_label="the fleet's, same jobs",
                     note="counted by callgrind: user space only (no kernel work), within a few percent from run "
                          "to run whatever the machine's speed; the fleet is the devices' side "
                          f"of the same jobs ({len(targets)} devices in one process)",
                     instructions_per_job=service / n, fleet_instructions_per_job=fleet_count / n, jobs_counted=n))

    async def _ensure_managers(self, count: int) -> list[ManagerProc]:
        names = list(self.manager_users)
        while len(self.managers) < count:
            name = names[len(self.managers)]
            self.managers.append(await asyncio.to_thread(
                start_manager, self.dir / "managers", name, self.manager_users[name], self.broker))
        await self.wait_online([m.device_id for m in self.managers[:count]], 120 + 5 * count)
        return self.managers[:count]

    @staticmethod
    def _printed(managers: list[ManagerProc], job_ids: set[int]) -> int:
        found = 0
        for manager in managers:
            with contextlib.suppress(FileNotFoundError), os.scandir(manager.output) as it:
                for entry in it:
                    name = entry.name
                    if name.startswith("job-") and "-doc-" in name:
                        with contextlib.suppress(ValueError):
                            if int(name[4:name.index("-doc-")]) in job_ids:
                                found += 1
        return found

    async def fig_managers(self) -> None:
        n = self.size.jobs_per_manager_round
        for count in self.size.managers:
            managers = await self._ensure_managers(count)
            meter = self.meter(managers=[m.pid for m in managers])
            switched = switches(self.service.pid)
            started = time.monotonic()
            job_ids = await self.submit_many([m.device_id for m in managers], n, self.size.submit_concurrency)
            wanted = set(job_ids)
            deadline = time.monotonic() + 120 + n * 2
            while self._printed(managers, wanted) < n:
                if time.monotonic() > deadline:
                    raise BenchError(f"only {self._printed(managers, wanted)} of {n} jobs printed in time")
                await asyncio.sleep(0.02)
            await self.wait_ended(wanted, 60)
            elapsed = time.monotonic() - started
            used = meter.stop()
            switched = switches(self.service.pid).since(switched)
            states = await self.count_ended(job_ids)
            note = "" if states.get("completed") == n else f"end states: {states}"
            goal = count >= 16 and self.kind == "embedded"
            self.add(row(self.kind, "managers", f"completed jobs/s, {count} Manager process(es), file driver",
                         n / elapsed, "jobs/s", goal=">= 100 jobs/s (16 Managers, embedded)" if goal else "",
                         check=(lambda v, b: v >= 100) if goal else None, note=note))
            self.add(row(self.kind, "managers", f"service CPU per completed job, {count} Manager(s)",
                         used["service"] / n * 1000, "ms", baseline=used["broker"] / n * 1000,
                         baseline_label="broker CPU/job", goal="<= 5 ms", check=lambda v, b: v <= 5,
                         note=f"Managers' CPU per job: {used['managers'] / n * 1000:.1f} ms; the service's: "
                              f"{switches_note(switched, n)}",
                         manager_ms_per_job=used["managers"] / n * 1000, **switches_extra(switched, n)))
            self.ceiling("managers", used, n, f"{count} Manager(s)")

    def _job_form(self, service: str, data: bytes | None = None) -> dict[str, tuple[str | None, bytes, str]]:
        job = {"ticket": {}, "service": service, "document_format": "application/pdf", "document_name": "bench.pdf"}
        return {"job": (None, orjson.dumps(job), "application/json"),
                "document": ("bench.pdf", data or self.pdf, "application/pdf")}

    @contextlib.asynccontextmanager
    async def bare_sink(self, service: str) -> AsyncIterator[Callable[[], Awaitable[float]]]:
        """A bare HTTPS sink (tests/bench/sink.py) and a call that POSTs it the submit's very
        request with the same client settings: the milliseconds it took. The floor of the
        submit's latency on this machine: TLS, loopback and the client, with no service."""
        async with running_sink(self.broker.pki, self.dir / "idle-sink.bin") as port:
            limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=KEEPALIVE_EXPIRY)
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=str(self.broker.pki.ca_cert),
                                         timeout=30.0, limits=limits,
                                         headers={"Authorization": f"Bearer {self.service.token}"}) as http:
                async def post() -> float:
                    before = time.perf_counter()
                    response = await http.post("/api/v1/jobs", files=self._job_form(service))
                    elapsed = (time.perf_counter() - before) * 1000
                    if response.status_code != 201:
                        raise BenchError(f"the bare sink answered {response.status_code}")
                    return elapsed

                yield post

    async def fig_idle(self) -> None:
        (manager,) = await self._ensure_managers(1)
        submit, processing, completed, floor = [], [], [], []
        async with self.bare_sink(manager.device_id) as post_to_sink:
            for _ in range(self.size.idle_jobs):
                began = time.monotonic()
                job_id, before, after = await self.submit(manager.device_id)
                submit.append((after - before) * 1000)
                deadline = time.monotonic() + 60
                while self._printed([manager], {job_id}) < 1:
                    if time.monotonic() > deadline:
                        raise BenchError(f"job {job_id} not printed within 60 s")
                    await asyncio.sleep(0.005)
                while True:
                    job = (await self.http.get(f"/api/v1/jobs/{job_id}")).json()
                    if job["state"] in ("completed", "aborted", "canceled") or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.01)
                if job["state"] != "completed":
                    raise BenchError(f"job {job_id} ended {job['state']}")
                events = {e["state"]: e["at"] for e in reversed(job["history"])}
                processing.append((events.get("processing", math_nan()) - after) * 1000)
                completed.append((events.get("completed", math_nan()) - after) * 1000)
                # The floor at the same pace: halfway through the pause, as idle as the submit.
                await asyncio.sleep(max(0.0, (began + 1 / self.size.idle_rate - time.monotonic()) / 2))
                floor.append(await post_to_sink())
                await asyncio.sleep(max(0.0, began + 1 / self.size.idle_rate - time.monotonic()))
        hop = self.onehop_p99
        label = "broker one-hop p99"
        sink_label = "the same POST to a bare HTTPS sink"
        self.add(row(self.kind, "idle", "submit -> 201 p50 (10 KB multipart, idle)", percentile(submit, 50), "ms",
                     baseline=percentile(floor, 50), baseline_label=sink_label, goal="<= 5 ms",
                     check=lambda v, b: v <= 5,
                     note=f"the client (httpx), TLS and loopback alone take {percentile(floor, 50):.1f} ms of it: "
                          "the same request to a bare HTTPS sink, at the same pace"
                          + (f"; broker one-hop p99 {hop:.2f} ms" if hop is not None else "")))
        self.add(row(self.kind, "idle", "submit -> 201 p99 (10 KB multipart, idle)", percentile(submit, 99), "ms",
                     baseline=percentile(floor, 99), baseline_label=sink_label))
        self.add(row(self.kind, "idle", "201 -> processing p50 (idle, file driver)", percentile(processing, 50), "ms",
                     baseline=hop, baseline_label=label))
        self.add(row(self.kind, "idle", "201 -> completed p50 (idle, file driver)", percentile(completed, 50), "ms",
                     baseline=hop, baseline_label=label, goal="<= 25 ms", check=lambda v, b: v <= 25))

    async def fig_big(self) -> None:
        from tests.bench.big import measure_big

        (manager,) = await self._ensure_managers(1)
        for r in await measure_big(self, manager):
            self.add(r)

    async def fig_ipp(self) -> None:
        from tests.bench.ipp import measure_ipp

        for r in await measure_ipp(self):
            self.add(r)

    async def fig_transform(self) -> None:
        from tests.bench.transform import measure

        for r in await measure(self.kind, self.size.transform_pages):
            self.add(r)


def cpu_shares(used: dict[str, float], count: int) -> tuple[int, dict[str, float], float, float]:
    """(this machine's cores, each process's CPU ms per job or device, all of them, all but the
    service's): what the bounds of ``ceiling`` and ``connect_floor`` are worked out from."""
    per_unit = {name: cpu / count * 1000 for name, cpu in used.items()}
    everything = sum(per_unit.values())
    return len(os.sched_getaffinity(0)), per_unit, everything, everything - per_unit["service"]


def profile_summary(path: Path, top: int = 12) -> list[str]:
    """The functions where the profiled process spent most samples (self time, all threads)."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: dict[int, int] = {}
    total = 0
    for profile in data["profiles"]:
        for stack in profile.get("samples", []):
            if stack:
                own[stack[-1]] = own.get(stack[-1], 0) + 1
                total += 1
    out = [f"top functions by own samples ({total} samples, all threads):"]
    for index, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        frame = frames[index]
        where = f"{Path(frame.get('file', '?')).name}:{frame.get('line', '?')}"
        out.append(f"{100 * count / max(total, 1):5.1f}%  {frame.get('name', '?')}  ({where})")
    return out


def math_nan() -> float:
    return float("nan")

