"""CUPS tools and IPP requests for the IPP tests (and the bench): find a tool (skip, or fail
under CI=true), run daemons in their own process group on ephemeral loopback ports, start an
ippeveprinter with the mDNS daemons it wants, build and send IPP messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas.ipp.codec import Message, Tag, decode, request
from tests.support.stack import Stack

CUPS_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")


def need_tool(name: str, package: str) -> str:
    """The path of a program, or skip (fail under CI=true) saying which package has it."""
    found = shutil.which(name) or next((f"{d}/{name}" for d in CUPS_SBIN if os.access(f"{d}/{name}", os.X_OK)), None)
    if found:
        return found
    missing(f"{name} is needed (apt-get install {package})")
    raise AssertionError("unreachable")


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a daemon in its own process group; stop that group (by its id) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
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


@contextlib.contextmanager
def mdns_daemons() -> Iterator[dict[str, str]]:
    """Environment for ippeveprinter, which needs a running avahi-daemon and D-Bus even with
    ``-r off``: the running avahi, or a private D-Bus (its own socket, not the system bus) and
    an avahi-daemon on it, stopped at the end."""
    avahi = need_tool("avahi-daemon", "avahi-daemon")
    with _one_at_a_time():
        yield from _mdns_daemons(avahi)


@contextlib.contextmanager
def _one_at_a_time(timeout: float = 600.0) -> Iterator[None]:
    """Hold the machine-wide lock of the private mDNS daemons while they run.

    avahi-daemon keeps one pid file per machine, so two test workers each starting their own
    collide ("Daemon already running"), and a worker that finds the other's daemon running
    would take it for the system's while its D-Bus is private to the other: each waits for the
    other instead."""
    with (Path(tempfile.gettempdir()) / "cloudimaging-tests-mdns.lock").open("a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"another test held the mDNS daemons for {timeout:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mdns_daemons(avahi: str) -> Iterator[dict[str, str]]:
    if subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode == 0:
        yield {}
        return
    dbus = need_tool("dbus-daemon", "dbus")
    if os.geteuid() != 0:
        missing("avahi-daemon is not running and only root can start one")
    # A short directory: a unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ci-mdns-"))
    try:
        socket_path = root / "bus"
        (root / "bus.conf").write_text(BUS_CONF.format(socket=socket_path))
        (root / "avahi.conf").write_text(AVAHI_CONF)
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
        with process([dbus, f"--config-file={root / 'bus.conf'}", "--nofork"], root / "dbus.log"):
            deadline = time.monotonic() + 10
            while not socket_path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert socket_path.exists(), (root / "dbus.log").read_text()
            args = [avahi, "--no-drop-root", "--no-chroot", "--no-rlimits", "-f", str(root / "avahi.conf")]
            with process(args, root / "avahi.log", env) as proc:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and proc.poll() is None:
                    if subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode == 0:
                        break
                    time.sleep(0.1)
                assert proc.poll() is None, (root / "avahi.log").read_text()
                yield {"DBUS_SYSTEM_BUS_ADDRESS": env["DBUS_SYSTEM_BUS_ADDRESS"]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class EvePrinter:
    """A running ippeveprinter: its printer URI, process and log."""

    uri: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def ippeveprinter(root: Path, script: str, formats: str, make: str, model: str, name: str,
                  verbose: bool = False) -> Iterator[EvePrinter]:
    """CUPS's ippeveprinter on 127.0.0.1 (ephemeral port, no DNS-SD), its spool and home under
    ``root``, running ``script`` (a shell script's text) as its print command for each document."""
    ippeve = need_tool("ippeveprinter", "cups-ipp-utils")
    with mdns_daemons() as extra_env:
        spool, home = root / "eve-spool", root / "eve-home"
        spool.mkdir()
        home.mkdir()
        command = root / "eve-print.sh"
        command.write_text(script)
        command.chmod(0o755)
        port = free_port()
        env = {**os.environ, **extra_env, "HOME": str(home)}
        args = [ippeve, "-p", str(port), "-n", "localhost", "-r", "off", "-d", str(spool), "-K", str(home),
                "-f", formats, "-c", str(command), "-M", make, "-m", model, *(["-vvv"] if verbose else []), name]
        log = root / "eve.log"
        with process(args, log, env) as proc:
            if not wait_port(port, 15) or proc.poll() is not None:
                raise AssertionError(f"ippeveprinter did not start: {log.read_text()[-3000:]}")
            yield EvePrinter(f"ipp://127.0.0.1:{port}/ipp/print", proc, log)


async def run(args: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> tuple[int, str]:
    """Run a tool without blocking the loop that serves the stack; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd,
                                                start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"{args[0]} did not finish within {timeout} s") from None
    return proc.returncode or 0, out.decode(errors="replace")


def cups_client_env(tmp: Path) -> dict[str, str]:
    """A throwaway CUPS client setup: its own HOME and client.conf, never /etc/cups."""
    home = tmp / "home"
    conf = tmp / "client"
    home.mkdir(parents=True, exist_ok=True)
    conf.mkdir(parents=True, exist_ok=True)
    # CUPS 2.4 cannot be given a CA file: AllowAnyRoot (its default) accepts our private CA's
    # certificate over TLS; the token still has to be right.
    (conf / "client.conf").write_text("AllowAnyRoot Yes\nAllowExpiredCerts No\n")
    return {**os.environ, "HOME": str(home), "CUPS_SERVERROOT": str(conf), "LC_ALL": "C"}


def ipp_url(stack: Stack, name: str, user: str | None = None, token: str | None = None) -> str:
    """The ipps:// URI of a printer, optionally with user:token for CUPS tools."""
    netloc = stack.service.url.removeprefix("https://")
    auth = f"{user}:{token}@" if user and token else ""
    return f"ipps://{auth}{netloc}/ipp/print/{name}"


async def ipp(stack: Stack, name: str, msg: Message, *, auth: str | None = "bearer", user: str = "admin",
              token: str | None = None, data: bytes | None = None, path: str | None = None) -> httpx.Response:
    token = token or stack.token
    headers = {"Content-Type": "application/ipp", "Authorization": ""}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    elif auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
    body = msg.encode() + (data or b"")
    return await stack.http.post(path or f"/ipp/print/{name}", content=body, headers=headers)


def reply(response: httpx.Response) -> Message:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/ipp"
    return decode(response.content)[0]


def new(stack: Stack, op: int, name: str, **attrs: tuple[int, object]) -> Message:
    msg = request(op, request_id=int(time.monotonic() * 1000) % 100000 + 1)
    group = msg.operation()
    group.add("printer-uri", Tag.URI, ipp_url(stack, name))
    for key, (tag, value) in attrs.items():
        group.add(key.replace("_", "-"), tag, value)
    return msg


async def wait_for(predicate: object, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()  # type: ignore[operator]
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


# ---------------------------------------------------------------------------- IPP Everywhere samples

#: The documents ipp-everywhere.test prints as PWG raster: (name, width pt, height pt, pages, photo).
EVERYWHERE_DOCUMENTS = (("color.jpg-4x6", 288, 432, 1, True), ("gray.jpg-4x6", 288, 432, 1, True),
                        ("document-a4", 595, 842, 3, False), ("document-letter", 612, 792, 3, False),
                        ("onepage-a4", 595, 842, 1, False), ("onepage-letter", 612, 792, 1, False))
#: PWG raster type -> Ghostscript's cupsColorSpace (18 sGray, 19 sRGB) for its pwgraster device.
GS_COLOR_SPACES = {"sgray_8": 18, "srgb_8": 19}


def photo_pdf(path: Path, width: int, height: int, gray: bool) -> None:
    """A 4x6 photo as Pillow makes it: a JPEG (colour gradient) wrapped in a PDF page."""
    from PIL import Image

    size = (width * 2, height * 2)
    image = Image.radial_gradient("L").resize(size)
    if not gray:
        image = Image.merge("RGB", (image, Image.linear_gradient("L").resize(size), image.rotate(90).resize(size)))
    jpeg = path.with_suffix(".jpg")
    image.save(jpeg, format="JPEG", quality=85)
    with Image.open(jpeg) as decoded:
        decoded.save(path, format="PDF", resolution=144)


def suite_files(work: Path, suite: str) -> list[str]:
    """The documents a suite names in FILE directives (relative to its directory)."""
    import re

    text = (work / suite).read_text()
    return [n for n in dict.fromkeys(re.findall(r"^\s*FILE\s+(\S+)", text, re.MULTILINE)) if "$" not in n]


def everywhere_samples(work: Path, resolutions: list[int], types: list[str], gs: str) -> list[Path]:
    """The PWG raster files ipp-everywhere.test prints (``pwg-raster-samples-300dpi/sgray-8/...``)
    at the given resolutions and types, made by Ghostscript's pwgraster device from PDFs written
    here (text pages, Pillow photos)."""
    named = set(suite_files(work, "ipp-everywhere.test"))
    from cloud_service.ipp.conformance import minimal_pdf

    sources = work / "sample-sources"
    sources.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for name, width, height, pages, photo in EVERYWHERE_DOCUMENTS:
        pdf = sources / f"{name}.pdf"
        if photo:
            photo_pdf(pdf, width, height, gray=name.startswith("gray"))
        else:
            pdf.write_bytes(minimal_pdf(width, height, pages))
        for dpi in resolutions:
            for raster_type in types:
                dashed = raster_type.replace("_", "-")
                relative = f"pwg-raster-samples-{dpi}dpi/{dashed}/{name}-{dashed}-{dpi}dpi.pwg"
                if relative not in named:
                    continue
                out = work / relative
                out.parent.mkdir(parents=True, exist_ok=True)
                result = subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pwgraster",
                                         f"-r{dpi}", f"-dcupsColorSpace={GS_COLOR_SPACES[raster_type]}",
                                         "-dcupsBitsPerColor=8", f"-sOutputFile={out}", str(pdf)],
                                        capture_output=True, timeout=120, check=False)
                assert result.returncode == 0 and out.read_bytes()[:4] == b"RaS2", result.stderr[-2000:]
                made.append(out)
    return made


def placeholders_for_skipped(work: Path, suite: str) -> list[Path]:
    """Empty files for the samples of resolutions and types the printer does not advertise.

    ipptool 2.4 stops reading a suite at the first FILE it cannot read, even in a test that
    SKIP-IF-NOT-DEFINED skips (and still exits 0), so every named file must exist; these are
    never sent (the caller checks that every test using one was skipped).
    """
    made: list[Path] = []
    for name in suite_files(work, suite):
        path = work / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            made.append(path)
    return made


def ipptool_results(output: str) -> dict[str, list[str]]:
    """Test names by outcome (PASS, FAIL, SKIP) from ``ipptool -t`` output."""
    import re

    found: dict[str, list[str]] = {"PASS": [], "FAIL": [], "SKIP": []}
    for match in re.finditer(r"^ *(\S.*?) +\[(PASS|FAIL|SKIP)\]", output, re.MULTILINE):
        found[match.group(2)].append(match.group(1))
    return found
