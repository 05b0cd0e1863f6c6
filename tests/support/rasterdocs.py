"""Real documents for the transform tests, made by tools independent of the service's own
libraries where it matters (Ghostscript draws the PDF, qpdf packs it into object streams), and
the independent decoders that check what the service made (cups-filters' rastertopdf reads PWG
raster and Apple raster, imagetopdf reads JPEG, poppler's pdfinfo/pdftoppm/pdfimages read PDF).

A missing tool skips a test on a user's machine and fails it under CI=true (ipptools.need_tool).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from tests.support.ipptools import need_tool

FILTERS = Path("/usr/lib/cups/filter")
#: Non-Latin text (Greek, Cyrillic, Hebrew-free so left-to-right) to print.
UNICODE_TEXT = "Καλημέρα κόσμε — Здравствуй, мир — ÆØÅ ß €\n"


def need_filter(name: str) -> str:
    path = FILTERS / name
    if not path.is_file():
        need_tool(name, "cups-filters")  # skips, or fails under CI=true
    return str(path)


def numbered_pdf(path: Path, pages: int) -> Path:
    """A PDF 1.5 of ``pages`` A4 pages whose pages live in compressed object streams; page n
    has a black bar whose height from the bottom is n/pages of the page (so order is visible)."""
    gs = need_tool("gs", "ghostscript")
    qpdf = need_tool("qpdf", "qpdf")
    ps = path.with_suffix(".ps")
    body = ["%!PS", "<< /PageSize [595 842] >> setpagedevice"]
    for n in range(1, pages + 1):
        y = 40 + (760 - 40) * n / pages
        body.append(f"0 setgray 100 {y:.1f} 395 30 rectfill /Helvetica findfont 48 scalefont setfont "
                    f"250 100 moveto ({n}) show showpage")
    ps.write_text("\n".join(body) + "\n")
    raw = path.with_suffix(".raw.pdf")
    subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pdfwrite", f"-sOutputFile={raw}",
                    str(ps)], check=True, timeout=120)
    subprocess.run([qpdf, "--object-streams=generate", "--force-version=1.5", "--compress-streams=y", str(raw),
                    str(path)], check=True, timeout=120)
    data = path.read_bytes()
    assert b"/ObjStm" in data and data.startswith(b"%PDF-1.")
    assert len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", data)) == 0  # every page is compressed away
    return path


def photo_jpeg(path: Path) -> Path:
    image = Image.new("RGB", (800, 600), (30, 90, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((200, 100, 600, 500), fill=(250, 200, 0))
    image.save(path, "JPEG", quality=90)
    return path


def alpha_png(path: Path) -> Path:
    """Transparent background, an opaque black square in the middle."""
    image = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((100, 100, 300, 300), fill=(0, 0, 0, 255))
    image.save(path, "PNG")
    return path


def unicode_text(path: Path, lines: int = 70) -> Path:
    path.write_text(UNICODE_TEXT * lines, encoding="utf-8")
    return path


@dataclass
class Decoded:
    pages: int
    #: (width, height) of page 1 in points.
    size: tuple[float, float]
    pdf: Path


def to_pdf(made: Path, fmt: str) -> Path:
    """The output of a transform as a PDF, by cups-filters (rastertopdf, imagetopdf)."""
    if fmt == "application/pdf":
        return made
    tool = need_filter("imagetopdf" if fmt == "image/jpeg" else "rastertopdf")
    out = made.with_suffix(".decoded.pdf")
    env = {**os.environ, "CONTENT_TYPE": fmt, "FINAL_CONTENT_TYPE": "application/pdf"}
    with out.open("wb") as fh:
        done = subprocess.run([tool, "1", "test", "t", "1", "", str(made)], stdout=fh, stderr=subprocess.PIPE,
                              env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return out


def decode(made: Path, fmt: str) -> Decoded:
    pdf = to_pdf(made, fmt)
    info = subprocess.run([need_tool("pdfinfo", "poppler-utils"), str(pdf)], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M)[1])  # type: ignore[index]
    match = re.search(r"^Page size:\s+([\d.]+) x ([\d.]+) pts", info, re.M)
    assert match is not None, info
    return Decoded(pages, (float(match[1]), float(match[2])), pdf)


def render_gray(pdf: Path, page: int, dpi: int = 20) -> Image.Image:
    """Page ``page`` of a PDF rendered by poppler (pdftoppm) in gray."""
    out = pdf.parent / f"{pdf.name.replace('.', '_')}-p{page}"
    subprocess.run([need_tool("pdftoppm", "poppler-utils"), "-gray", "-r", str(dpi), "-f", str(page), "-l",
                    str(page), "-singlefile", str(pdf), str(out)], check=True, timeout=120)
    return Image.open(out.parent / f"{out.name}.pgm").convert("L")


def dark_fraction(image: Image.Image, box: tuple[float, float, float, float] = (0, 0, 1, 1)) -> float:
    """Fraction of pixels darker than mid-gray in ``box`` (fractions of width and height)."""
    w, h = image.size
    crop = image.crop((int(box[0] * w), int(box[1] * h), max(int(box[0] * w) + 1, int(box[2] * w)),
                       max(int(box[1] * h) + 1, int(box[3] * h))))
    histogram = crop.histogram()
    return sum(histogram[:128]) / max(1, sum(histogram))


def image_components(pdf: Path) -> set[int]:
    """Colour components of a PDF's images as poppler's pdfimages lists them (1 gray, 3 colour)."""
    listing = subprocess.run([need_tool("pdfimages", "poppler-utils"), "-list", str(pdf)], capture_output=True,
                             text=True, timeout=120, check=True).stdout.splitlines()[2:]
    return {int(line.split()[6]) for line in listing if len(line.split()) > 6}
