"""The transform figure: PDF -> PWG raster at 300 dpi, pages per second per core, against
Ghostscript's own ``pwgraster`` device on the same file in the same run.

CPU time (of the thread doing our transform; of the Ghostscript child) is measured, not wall
time, so a busy machine changes the figure less; both render the same text-heavy PDF in 8-bit
gray. The goal: no worse than 2x Ghostscript's time per page. The figure does not depend on the
broker or database, so it is measured once per run and the second stack's rows say so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.bench.procs import Unavailable
from tests.bench.report import Row, row

GROUP = "transform"
DPI = 300
GOAL = "<= 2x Ghostscript's time per page"

_measured: dict[tuple[int, int], tuple[str, list[Row]]] = {}


def text_pdf(path: Path, pages: int) -> Path:
    """A PDF of ``pages`` A4 pages of 60 lines of text each, made by Ghostscript."""
    ps = path.with_suffix(".ps")
    body = ["%!PS", "<< /PageSize [595 842] >> setpagedevice", "/Helvetica findfont 10 scalefont setfont"]
    line = "The quick brown fox jumps over the lazy dog; 0123456789 Cloud Imaging transform bench."
    for n in range(pages):
        for i in range(60):
            body.append(f"50 {800 - i * 12.5:.1f} moveto ({line} {n + 1}.{i + 1}) show")
        body.append("showpage")
    ps.write_text("\n".join(body) + "\n")
    subprocess.run([_gs(), "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pdfwrite", f"-sOutputFile={path}",
                    str(ps)], check=True, timeout=600)
    return path


def _gs() -> str:
    gs = shutil.which("gs")
    if gs is None:
        raise Unavailable("gs (Debian: ghostscript) is not installed")
    return gs


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Timing:
    pages: int
    ours_cpu: float
    ours_wall: float
    gs_cpu: float
    gs_wall: float


def measure_transform(pages: int, dpi: int = DPI) -> Timing:
    """Both transforms of the same PDF, one after the other, in the calling thread."""
    from cloud_service.transform.page import Layout
    from cloud_service.transform.run import transform_file

    gs = _gs()
    with tempfile.TemporaryDirectory(prefix="bench-transform-") as work:
        pdf = text_pdf(Path(work) / "text.pdf", pages)
        transform_file(pdf, "application/pdf", Path(work) / "warm.pwg", "image/pwg-raster",
                       Layout(dpi=dpi, page_ranges=((1, 1),)))  # imports and first-use costs
        before, wall = _cpu(resource.RUSAGE_THREAD), time.monotonic()
        outcome = transform_file(pdf, "application/pdf", Path(work) / "ours.pwg", "image/pwg-raster",
                                 Layout(dpi=dpi))
        ours, ours_wall = _cpu(resource.RUSAGE_THREAD) - before, time.monotonic() - wall
        if outcome.reason is not None or outcome.pages_out != pages:
            raise RuntimeError(f"the transform did not make {pages} pages: {outcome}")
        before, wall = _cpu(resource.RUSAGE_CHILDREN), time.monotonic()
        subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pwgraster", f"-r{dpi}",
                        "-dcupsColorSpace=18", "-dcupsBitsPerColor=8", f"-sOutputFile={work}/gs.pwg", str(pdf)],
                       check=True, capture_output=True, timeout=600)
        theirs, theirs_wall = _cpu(resource.RUSAGE_CHILDREN) - before, time.monotonic() - wall
    return Timing(pages, max(ours, 1e-6), ours_wall, max(theirs, 1e-6), theirs_wall)


def rows_for(stack: str, timing: Timing, dpi: int = DPI, note: str = "") -> list[Row]:
    """pages/s per core of each, and our time per page against Ghostscript's (the goal)."""
    label = "Ghostscript pwgraster"
    ours_ms, gs_ms = timing.ours_cpu / timing.pages * 1000, timing.gs_cpu / timing.pages * 1000
    detail = (f"{timing.pages} text pages, 8-bit gray; wall {timing.ours_wall:.2f} s ours, "
              f"{timing.gs_wall:.2f} s Ghostscript")
    return [
        row(stack, GROUP, f"PDF -> PWG raster {dpi} dpi, pages/s per core", timing.pages / timing.ours_cpu,
            "pages/s", baseline=timing.pages / timing.gs_cpu, baseline_label=label,
            note=note or detail),
        row(stack, GROUP, f"PDF -> PWG raster {dpi} dpi, CPU time per page", ours_ms, "ms",
            baseline=gs_ms, baseline_label=label, goal=GOAL, check=lambda v, b: b is not None and v <= 2 * b,
            note=note),
    ]


async def measure(stack: str, pages: int, dpi: int = DPI) -> list[Row]:
    """The rows for ``stack``: measured once per process, reused (and said so) for the next stack."""
    key = (pages, dpi)
    if key not in _measured:
        timing = await asyncio.to_thread(measure_transform, pages, dpi)
        _measured[key] = (stack, rows_for(stack, timing, dpi))
        return _measured[key][1]
    first, rows = _measured[key]
    return [dataclasses.replace(r, stack=stack, note=f"measured once, with the {first} stack (no broker involved)")
            for r in rows]


def main() -> None:
    """``python -m tests.bench.transform [pages [dpi]]``: this figure alone, printed."""
    import sys

    from tests.bench.report import table

    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    dpi = int(sys.argv[2]) if len(sys.argv) > 2 else DPI
    print(table(rows_for("-", measure_transform(pages, dpi), dpi)))


if __name__ == "__main__":
    main()
