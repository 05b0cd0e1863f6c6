"""A private cupsd for tests: 127.0.0.1 on an ephemeral port, its own config, spool, state and
logs under a fresh /tmp directory, stopped by its process group at the end. The machine's own
CUPS is never touched. Missing tools skip (fail under CI=true)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ipptools import free_port, missing, need_tool, process, run, wait_port

CUPSD_CONF = """\
Listen 127.0.0.1:{port}
LogLevel {log_level}
AccessLogLevel {access_log_level}
MaxLogSize 0
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


@dataclass
class Cupsd:
    """A running private cupsd: its port, log directory, client environment and process."""

    port: int
    logs: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]

    @property
    def server(self) -> str:
        """``host:port`` for the CUPS tools' ``-h``."""
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def private_cupsd() -> Iterator[tuple[int, Path, dict[str, str]]]:
    """A cupsd of our own (see cupsd_server): (port, log directory, client environment)."""
    with cupsd_server() as cupsd:
        yield cupsd.port, cupsd.logs, cupsd.env


@contextlib.contextmanager
def cupsd_server(log_level: str = "debug", access_log_level: str = "all") -> Iterator[Cupsd]:
    """A cupsd of our own: 127.0.0.1:ephemeral, its own config, spool, state and logs.

    It lives under a fresh /tmp directory, not tmp_path: filters and backends run as user lp,
    which must be able to traverse to the spool (pytest's directories are private to root).
    ``log_level`` and ``access_log_level`` are cupsd's LogLevel and AccessLogLevel (``all``
    logs every operation; the bench takes ``warn`` and ``actions``: logging costs CPU).
    """
    cupsd = need_tool("cupsd", "cups")
    for tool in ("lpadmin", "lp", "lpstat"):
        need_tool(tool, "cups-client")
    if not os.access("/usr/lib/cups/filter/pdftopdf", os.X_OK):
        missing("/usr/lib/cups/filter/pdftopdf is needed (apt-get install cups-filters)")
    root = Path(tempfile.mkdtemp(prefix="cloudimaging-cups-"))
    root.chmod(0o755)
    try:
        dirs = {d: root / d for d in ("conf", "spool", "cache", "state", "tmp", "log", "home")}
        for path in dirs.values():
            path.mkdir()
        port = free_port()
        (dirs["conf"] / "cupsd.conf").write_text(CUPSD_CONF.format(port=port, log_level=log_level,
                                                                     access_log_level=access_log_level))
        as_root = os.geteuid() == 0
        (dirs["conf"] / "cups-files.conf").write_text("\n".join([
            f"ServerRoot {dirs['conf']}", f"RequestRoot {dirs['spool']}", f"CacheDir {dirs['cache']}",
            f"StateDir {dirs['state']}", f"TempDir {dirs['tmp']}", f"ErrorLog {dirs['log']}/error_log",
            f"AccessLog {dirs['log']}/access_log", f"PageLog {dirs['log']}/page_log",
            f"Printcap {dirs['state']}/printcap", *(["User lp", "Group lp", "SystemGroup root"] if as_root else []),
            ""]))
        (dirs["conf"] / "client.conf").write_text("AllowAnyRoot Yes\n")
        env = {**os.environ, "HOME": str(dirs["home"]), "CUPS_SERVERROOT": str(dirs["conf"]), "LC_ALL": "C"}
        args = [cupsd, "-f", "-c", str(dirs["conf"] / "cupsd.conf"), "-s", str(dirs["conf"] / "cups-files.conf")]
        with process(args, dirs["log"] / "cupsd.out", env) as proc:
            if not wait_port(port, 15):
                log = (dirs["log"] / "error_log")
                raise AssertionError(f"cupsd did not start: {log.read_text()[-3000:] if log.exists() else ''}")
            assert proc.poll() is None
            yield Cupsd(port, dirs["log"], env, proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


#: What lpoptions shows for a queue that has no PPD yet.
RAW_QUEUE = "printer-make-and-model='Local Raw Printer'"


def queue_has_its_ppd(lpoptions_output: str) -> bool:
    """Whether ``lpoptions -p`` shows a queue with a PPD (not the raw model)."""
    return "printer-make-and-model=" in lpoptions_output and RAW_QUEUE not in lpoptions_output


async def add_driverless_queue(server: str, name: str, device_uri: str, env: dict[str, str],
                               timeout: float = 90.0) -> None:
    """``lpadmin -m everywhere``, then wait until the queue has its PPD.

    CUPS 2.4 writes an everywhere queue's PPD in a background thread after lpadmin has returned.
    Until it is there the queue is raw ('Local Raw Printer'), and a PDF sent to it is aborted
    with "Unable to convert file 0 to printable format".
    """
    code, out = await run([need_tool("lpadmin", "cups-client"), "-h", server, "-p", name, "-E", "-v",
                           device_uri, "-m", "everywhere"], env, timeout)
    assert code == 0, out
    deadline = time.monotonic() + timeout
    while True:
        code, out = await run([need_tool("lpoptions", "cups-client"), "-h", server, "-p", name], env, 30)
        if code == 0 and queue_has_its_ppd(out):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"CUPS did not make the PPD of {name} within {timeout} s: {out}")
        await asyncio.sleep(0.1)
