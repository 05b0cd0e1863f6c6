"""From source pages to sheet sides: page-ranges, number-up, orientation-requested, scaling
to the media's printable area, print-color-mode, and the turn of duplex back sides.

A sheet is a NumPy array of pixels, the encoders' input: PDF pages are drawn by PDFium straight
into it; images and text are drawn by Pillow and copied in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from cloud_service.transform.page import Layout, Sheet, SourcePage

#: orientation-requested -> counter-clockwise turn of the page on the sheet (RFC 8011 5.2.10).
_TURN = {3: 0, 4: 90, 5: 270, 6: 180}
_TRANSPOSE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def grid(number_up: int) -> tuple[int, int]:
    """(columns, rows) of an n-up sheet; 2-up is two rows of turned pages on a portrait sheet."""
    columns = math.ceil(math.sqrt(number_up))
    return columns, math.ceil(number_up / columns)


def sheet_count(pages: int, layout: Layout) -> int:
    """Sheet sides a document of ``pages`` pages makes (pages selected by page-ranges, n-up)."""
    selected = sum(1 for n in range(1, pages + 1) if layout.selected(n))
    return math.ceil(selected / max(1, layout.number_up))


def sheets(pages: Iterable[SourcePage], layout: Layout) -> Iterator[Sheet]:
    """The sheet sides, one at a time (memory: one sheet and one page)."""
    chosen = (page for number, page in enumerate(pages, start=1) if layout.selected(number))
    batch: list[SourcePage] = []
    side = 0
    for page in chosen:
        batch.append(page)
        if len(batch) == layout.number_up:
            yield _sheet(batch, layout, side)
            side, batch = side + 1, []
    if batch:
        yield _sheet(batch, layout, side)


def _sheet(batch: list[SourcePage], layout: Layout, side: int) -> Sheet:
    width, height = layout.sheet_pixels
    mode = "RGB" if layout.color else "L"
    pixels = np.full((height, width, 3) if layout.color else (height, width), 255, np.uint8)
    left, top, right, bottom = layout.printable_box
    columns, rows = grid(layout.number_up)
    cell_w, cell_h = (right - left) // columns, (bottom - top) // rows
    for index, page in enumerate(batch):
        x0, y0 = left + (index % columns) * cell_w, top + (index // columns) * cell_h
        turn = _TURN.get(layout.orientation or 0, 0) if layout.orientation else (
            90 if (page.width > page.height) != (cell_w > cell_h) and page.width != page.height else 0)
        box_w, box_h = (cell_h, cell_w) if turn in (90, 270) else (cell_w, cell_h)
        if page.draw is not None:
            w, h = page.fitted(max(1, box_w), max(1, box_h))
            if turn in (90, 270):
                w, h = h, w
            x, y = x0 + (cell_w - w) // 2, y0 + (cell_h - h) // 2
            if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
                page.draw(pixels[y:y + h, x:x + w], turn)
                continue
        drawn = page.render(max(1, box_w), max(1, box_h))
        if turn:
            drawn = drawn.transpose(_TRANSPOSE[turn])
        if drawn.mode != mode:
            drawn = drawn.convert(mode)
        _place(pixels, np.asarray(drawn), x0 + (cell_w - drawn.width) // 2, y0 + (cell_h - drawn.height) // 2)
        drawn.close()
    duplex = layout.sides != "one-sided"
    tumble = layout.sides == "two-sided-short-edge"
    if duplex and side % 2 == 1:
        pixels = _turn_back(pixels, layout.sheet_back, tumble)
    return Sheet(pixels=pixels, dpi=layout.dpi, media_name=layout.media, duplex=duplex, tumble=tumble,
                 quality=layout.quality)


def _place(pixels: np.ndarray, drawn: np.ndarray, x: int, y: int) -> None:
    """Copy ``drawn`` onto the sheet with its top-left corner at (x, y), cut at the sheet's edges."""
    height, width = pixels.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + drawn.shape[1]), min(height, y + drawn.shape[0])
    if x1 > x0 and y1 > y0:
        pixels[y0:y1, x0:x1] = drawn[y0 - y:y1 - y, x0 - x:x1 - x]


def _turn_back(pixels: np.ndarray, sheet_back: str, tumble: bool) -> np.ndarray:
    """A back side as the device's ``pwg-raster-document-sheet-back`` wants it (PWG 5102.4):
    ``normal`` as is; ``flipped`` mirrored top-bottom (long edge) or left-right (short edge);
    ``rotated`` turned 180 on short-edge duplex; ``manual-tumble`` turned 180 on long-edge."""
    if sheet_back == "flipped":
        return np.ascontiguousarray(pixels[:, ::-1] if tumble else pixels[::-1])
    if (sheet_back == "rotated" and tumble) or (sheet_back == "manual-tumble" and not tumble):
        return np.ascontiguousarray(pixels[::-1, ::-1])
    return pixels
