"""The large-document figure: one document end to end (create with ``upload``, PUT to the
presigned URL, close, the Manager downloads it and the file driver writes it), against ``cp`` of
the same file and against curl PUT to a bare HTTPS sink (tests/bench/sink.py), with the service's
RSS sampled while it runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.bench.procs import CpuMeter, ManagerProc, Unavailable, rss_bytes, running_sink
from tests.bench.report import Row, row

if TYPE_CHECKING:
    from tests.bench.runner import StackRun

MiB = 1024 * 1024


def make_source(path: Path, size: int) -> None:
    """A PDF-looking file of ``size`` bytes (a random 1 MiB block repeated: TLS does not compress)."""
    block = os.urandom(MiB)
    with path.open("wb") as fh:
        fh.write(b"%PDF-1.4\n")
        left = size - 9
        while left > 0:
            piece = block[: min(MiB, left)]
            fh.write(piece)
            left -= len(piece)


def timed_child(argv: list[str]) -> tuple[float, float, int, str]:
    """Run a program; (wall seconds, its CPU seconds, exit code, output)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_utime + usage.ru_stime, proc.returncode, output


def curl_put(curl: str, source: Path, url: str, ca: Path) -> tuple[float, float]:
    elapsed, cpu, code, out = timed_child([curl, "-sS", "--fail", "--cacert", str(ca), "-T", str(source),
                                           "-H", "Content-Type: application/octet-stream", "-o", "/dev/null", url])
    if code != 0:
        raise RuntimeError(f"curl PUT failed ({code}): {out[-500:]}")
    return elapsed, cpu


async def measure_big(run: StackRun, manager: ManagerProc) -> list[Row]:
    curl = shutil.which("curl")
    if curl is None:
        raise Unavailable("curl is needed for the large-document figure (apt-get install curl)")
    size = run.size.big_bytes
    label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size / (1024 * MiB):.0f} GiB"
    work = run.dir / "big"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "source.pdf"
    await asyncio.to_thread(make_source, source, size)
    pki = run.broker.pki
    rows: list[Row] = []
    try:
        # cp: the floor of writing these bytes once on this disk.
        copy = work / "copy.pdf"
        cp_elapsed, _cpu, code, out = await asyncio.to_thread(timed_child, ["cp", str(source), str(copy)])
        copy.unlink(missing_ok=True)
        if code != 0:
            raise RuntimeError(f"cp failed: {out}")
        # A bare HTTPS sink (Python asyncio + TLS, writes to a file), fed by curl.
        async with running_sink(pki, work / "sink.bin") as port:
            sink_elapsed, sink_curl_cpu = await asyncio.to_thread(
                curl_put, curl, source, f"https://127.0.0.1:{port}/sink", pki.ca_cert)

        # The service: create with upload=true, PUT, close; the Manager downloads and writes.
        response = await run.http.post("/api/v1/jobs", json={
            "service": manager.device_id, "document_format": "application/pdf", "document_name": "big.pdf",
            "upload": True, "document_size": size})
        if response.status_code != 201:
            raise RuntimeError(f"create refused: {response.status_code} {response.text[:300]}")
        job = response.json()
        meter = CpuMeter({"service": [run.service.pid], "manager": [manager.pid]}).start()
        rss_before = rss_bytes(run.service.pid)
        peak = rss_before
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(run.service.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        put_elapsed, _curl_cpu = await asyncio.to_thread(curl_put, curl, source, job["upload_url"], pki.ca_cert)
        closed = await run.http.post(f"/api/v1/jobs/{job['id']}/close")
        if closed.status_code != 200:
            raise RuntimeError(f"close refused: {closed.status_code} {closed.text[:300]}")
        fetchable = time.monotonic()
        target = manager.output / f"job-{job['id']}-doc-1.pdf"
        deadline = time.monotonic() + 120 + size / MiB
        while not target.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Manager did not write the {label} document in time")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        download_elapsed = time.monotonic() - fetchable
        done.set()
        await sampler
        used = meter.stop()
        written = target.stat().st_size
        target.unlink(missing_ok=True)
        await run.wait_ended([job["id"]], 60)
        mb = size / 1e6
        note = "" if written == size else f"wrote {written} of {size} bytes"
        sink_rate, cp_rate = mb / sink_elapsed, mb / cp_elapsed
        rows.append(row(run.kind, "big", f"{label} end to end (upload, close, device download, write)", mb / elapsed,
                        "MB/s", baseline=sink_rate, baseline_label="curl PUT to a bare HTTPS sink",
                        goal=">= 0.7x the sink", check=lambda v, b: b is not None and v >= 0.7 * b, note=note))
        rows.append(row(run.kind, "big", f"{label} end to end vs cp", mb / elapsed, "MB/s", baseline=cp_rate,
                        baseline_label="cp of the same file"))
        rows.append(row(run.kind, "big", f"{label}: the service's PUT path alone (curl)", mb / put_elapsed, "MB/s",
                        baseline=sink_rate, baseline_label="curl PUT to a bare HTTPS sink"))
        rows.append(row(run.kind, "big", f"{label}: the device's leg alone (close -> doorbell, download, write)",
                        mb / download_elapsed, "MB/s", baseline=sink_rate,
                        baseline_label="curl PUT to a bare HTTPS sink",
                        note="the two legs run one after the other (a job is fetchable only once its document is "
                             "in, counted and checked), so end to end is 1/(1/upload + 1/download): 0.5x the sink "
                             "if both legs ran at the sink's rate"))
        rows.append(row(run.kind, "big", f"service RSS growth for the {label} document", (peak - rss_before) / MiB,
                        "MB", goal="<= 64 MB", check=lambda v, b: v <= 64))
        rows.append(row(run.kind, "big", f"Manager CPU to download and write {label}", used["manager"], "s",
                        baseline=sink_curl_cpu, baseline_label="curl's CPU to PUT it over TLS",
                        note=f"service CPU for the whole transfer: {used['service']:.2f} s"))
    finally:
        source.unlink(missing_ok=True)
    return rows
