"""Document format detection from the first bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.formats import SNIFF_SIZE, detect_file_format, detect_format


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        (b"\xef\xbb\xbf junk then %PDF-1.4", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"%!PS-Adobe-3.0\n", "application/postscript"),
        (b"RaS2PwgRaster\x00", "image/pwg-raster"),
        (b"UNIRAST\x00\x00\x00\x00\x01", "image/urf"),
        (b"Hello, world\n", "text/plain"),
        ("Grüße, 世界\r\n\tok\f".encode(), "text/plain"),
        (b"\xff\xfe\x00\x01", "application/octet-stream"),
        (b"text with a NUL\x00 inside", "application/octet-stream"),
        (b"\x1b%-12345X@PJL", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_detect(head: bytes, mime: str) -> None:
    assert detect_format(head) == mime


def test_multibyte_character_cut_at_the_sniff_boundary_is_still_text() -> None:
    data = ("a" * (SNIFF_SIZE - 1) + "é" + "more").encode()
    assert detect_format(data) == "text/plain"


def test_truncated_multibyte_at_true_end_of_a_short_file_is_not_text() -> None:
    assert detect_format("é".encode()[:1]) == "application/octet-stream"


def test_detect_file(tmp_path: Path) -> None:
    pdf = tmp_path / "x.txt"  # the name lies; the bytes do not
    pdf.write_bytes(b"%PDF-1.4\n" + b"\x00" * 10_000)
    assert detect_file_format(pdf) == "application/pdf"
