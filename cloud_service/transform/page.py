"""What every transform shares: the output's geometry (``Layout``, from the device's
capabilities and the job's ticket), a source page, and a finished sheet side (``Sheet``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

#: Self-describing PWG 5101.1 media names end with their size: ``iso_a4_210x297mm``.
_MEDIA_SIZE = re.compile(r"_(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?)(mm|in)$")
DEFAULT_DPI = 300
MAX_DPI = 1200


class TransformError(Exception):
    """The document cannot be transformed; ``reason`` is the job-state-reason to abort with."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


FORMAT_ERROR = "document-format-error"
UNPRINTABLE = "document-unprintable-error"


def media_size_inches(media: str) -> tuple[float, float]:
    """(width, height) in inches of a self-describing PWG media name (A4 if it is not one)."""
    match = _MEDIA_SIZE.search(media)
    if match is None:
        return 210 / 25.4, 297 / 25.4
    width, height = float(match[1]), float(match[2])
    if match[3] == "mm":
        width, height = width / 25.4, height / 25.4
    return width, height


@dataclass(frozen=True)
class Layout:
    """The output a device needs, decided once per job from its capabilities and ticket."""

    dpi: int = DEFAULT_DPI
    media: str = "iso_a4_210x297mm"
    color: bool = False
    #: Margins of the printable area in 1/100 mm: top, right, bottom, left.
    margins: tuple[int, int, int, int] = (0, 0, 0, 0)
    sides: str = "one-sided"
    #: How back sides must be turned for the device (PWG raster ``sheet-back``).
    sheet_back: str = "normal"
    orientation: int | None = None
    number_up: int = 1
    page_ranges: tuple[tuple[int, int], ...] = ()
    quality: int = 4

    @property
    def sheet_pixels(self) -> tuple[int, int]:
        width, height = media_size_inches(self.media)
        return round(width * self.dpi), round(height * self.dpi)

    @property
    def printable_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in pixels of the printable area."""
        width, height = self.sheet_pixels
        top, right, bottom, left = (round(m / 2540 * self.dpi) for m in self.margins)
        return left, top, max(left + 1, width - right), max(top + 1, height - bottom)

    def selected(self, number: int) -> bool:
        """Page ``number`` (1-based) is in ``page-ranges`` (every page when none are given)."""
        return not self.page_ranges or any(lo <= number <= hi for lo, hi in self.page_ranges)

    @classmethod
    def for_job(cls, capabilities: dict[str, Any], ticket: dict[str, Any]) -> Layout:
        """The layout a device with ``capabilities`` needs for a job with ``ticket``."""
        quality = int(ticket.get("print-quality") or capabilities.get("print-quality-default") or 4)
        resolutions = sorted(int(r) for r in capabilities.get("pwg-raster-document-resolution-supported") or []
                             if 0 < int(r) <= MAX_DPI)
        if not resolutions:
            dpi = DEFAULT_DPI
        elif quality == 5:
            dpi = resolutions[-1]
        elif quality == 3:
            dpi = resolutions[0]
        else:
            dpi = min(resolutions, key=lambda r: abs(r - DEFAULT_DPI))
        mode = ticket.get("print-color-mode") or capabilities.get("print-color-mode-default") or "monochrome"
        color_ok = bool({"color", "auto"} & set(capabilities.get("print-color-mode-supported") or []))
        margins = tuple(min(capabilities.get(f"media-{side}-margin-supported") or [0])
                        for side in ("top", "right", "bottom", "left"))
        return cls(dpi=dpi, media=ticket.get("media") or capabilities.get("media-default") or "iso_a4_210x297mm",
                   color=color_ok and mode != "monochrome", margins=margins,  # type: ignore[arg-type]
                   sides=ticket.get("sides") or capabilities.get("sides-default") or "one-sided",
                   sheet_back=capabilities.get("pwg-raster-document-sheet-back") or "normal",
                   orientation=ticket.get("orientation-requested"),
                   number_up=int(ticket.get("number-up") or 1),
                   page_ranges=tuple(tuple(r) for r in ticket.get("page-ranges") or ()),  # type: ignore[misc]
                   quality=quality)


@dataclass
class SourcePage:
    """One page of the input: its size (any unit, only the aspect matters) and how to draw it
    into a box of pixels (the result fits the box and keeps the aspect)."""

    width: float
    height: float
    render: Callable[[int, int], Image.Image]
    #: Draws the page straight into the sheet's pixels (PDF pages): ``draw(region, turn)`` fills
    #: ``region``, a view of the sheet of the size ``fitted`` gave (turned), with the page turned
    #: ``turn`` degrees counter-clockwise. No image is made and copied in between.
    draw: Callable[[np.ndarray, int], None] | None = None

    def fitted(self, box_width: int, box_height: int) -> tuple[int, int]:
        """The size in pixels the page takes in a box, keeping its aspect (what ``draw`` fills)."""
        scale = min(box_width / self.width, box_height / self.height)
        return (max(1, min(box_width, math.ceil(self.width * scale))),
                max(1, min(box_height, math.ceil(self.height * scale))))


@dataclass
class Sheet:
    """One finished side of a sheet, as an encoder writes it: ``pixels`` is (height, width)
    8-bit gray or (height, width, 3) sRGB, row after row."""

    pixels: np.ndarray
    dpi: int
    media_name: str
    duplex: bool = False
    tumble: bool = False
    quality: int = 4
    media_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def color(self) -> bool:
        return self.pixels.ndim == 3

    @property
    def image(self) -> Image.Image:
        """The pixels as a Pillow image ("L" or "RGB"), for the PDF and JPEG writers."""
        return Image.fromarray(self.pixels)
