"""Prepare a directory to run CUPS's ipptool conformance suites against the IPP front.

``ipp-1.1.test`` names documents (document-a4.pdf, color.jpg...) that Debian's
cups-ipp-utils does not ship, and ipptool refuses a suite whose files are missing even for
tests it skips. This writes the suites (IPP/1.1, IPP/2.0, IPP Everywhere) next to small valid
stand-ins; ``ipp-everywhere.test`` also prints PWG raster samples, which it skips when they are
absent (the tests make them with Ghostscript, tests/support/ipptools.py):

    python -m cloud_service.ipp.conformance /tmp/ipp-suite
    cd /tmp/ipp-suite
    ipptool -t -V 2.0 -f document-letter.pdf ipps://USER:TOKEN@HOST:PORT/ipp/print/NAME ipp-2.0.test

Used by the tests and by docs/ipp.md.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

IPPTOOL_DIR = Path("/usr/share/cups/ipptool")
SUITES = ("ipp-1.1.test", "ipp-2.0.test", "ipp-everywhere.test")
#: The smallest JPEG/JFIF header and end: enough for a printer that does not render.
TINY_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def minimal_pdf(width: int = 595, height: int = 842, pages: int = 1) -> bytes:
    """A small valid PDF (with a correct xref table) that qpdf-based CUPS filters accept."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode()]
    content = b"BT /F1 24 Tf 72 720 Td (cloudimaging) Tj ET"
    for i in range(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] /Contents {4 + 2 * i} 0 R "
                       "/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>"
                       .encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def prepare(target: Path, suites_dir: Path = IPPTOOL_DIR) -> Path:
    """Copy the suites into ``target`` (created) with the documents they name; returns it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SUITES:
        source = suites_dir / name
        if not source.exists():
            raise FileNotFoundError(f"{source} not found (apt-get install cups-ipp-utils)")
        shutil.copy(source, target / name)
    (target / "document-a4.pdf").write_bytes(minimal_pdf(595, 842))
    (target / "document-letter.pdf").write_bytes(minimal_pdf(612, 792))
    for name in ("document-a4.ps", "document-letter.ps"):
        (target / name).write_bytes(b"%!PS-Adobe-3.0\nshowpage\n")
    for name in ("color.jpg", "gray.jpg"):
        (target / name).write_bytes(TINY_JPEG)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m cloud_service.ipp.conformance DIRECTORY", file=sys.stderr)
        return 2
    try:
        print(prepare(Path(argv[0])))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
