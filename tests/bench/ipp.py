"""The ipp driver's figure: one-page jobs through a Manager whose ``ipp`` driver prints on an
ippeveprinter, against CUPS's ``lp`` to a driverless queue on the same ippeveprinter.

The printer, its mDNS daemons and cupsd are the tests' (tests.support): ippeveprinter wants
avahi (and avahi wants D-Bus) even with ``-r off``, so when avahi is not running and we are
root a private D-Bus and avahi are started for the figure and stopped after; cupsd is a private
one (its own configuration, spool and port under a fresh /tmp directory, which its filters,
running as user lp, can traverse), logging at ``warn``. The printer's print command only reads
the document, so both paths wait on the same printer. CPU per job: the Manager's (its driver)
against cupsd's, with the filters and backends it ran (cutime + cstime).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.bench.procs import Unavailable, start_manager, stop_process
from tests.bench.report import Row, row
from tests.support.cupsd import cupsd_server, queue_has_its_ppd
from tests.support.ipptools import ippeveprinter

if TYPE_CHECKING:
    from tests.bench.runner import StackRun

PRINT_SCRIPT = "#!/bin/sh\ncat \"$1\" > /dev/null\necho 'ATTR: job-impressions-completed=1' >&2\nexit 0\n"


@contextlib.contextmanager
def available() -> Iterator[None]:
    """tests.support says a missing tool with pytest's skip (or fail, under CI=true): the
    bench prints it as a figure not measured (tests/test_bench.py fails on it under CI)."""
    try:
        yield
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise Unavailable(str(exc)) from None


@contextlib.contextmanager
def printer_with_mdns(root: Path, attempts: int = 6) -> Iterator[str]:
    """An ippeveprinter with its mDNS daemons. Another program's private avahi (the IPP tests
    start one on a D-Bus of their own) passes ``avahi-daemon --check`` and forbids a second one,
    yet ippeveprinter cannot reach it: wait for it to go and try again, a bounded number of times."""
    for attempt in range(attempts):
        home = root / f"try-{attempt}"
        home.mkdir()
        with contextlib.ExitStack() as stack:
            try:
                with available():
                    printer = stack.enter_context(ippeveprinter(home, PRINT_SCRIPT, "application/pdf", "Bench",
                                                                "Printer 1", "bench"))
            except AssertionError:
                if attempt == attempts - 1:
                    raise
                stack.close()
                time.sleep(5)
                continue
            yield printer.uri
            return


def cpu_with_children(pid: int) -> float:
    """utime + stime + cutime + cstime: a daemon with the filters and backends it waited for."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_tool(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return done.stdout


def cups_baseline(printer: str, document: Path, jobs: int) -> tuple[float, float]:
    """(jobs/s, cupsd CPU seconds per job) for ``jobs`` lp submissions to a driverless queue."""
    with available(), cupsd_server(log_level="warn", access_log_level="actions") as daemon:
        server, env, cupsd = daemon.server, daemon.env, daemon.proc
        run_tool(["lpadmin", "-h", server, "-p", "bench", "-E", "-v", printer, "-m", "everywhere"], env)
        # CUPS writes the queue's PPD after lpadmin returns; a job sent before it is aborted.
        deadline = time.monotonic() + 60
        while not queue_has_its_ppd(run_tool(["lpoptions", "-h", server, "-p", "bench"], env, 30)):
            if time.monotonic() > deadline:
                raise RuntimeError("CUPS did not make the bench queue's PPD in time")
            time.sleep(0.1)
        before = cpu_with_children(cupsd.pid)
        started = time.monotonic()
        for _ in range(jobs):
            run_tool(["lp", "-h", server, "-d", "bench", str(document)], env, 60)
        deadline = time.monotonic() + 60 + jobs * 10
        while run_tool(["lpstat", "-h", server, "-o", "bench"], env, 30).strip():
            if time.monotonic() > deadline:
                raise RuntimeError("CUPS did not finish its jobs in time")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        cpu = cpu_with_children(cupsd.pid) - before
    return jobs / elapsed, cpu / jobs


async def measure_ipp(run: StackRun) -> list[Row]:
    from cloud_service.ipp.conformance import minimal_pdf
    from tests.bench.procs import CpuMeter

    jobs = run.size.ipp_jobs
    root = Path(tempfile.mkdtemp(prefix="cloudimaging-bench-ipp-"))
    root.chmod(0o755)  # cupsd's filters run as lp and must traverse to the spool
    document = root / "page.pdf"
    document.write_bytes(minimal_pdf(pages=1))
    manager = None
    try:
        with contextlib.ExitStack() as stack:
            printer = await asyncio.to_thread(lambda: stack.enter_context(printer_with_mdns(root)))
            name = "ipp-bench"
            password = run.manager_users.get(name)
            if password is None:
                from broker.credentials import generate_password

                password = generate_password()
                await asyncio.to_thread(run.broker.add_users, {name: password})
                run.manager_users[name] = password
            manager = await asyncio.to_thread(start_manager, run.dir / "managers", name, password, run.broker,
                                              "ipp", {"uri": printer}, None)
            await run.wait_online([name], 120)
            meter = CpuMeter({"service": [run.service.pid], "manager": [manager.pid]}).start()
            started = time.monotonic()
            pdf = document.read_bytes()
            job_ids = [(await run.submit(name, pdf))[0] for _ in range(jobs)]
            await run.wait_ended(job_ids, 60 + jobs * 15, interval=0.5)
            elapsed = time.monotonic() - started
            used = meter.stop()
            states = await run.count_ended(job_ids)
            cups_rate = cups_cpu = None
            cups_note = ""
            try:
                cups_rate, cups_cpu = await asyncio.to_thread(cups_baseline, printer, document, jobs)
            except (Unavailable, RuntimeError, AssertionError, OSError, subprocess.TimeoutExpired) as exc:
                cups_note = f"no CUPS baseline: {exc}"
    finally:
        if manager is not None:
            await asyncio.to_thread(stop_process, manager.proc)
        shutil.rmtree(root, ignore_errors=True)
    note = "; ".join(n for n in ("" if states.get("completed") == jobs else f"end states: {states}", cups_note) if n)
    rate = jobs / elapsed
    return [
        row(run.kind, "ipp", f"ipp driver: {jobs} one-page jobs to one ippeveprinter", rate, "jobs/s",
            baseline=cups_rate, baseline_label="CUPS lp to the same printer", goal=">= CUPS's jobs/s",
            check=(lambda v, b: v >= b) if cups_rate is not None else None, note=note),
        row(run.kind, "ipp", "ipp driver: Manager CPU per job", used["manager"] / jobs * 1000, "ms",
            baseline=cups_cpu * 1000 if cups_cpu is not None else None,
            baseline_label="cupsd + filters CPU per job", goal="<= 50 ms",
            check=lambda v, b: v <= 50, note=f"service CPU per job: {used['service'] / jobs * 1000:.0f} ms"),
    ]
