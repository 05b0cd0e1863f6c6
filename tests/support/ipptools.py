"""CUPS tools and IPP requests for the IPP tests: find a tool (skip, or fail under CI=true),
run daemons in their own process group on ephemeral loopback ports, build and send IPP messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
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
