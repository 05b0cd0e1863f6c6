"""Transforms (cloud_service/transform): each input format into each output a device may need,
on real inputs, checked by independent decoders (cups-filters, poppler), not by our own code.

The inputs: a 36-page PDF 1.5 whose pages are in compressed object streams (Ghostscript, then
qpdf), a JPEG, a PNG with alpha, UTF-8 text with Greek and Cyrillic. Each output is decoded to a
PDF by cups-filters (rastertopdf for PWG raster and Apple raster, imagetopdf for JPEG) and read by
poppler: page count, page size (which is pixels / resolution, so a wrong resolution shows), and
a rendered page that is not blank where ink should be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cloud_service.transform import advertised_capabilities, advertised_formats, target_format
from cloud_service.transform.compose import sheets
from cloud_service.transform.page import Layout, SourcePage, media_size_inches
from cloud_service.transform.run import transform_file
from cloud_service.transform.text import font_path
from schemas.model.pages import PageCounter
from tests.support.rasterdocs import (
    alpha_png,
    dark_fraction,
    decode,
    image_components,
    numbered_pdf,
    photo_jpeg,
    render_gray,
    unicode_text,
)

A4_POINTS = (595.3, 841.9)
EXT = {"image/pwg-raster": "pwg", "image/urf": "urf", "application/pdf": "pdf", "image/jpeg": "jpg"}


@pytest.fixture(scope="module")
def pdf36(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return numbered_pdf(tmp_path_factory.mktemp("inputs") / "numbered.pdf", 36)


def close_to(size: tuple[float, float], expected: tuple[float, float], slack: float = 2.0) -> bool:
    return abs(size[0] - expected[0]) <= slack and abs(size[1] - expected[1]) <= slack


def run(tmp_path: Path, source: Path, source_format: str, target: str, layout: Layout) -> Path:
    made = tmp_path / f"out.{EXT[target]}"
    outcome = transform_file(source, source_format, made, target, layout)
    assert outcome.reason is None, outcome.message
    return made


# ---------------------------------------------------------------------------- the plan


def test_target_and_advertised_formats() -> None:
    raster_only = ["image/pwg-raster", "image/jpeg"]
    assert target_format("application/pdf", raster_only) == "image/pwg-raster"
    assert target_format("image/jpeg", raster_only) is None  # the device takes it as is
    assert target_format("text/plain", ["image/urf"]) == "image/urf"
    assert target_format("image/png", ["application/pdf", "image/pwg-raster"]) == "application/pdf"
    with pytest.raises(ValueError):
        target_format("application/postscript", raster_only)
    with pytest.raises(ValueError):
        target_format("application/pdf", ["application/vnd.hp-pcl"])
    assert advertised_formats(raster_only) == [*raster_only, "application/pdf", "image/png", "text/plain"]
    assert advertised_formats(["application/vnd.hp-pcl"]) == ["application/vnd.hp-pcl"]  # nothing to write into
    caps = advertised_capabilities({"document-format-supported": raster_only})
    assert caps["document-format-device-supported"] == raster_only
    assert "application/pdf" in caps["document-format-supported"]


# ---------------------------------------------------------------------------- every pair, decoded independently


@pytest.mark.parametrize("target", ["image/pwg-raster", "image/urf"])
def test_pdf_with_object_streams_to_raster(tmp_path: Path, pdf36: Path, target: str) -> None:
    made = run(tmp_path, pdf36, "application/pdf", target, Layout(dpi=100))
    decoded = decode(made, target)
    assert decoded.pages == 36
    assert close_to(decoded.size, A4_POINTS)
    # The pages arrive in order: page n's bar sits n/36 of the way up the page.
    first, last = render_gray(decoded.pdf, 1), render_gray(decoded.pdf, 36)
    assert dark_fraction(first, (0.2, 0.85, 0.8, 0.95)) > 0.2 > dark_fraction(first, (0.2, 0.05, 0.8, 0.15))
    assert dark_fraction(last, (0.2, 0.05, 0.8, 0.15)) > 0.2 > dark_fraction(last, (0.2, 0.85, 0.8, 0.95))


def test_pdf_to_pwg_raster_at_300_dpi(tmp_path: Path, pdf36: Path) -> None:
    layout = Layout(dpi=300, page_ranges=((2, 3),))
    made = run(tmp_path, pdf36, "application/pdf", "image/pwg-raster", layout)
    decoded = decode(made, "image/pwg-raster")
    assert decoded.pages == 2 and close_to(decoded.size, A4_POINTS)
    header = made.read_bytes()[4:4 + 1796]
    width, height = (int.from_bytes(header[o:o + 4], "big") for o in (372, 376))
    assert (width, height) == (2480, 3508)  # A4 at 300 dpi
    assert dark_fraction(render_gray(decoded.pdf, 1)) > 0.01


def test_jpeg_to_pwg_raster_in_colour(tmp_path: Path) -> None:
    made = run(tmp_path, photo_jpeg(tmp_path / "photo.jpg"), "image/jpeg", "image/pwg-raster",
               Layout(dpi=150, color=True, media="na_letter_8.5x11in"))
    decoded = decode(made, "image/pwg-raster")
    assert decoded.pages == 1 and close_to(decoded.size, (612, 792))
    assert image_components(decoded.pdf) == {3}
    # A landscape photo on a portrait sheet is turned to fill it: ink nearly everywhere.
    assert dark_fraction(render_gray(decoded.pdf, 1), (0.1, 0.1, 0.9, 0.9)) > 0.3


def test_png_with_alpha_to_urf_lays_transparency_on_white(tmp_path: Path) -> None:
    made = run(tmp_path, alpha_png(tmp_path / "alpha.png"), "image/png", "image/urf", Layout(dpi=150))
    decoded = decode(made, "image/urf")
    assert decoded.pages == 1 and close_to(decoded.size, A4_POINTS)
    page = render_gray(decoded.pdf, 1)
    assert dark_fraction(page, (0.4, 0.45, 0.6, 0.55)) > 0.9  # the opaque square is black
    assert dark_fraction(page, (0.0, 0.0, 0.1, 0.1)) == 0  # transparency is paper white, not black
    assert image_components(decoded.pdf) == {1}


def test_png_to_pdf_and_jpeg(tmp_path: Path) -> None:
    png = alpha_png(tmp_path / "alpha.png")
    pdf = decode(run(tmp_path, png, "image/png", "application/pdf", Layout(dpi=100)), "application/pdf")
    assert pdf.pages == 1 and close_to(pdf.size, A4_POINTS)
    jpeg = decode(run(tmp_path, png, "image/png", "image/jpeg", Layout(dpi=100)), "image/jpeg")
    assert jpeg.pages == 1
    assert dark_fraction(render_gray(jpeg.pdf, 1), (0.4, 0.45, 0.6, 0.55)) > 0.9


@pytest.mark.parametrize("target", ["image/pwg-raster", "application/pdf"])
def test_unicode_text(tmp_path: Path, target: str) -> None:
    if font_path() is None:
        pytest.skip("no DejaVu font on this machine (fonts-dejavu-core); non-Latin text prints as boxes")
    made = run(tmp_path, unicode_text(tmp_path / "letter.txt", lines=70), "text/plain", target, Layout(dpi=100))
    decoded = decode(made, target)
    assert decoded.pages == 2  # 70 lines at 60 a page
    assert close_to(decoded.size, A4_POINTS)
    assert 0.001 < dark_fraction(render_gray(decoded.pdf, 1, dpi=50), (0, 0, 1, 0.5)) < 0.5


def test_text_page_count_matches_the_counter(tmp_path: Path) -> None:
    text = "one\n" * 10 + "\f" + "two\n" * 61
    source = tmp_path / "ff.txt"
    source.write_text(text)
    counter = PageCounter("text/plain")
    counter.feed(text.encode())
    made = run(tmp_path, source, "text/plain", "image/pwg-raster", Layout(dpi=50))
    assert decode(made, "image/pwg-raster").pages == counter.pages == 3


def test_number_up_and_monochrome(tmp_path: Path, pdf36: Path) -> None:
    made = run(tmp_path, pdf36, "application/pdf", "image/pwg-raster",
               Layout(dpi=100, number_up=4, page_ranges=((1, 8),)))
    decoded = decode(made, "image/pwg-raster")
    assert decoded.pages == 2 and image_components(decoded.pdf) == {1}
    page = render_gray(decoded.pdf, 1)
    for quarter in ((0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), (0, 0.5, 0.5, 1), (0.5, 0.5, 1, 1)):
        assert dark_fraction(page, quarter) > 0.01


def test_multi_page_document_to_jpeg_only_device_is_unprintable(tmp_path: Path, pdf36: Path) -> None:
    outcome = transform_file(pdf36, "application/pdf", tmp_path / "x.jpg", "image/jpeg", Layout(dpi=50))
    assert outcome.reason == "document-unprintable-error" and "one" in (outcome.message or "")


def test_corrupt_pdf_is_a_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.5\n" + b"\x00garbage" * 1000)
    outcome = transform_file(bad, "application/pdf", tmp_path / "x.pwg", "image/pwg-raster", Layout(dpi=50))
    assert outcome.reason == "document-format-error" and outcome.message


@pytest.mark.parametrize("color", [False, True])
def test_pdf_pages_drawn_into_the_sheet_match_pdfium_bitmaps(pdf36: Path, color: bool) -> None:
    """A PDF page drawn straight into the sheet has the pixels pypdfium2's own bitmap has (turned
    pages: PDFium turns them, Pillow turns the bitmap; anti-aliasing may differ by a few pixels),
    and PDFium writes inside its region only."""
    from cloud_service.transform.compose import _TRANSPOSE
    from cloud_service.transform.pdf import PdfSource

    drawn_pages, rendered_pages = PdfSource(pdf36, color), PdfSource(pdf36, color)
    try:
        for turn, drawn, rendered in zip((0, 90, 180, 270), drawn_pages.pages(), rendered_pages.pages(), strict=False):
            box = (300, 420) if turn in (0, 180) else (420, 300)
            w, h = drawn.fitted(*box)
            if turn in (90, 270):
                w, h = h, w
            sheet = np.full((h + 20, w + 20, 3) if color else (h + 20, w + 20), 7, np.uint8)
            assert drawn.draw is not None
            drawn.draw(sheet[10:10 + h, 10:10 + w], turn)
            image = rendered.render(*box)
            if turn:
                image = image.transpose(_TRANSPOSE[turn])
            expected = np.asarray(image)
            assert expected.shape == sheet[10:10 + h, 10:10 + w].shape
            differs = np.abs(sheet[10:10 + h, 10:10 + w].astype(int) - expected) > (0 if turn == 0 else 64)
            assert np.count_nonzero(differs) <= (0 if turn == 0 else expected.size // 1000), turn
            assert np.count_nonzero(expected < 128) > 1000  # the page's bar and number are there
            border = sheet.copy()
            border[10:10 + h, 10:10 + w] = 7
            assert np.all(border == 7), turn
    finally:
        drawn_pages.close()
        rendered_pages.close()


# ---------------------------------------------------------------------------- duplex back sides


def marked_page() -> SourcePage:
    """A page with a black mark in its top-left corner."""
    def render(width: int, height: int) -> Image.Image:
        image = Image.new("L", (width, height), 255)
        image.paste(0, (0, 0, width // 4, height // 4))
        return image
    return SourcePage(100, 141, render)


@pytest.mark.parametrize(("sheet_back", "sides", "corner"), [
    ("normal", "two-sided-long-edge", "top-left"),
    ("flipped", "two-sided-long-edge", "bottom-left"),
    ("flipped", "two-sided-short-edge", "top-right"),
    ("rotated", "two-sided-short-edge", "bottom-right"),
    ("manual-tumble", "two-sided-long-edge", "bottom-right"),
])
def test_back_sides_turn_as_the_device_asks(sheet_back: str, sides: str, corner: str) -> None:
    layout = Layout(dpi=20, sides=sides, sheet_back=sheet_back)
    front, back = list(sheets([marked_page(), marked_page()], layout))
    assert front.duplex and back.duplex and back.tumble == (sides == "two-sided-short-edge")
    boxes = {"top-left": (0, 0, 0.2, 0.2), "top-right": (0.8, 0, 1, 0.2), "bottom-left": (0, 0.8, 0.2, 1),
             "bottom-right": (0.8, 0.8, 1, 1)}
    assert dark_fraction(front.image, boxes["top-left"]) == 1
    assert dark_fraction(back.image, boxes[corner]) == 1


def test_layout_from_capabilities_and_ticket() -> None:
    caps = {"pwg-raster-document-resolution-supported": [150, 300, 600], "print-color-mode-supported":
            ["monochrome", "color"], "media-default": "iso_a4_210x297mm"}
    assert Layout.for_job(caps, {}).dpi == 300
    assert Layout.for_job(caps, {"print-quality": 5}).dpi == 600
    assert Layout.for_job(caps, {"print-quality": 3}).dpi == 150
    assert Layout.for_job(caps, {"print-color-mode": "color"}).color
    assert not Layout.for_job({**caps, "print-color-mode-supported": ["monochrome"]},
                              {"print-color-mode": "color"}).color
    assert Layout.for_job(caps, {"media": "na_letter_8.5x11in"}).sheet_pixels == (2550, 3300)
    assert media_size_inches("iso_a5_148x210mm") == pytest.approx((148 / 25.4, 210 / 25.4))


# ---------------------------------------------------------------------------- the run-length coder


def reference_encode(pixels: np.ndarray) -> bytes:
    """The run-length coding written out plainly, pixel by pixel (slow; the vectorised coder
    must give the same bytes): equal consecutive lines share a repeat byte (at most 256 uses);
    a run of 2+ equal pixels is a run packet; the single pixels between runs are literal
    packets; both are cut at 128 pixels from the left, and a one-pixel remainder is a run of 1."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, _ = pixels.shape
    lines = [[bytes(pixel) for pixel in row] for row in pixels]
    out = bytearray()
    y = 0
    while y < height:
        repeat = 0
        while y + repeat + 1 < height and repeat < 255 and lines[y + repeat + 1] == lines[y]:
            repeat += 1
        out.append(repeat)
        line, literal, x = lines[y], [], 0
        while x < width:
            run = 1
            while x + run < width and line[x + run] == line[x]:
                run += 1
            if run == 1:
                literal.append(line[x])
            else:
                _literal_packets(out, literal)
                literal = []
                for at in range(0, run, 128):
                    out.append(min(128, run - at) - 1)
                    out.extend(line[x])
            x += run
        _literal_packets(out, literal)
        y += repeat + 1
    return bytes(out)


