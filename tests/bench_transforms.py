"""Benchmark: PDF -> PWG raster at 300 dpi, pages per second per core, against Ghostscript's own
``pwgraster`` device on the same file in the same run (``python -m tests.bench_transforms``).

CPU time (user + system of the process doing the work) is measured, not wall time, so a busy
machine changes the figure less; both sides render the same text-heavy PDF in 8-bit gray.
The goal: no worse than 2x Ghostscript's time per page. Figures only; no test asserts on them.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from cloud_service.transform.page import Layout
from cloud_service.transform.run import transform_file


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
    subprocess.run(["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pdfwrite", f"-sOutputFile={path}",
                    str(ps)], check=True)
    return path


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--dpi", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        pdf = text_pdf(Path(work) / "text.pdf", args.pages)
        transform_file(pdf, "application/pdf", Path(work) / "warm.pwg", "image/pwg-raster",
                       Layout(dpi=args.dpi, page_ranges=((1, 1),)))  # imports and first-use costs
        before, wall = self_cpu(), time.monotonic()
        outcome = transform_file(pdf, "application/pdf", Path(work) / "ours.pwg", "image/pwg-raster",
                                 Layout(dpi=args.dpi))
        ours, ours_wall = self_cpu() - before, time.monotonic() - wall
        assert outcome.reason is None and outcome.pages_out == args.pages, outcome
        before, wall = children_cpu(), time.monotonic()
        subprocess.run(["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pwgraster", f"-r{args.dpi}",
                        "-dcupsColorSpace=18", "-dcupsBitsPerColor=8", f"-sOutputFile={work}/gs.pwg", str(pdf)],
                       check=True, capture_output=True)
        theirs, theirs_wall = children_cpu() - before, time.monotonic() - wall
    print(f"PDF -> PWG raster, {args.pages} text pages at {args.dpi} dpi, 8-bit gray")
    print(f"  cloudimaging: {ours / args.pages * 1000:7.1f} ms CPU/page  {args.pages / ours:6.2f} pages/s/core"
          f"  (wall {ours_wall:.2f} s)")
    print(f"  Ghostscript:  {theirs / args.pages * 1000:7.1f} ms CPU/page  {args.pages / theirs:6.2f} pages/s/core"
          f"  (wall {theirs_wall:.2f} s)")
    print(f"  ratio: {ours / theirs:.2f}x Ghostscript's time per page (goal: <= 2x)")


if __name__ == "__main__":
    main()
