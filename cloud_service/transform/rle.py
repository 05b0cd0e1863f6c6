"""The run-length line coding PWG raster (PWG 5102.4) and Apple raster (URF) share.

Each line is a line-repeat byte (the line is used that many times plus one) followed by runs:
a byte ``n`` below 128 repeats the next pixel ``n + 1`` times; a byte ``n`` above 128 is
followed by ``257 - n`` literal pixels. (Byte 128 is never written; URF readers take it as
"the rest of the line is white", PWG readers as reserved.)

Written by hand because no maintained Python encoder exists (Pillow reads neither format;
cups-filters and Ghostscript are C programs). NumPy finds the run boundaries of a line, so the
Python loop runs once per run, not once per pixel: a text page is mostly repeated white lines
and costs little; a photo is mostly literal runs of 128 pixels.
"""

from __future__ import annotations

import numpy as np


def encode_page(pixels: np.ndarray) -> bytes:
    """The coded lines of one page: ``pixels`` is (height, width) uint8 or (height, width, n)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, depth = pixels.shape
    # One integer per pixel, so equal pixels compare equal in one operation.
    if depth == 1:
        keys = pixels[:, :, 0].astype(np.uint32)
    else:
        keys = (pixels[:, :, 0].astype(np.uint32) << 16) | (pixels[:, :, 1].astype(np.uint32) << 8) \
            | pixels[:, :, 2].astype(np.uint32)
    rows = pixels.reshape(height, width * depth)
    # same[y]: line y + 1 equals line y (one vectorised pass, not a comparison per line pair).
    same = np.all(keys[1:] == keys[:-1], axis=1).tolist() if height > 1 else []
    out = bytearray()
    y = 0
    while y < height:
        repeat = 0
        while repeat < 255 and y + repeat < height - 1 and same[y + repeat]:
            repeat += 1
        out.append(repeat)
        _encode_line(keys[y], rows[y].tobytes(), depth, width, out)
        y += repeat + 1
    return bytes(out)


def _encode_line(key: np.ndarray, raw: bytes, depth: int, width: int, out: bytearray) -> None:
    # Run starts: positions where a pixel differs from the one before it.
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    lengths = np.diff(np.append(starts, width))
    literal_from = -1  # start of pending single pixels, written as one literal run
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        if length == 1:
            if literal_from < 0:
                literal_from = start
            continue
        if literal_from >= 0:
            _literal(raw, depth, literal_from, start, out)
            literal_from = -1
        pixel = raw[start * depth:(start + 1) * depth]
        while length > 0:
            n = min(length, 128)
            out.append(n - 1)
            out += pixel
            length -= n
    if literal_from >= 0:
        _literal(raw, depth, literal_from, width, out)


def _literal(raw: bytes, depth: int, start: int, end: int, out: bytearray) -> None:
    while start < end:
        n = min(end - start, 128)
        if n == 1:
            out.append(0)  # a single pixel is a run of one
        else:
            out.append(257 - n)
        out += raw[start * depth:(start + n) * depth]
        start += n