def _literal_packets(out: bytearray, literal: list[bytes]) -> None:
    for at in range(0, len(literal), 128):
        chunk = literal[at:at + 128]
        out.append(257 - len(chunk) if len(chunk) > 1 else 0)
        out.extend(b"".join(chunk))


def document_like(rng: np.random.Generator, height: int, width: int, depth: int) -> np.ndarray:
    """White paper with anti-aliased text, ruled lines, a photo and blank bands."""
    image = Image.new("RGB" if depth == 3 else "L", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for y in range(4, height - 10, 14):
        if rng.random() < 0.7:
            draw.text((int(rng.integers(0, 20)), y), "Cloud Imaging 5100.18, page 1 of 3 -- the quick brown fox",
                      fill=(0, 0, 0) if depth == 3 else 0)
    draw.line((0, height // 3, width, height // 3), fill=(200, 30, 30) if depth == 3 else 90, width=2)
    pixels = np.array(image).reshape(height, width, depth)
    h0, w0 = height // 2, width // 3
    pixels[h0:h0 + 20, w0:w0 + 150] = rng.integers(0, 256, size=(min(20, height - h0), min(150, width - w0), depth))
    return pixels


def coder_cases() -> list[np.ndarray]:
    """Pages that exercise every packet and repeat boundary, in 1 and 3 channels."""
    rng = np.random.default_rng(51024)
    cases = []
    for depth in (1, 3):
        for width in (1, 2, 3, 7, 127, 128, 129, 130, 255, 256, 257, 300, 389):
            height = int(rng.integers(1, 9))
            cases.append(rng.integers(0, 2, size=(height, width, depth), dtype=np.uint8) * 255)  # short runs
            cases.append(rng.integers(0, 256, size=(height, width, depth), dtype=np.uint8))  # literals > 128
        runs = np.repeat(rng.integers(0, 3, size=(30, 40, depth), dtype=np.uint8) * 120,
                         rng.integers(1, 300, size=40), axis=1)  # runs of 1 to 299 pixels
        cases.append(runs)
        for lines in (255, 256, 257, 513, 700):  # a line repeated past what one repeat byte holds
            page = np.full((lines + 3, 61, depth), 255, np.uint8)
            page[lines:, 5:9] = 0
            cases.append(page)
        cases.append(document_like(rng, 220, 389, depth))
        cases.append(document_like(rng, 150, 1203, depth))
    return cases


@pytest.mark.parametrize("band_pixels", [1, 2000, 1 << 18])
def test_run_length_coder_matches_the_plain_reference(band_pixels: int) -> None:
    """Byte for byte, on random and document-like pages, cut into bands of one line, of a few
    lines and of the whole page."""
    from cloud_service.transform.rle import encode_page

    for number, pixels in enumerate(coder_cases()):
        expected = reference_encode(pixels)
        assert encode_page(pixels, band_pixels) == expected, (number, pixels.shape)
        if pixels.shape[2] == 1:
            assert encode_page(pixels[:, :, 0], band_pixels) == expected


def test_run_length_coder_on_a_rendered_text_page(tmp_path: Path) -> None:
    """A PDF page of small text rendered by PDFium at 300 dpi (a million runs), banded as the
    service bands it: same bytes as the plain reference on a slice, and it decodes back."""
    from cloud_service.transform.pdf import PdfSource
    from cloud_service.transform.rle import decode_page, encode_page
    from tests.bench.transform import text_pdf

    reader = PdfSource(text_pdf(tmp_path / "text.pdf", 1), color=False)
    try:
        page = next(reader.pages())
        pixels = np.asarray(page.render(2480, 3508))
    finally:
        reader.close()
    assert pixels.ndim == 2 and np.count_nonzero(pixels != 255) > 100_000
    data = encode_page(pixels)
    decoded, used = decode_page(data, pixels.shape[1], pixels.shape[0], 1)
    assert used == len(data) and np.array_equal(decoded[:, :, 0], pixels)
    part = pixels[700:760]
    assert encode_page(part, 1 << 14) == reference_encode(part)


@pytest.mark.parametrize("depth", [1, 3])
def test_run_length_coding_round_trips(depth: int) -> None:
    """Random mixtures of runs, literals, repeated lines and runs longer than 128 pixels."""
    from cloud_service.transform.rle import decode_page, encode_page

    rng = np.random.default_rng(5102)
    for trial in range(150):
        height, width = int(rng.integers(1, 40)), int(rng.integers(1, 400))
        image = rng.integers(0, 3, size=(height, width, depth), dtype=np.uint8) * 100
        if trial % 3 == 0:
            image[:, : width // 2] = 255
        if trial % 5 == 0:
            image[height // 2:] = image[:1]
        data = encode_page(image if depth == 3 else image[:, :, 0])
        decoded, used = decode_page(data, width, height, depth)
        assert used == len(data) and np.array_equal(decoded, image), trial
    assert encode_page(np.full((300, 300), 255, np.uint8))[:7] == bytes([255, 127, 255, 127, 255, 43, 255])
