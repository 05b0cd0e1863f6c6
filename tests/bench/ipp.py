"""The ipp driver's figure: one-page jobs through a Manager whose ``ipp`` driver prints on an
ippeveprinter, against CUPS's ``lp`` to a driverless queue on the same ippeveprinter.

ippeveprinter wants avahi (and avahi wants D-Bus) even with ``-r off``: when avahi is not
running and we are root, a private D-Bus and avahi are started for the figure and stopped after.
cupsd is a private one (its own configuration, spool and port under a fresh /tmp directory,
which its filters, running as user lp, can traverse). The printer's print command only reads
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

from tests.bench.procs import Unavailable, start_manager, stop_process
from tests.bench.report import Row, row

if TYPE_CHECKING:
    from tests.bench.runner import StackRun

SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/>
    <allow send_type="method_return"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/>
    <allow receive_type="method_return"/><allow receive_type="error"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""

CUPSD_CONF = """Listen 127.0.0.1:{port}
LogLevel warn
WebInterface No
Browsing Off
DefaultShared No
<Location />
  Order allow,deny
  Allow 127.0.0.1
</Location>
<Policy default>
  <Limit All>
    Order allow,deny
    Allow 127.0.0.1
  </Limit>
</Policy>
"""

PRINT_SCRIPT = "#!/bin/sh\ncat \"$1\" > /dev/null\necho 'ATTR: job-impressions-completed=1' >&2\nexit 0\n"


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)
    if not found:
        raise Unavailable(f"{name} is needed (apt-get install {package})")
    return found


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def daemon(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def mdns(root: Path) -> Iterator[dict[str, str]]:
    avahi = tool("avahi-daemon", "avahi-daemon")
    if subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode == 0:
        yield {}
        return
    dbus = tool("dbus-daemon", "dbus")
    if os.geteuid() != 0:
        raise Unavailable("ippeveprinter needs avahi-daemon, which is not running; only root can start one")
    socket_path = root / "bus"
    (root / "bus.conf").write_text(BUS_CONF.format(socket=socket_path))
    (root / "avahi.conf").write_text(AVAHI_CONF)
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
    with daemon([dbus, f"--config-file={root / 'bus.conf'}", "--nofork"], root / "dbus.log"):
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        args = [avahi, "--no-drop-root", "--no-chroot", "--no-rlimits", "-f", str(root / "avahi.conf")]
        with daemon(args, root / "avahi.log", env) as proc:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode == 0:
                    break
                time.sleep(0.1)
            if proc.poll() is not None:
                raise RuntimeError(f"avahi-daemon did not start: {(root / 'avahi.log').read_text()[-500:]}")
            yield {"DBUS_SYSTEM_BUS_ADDRESS": env["DBUS_SYSTEM_BUS_ADDRESS"]}


@contextlib.contextmanager
def eve_printer(root: Path, extra_env: dict[str, str]) -> Iterator[str]:
    ippeve = tool("ippeveprinter", "cups-ipp-utils")
    spool, home = root / "eve-spool", root / "eve-home"
    spool.mkdir()
    home.mkdir()
    script = root / "eve-print.sh"
    script.write_text(PRINT_SCRIPT)
    script.chmod(0o755)
    port = free_port()
    env = {**os.environ, **extra_env, "HOME": str(home)}
    args = [ippeve, "-p", str(port), "-n", "localhost", "-r", "off", "-d", str(spool), "-K", str(home),
            "-f", "application/pdf", "-c", str(script), "-M", "Bench", "-m", "Printer 1", "bench"]
    with daemon(args, root / "eve.log", env) as proc:
        if not wait_port(port, 15) or proc.poll() is not None:
            raise RuntimeError(f"ippeveprinter did not start: {(root / 'eve.log').read_text()[-1000:]}")
        yield f"ipp://127.0.0.1:{port}/ipp/print"


@contextlib.contextmanager
def private_cupsd(root: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    cupsd = tool("cupsd", "cups")
    for name in ("lpadmin", "lp", "lpstat"):
        tool(name, "cups-client")
    if not os.access("/usr/lib/cups/filter/pdftopdf", os.X_OK):
        raise Unavailable("/usr/lib/cups/filter/pdftopdf is needed (apt-get install cups-filters)")
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    dirs = {d: root / d for d in ("conf", "spool", "cache", "state", "tmp", "log", "home")}
    for path in dirs.values():
        path.mkdir()
    port = free_port()
    (dirs["conf"] / "cupsd.conf").write_text(CUPSD_CONF.format(port=port))
    as_root = os.geteuid() == 0
    (dirs["conf"] / "cups-files.conf").write_text("\n".join([
        f"ServerRoot {dirs['conf']}", f"RequestRoot {dirs['spool']}", f"CacheDir {dirs['cache']}",
        f"StateDir {dirs['state']}", f"TempDir {dirs['tmp']}", f"ErrorLog {dirs['log']}/error_log",
        f"AccessLog {dirs['log']}/access_log", f"PageLog {dirs['log']}/page_log",
        f"Printcap {dirs['state']}/printcap", *(["User lp", "Group lp", "SystemGroup root"] if as_root else []), ""]))
    env = {**os.environ, "HOME": str(dirs["home"]), "CUPS_SERVERROOT": str(dirs["conf"]), "LC_ALL": "C"}
    args = [cupsd, "-f", "-c", str(dirs["conf"] / "cupsd.conf"), "-s", str(dirs["conf"] / "cups-files.conf")]
    with daemon(args, dirs["log"] / "cupsd.out", env) as proc:
        if not wait_port(port, 15):
            raise RuntimeError("cupsd did not start")
        yield f"127.0.0.1:{port}", env, proc


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
                extra_env = stack.enter_context(mdns(home))
                printer = stack.enter_context(eve_printer(home, extra_env))
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                stack.close()
                time.sleep(5)
                continue
            yield printer
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


def cups_baseline(root: Path, printer: str, document: Path, jobs: int) -> tuple[float, float]:
    """(jobs/s, cupsd CPU seconds per job) for ``jobs`` lp submissions to a driverless queue."""
    with private_cupsd(root) as (server, env, cupsd):
        run_tool(["lpadmin", "-h", server, "-p", "bench", "-E", "-v", printer, "-m", "everywhere"], env)
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
                cups_rate, cups_cpu = await asyncio.to_thread(cups_baseline, root / "cups", printer, document, jobs)
            except (Unavailable, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
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
