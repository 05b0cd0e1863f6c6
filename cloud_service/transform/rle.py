"""The run-length line coding PWG raster (PWG 5102.4) and Apple raster (URF) share.

Each line is a line-repeat byte (the line is used that many times plus one) followed by runs:
a byte ``n`` below 128 repeats the next pixel ``n + 1`` times; a byte ``n`` above 128 is
followed by ``257 - n`` literal pixels. (Byte 128 is never written; URF readers take it as
"the rest of the line is white", PWG readers as reserved.)

Written by hand because no maintained Python encoder exists (Pillow reads neither format;
cups-filters and Ghostscript are C programs). It is vectorised with NumPy over bands of lines:
runs, literal groups, packets and their bytes are all computed as arrays, so no Python loop
runs per pixel or per run; memory is bounded by the band, not the page.
"""

from __future__ import annotations

import numpy as np

#: Distinct lines coded together (bounds the index arrays to a few tens of MB at 600 dpi colour).
BAND = 64


def encode_page(pixels: np.ndarray) -> bytes:
    """The coded lines of one page: ``pixels`` is (height, width) uint8 or (height, width, n)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, depth = pixels.shape
    # One integer per pixel, so equal pixels compare equal in one operation.
    if depth == 1:
        keys = pixels[:, :, 0]
    else:
        keys = (pixels[:, :, 0].astype(np.uint32) << 16) | (pixels[:, :, 1].astype(np.uint32) << 8) \
            | pixels[:, :, 2].astype(np.uint32)
    rows = np.ascontiguousarray(pixels).reshape(height, width * depth)
    # Lines equal to the one before are not coded again: they raise its repeat count (max 255).
    words = rows.view(np.uint64) if rows.shape[1] % 8 == 0 else rows  # compare 8 bytes at a time
    same = np.all(words[1:] == words[:-1], axis=1).tolist() if height > 1 else []
    lines: list[int] = []
    repeats: list[int] = []
    for y in range(height):
        if y and same[y - 1] and repeats[-1] < 255:
            repeats[-1] += 1
        else:
            lines.append(y)
            repeats.append(0)
    out = []
    for first in range(0, len(lines), BAND):
        chosen = np.asarray(lines[first:first + BAND])
        out.append(_encode_band(keys[chosen], rows[chosen], np.asarray(repeats[first:first + BAND], np.uint8),
                                depth))
    return b"".join(out)


def _encode_band(keys: np.ndarray, rows: np.ndarray, repeats: np.ndarray, depth: int) -> bytes:
    width = keys.shape[1]
    flat, raw = keys.ravel(), rows.ravel()
    n = flat.size
    # Runs of equal pixels, never across a line's start.
    breaks = np.empty(n, bool)
    breaks[0] = True
    np.not_equal(flat[1:], flat[:-1], out=breaks[1:])
    breaks[::width] = True
    run_start = np.flatnonzero(breaks).astype(np.int32)  # 32-bit indices: half the memory traffic
    run_len = np.diff(np.append(run_start, np.int32(n)))
    single = run_len == 1
    # Segments: a run of 2+ pixels, or a group of consecutive single pixels (a literal), per line.
    seg_flag = ~single | (run_start % width == 0)
    seg_flag[1:] |= ~single[:-1]
    seg_first = np.flatnonzero(seg_flag)
    seg_start = run_start[seg_first]
    seg_len = np.add.reduceat(run_len, seg_first)
    seg_literal = single[seg_first]
    # Packets of at most 128 pixels each (most segments are one packet: then no splitting).
    if seg_len.size == 0 or int(seg_len.max()) <= 128:
        pk_start, pk_len, pk_literal = seg_start, seg_len, seg_literal
    else:
        packets = (seg_len + 127) // 128
        seg_of = np.repeat(np.arange(seg_first.size, dtype=np.int32), packets)
        part = np.arange(seg_of.size, dtype=np.int32) - np.repeat(np.cumsum(packets) - packets, packets)
        pk_start = seg_start[seg_of] + 128 * part
        pk_len = np.minimum(128, seg_len[seg_of] - 128 * part)
        pk_literal = seg_literal[seg_of]
    literal = pk_literal & (pk_len > 1)  # a literal of one pixel is a run of one
    code = np.where(literal, 257 - pk_len, pk_len - 1).astype(np.uint8)
    pixel_bytes = np.where(literal, pk_len, 1) * depth
    opens_line = pk_start % width == 0  # the line's repeat byte goes before this packet
    size = 1 + pixel_bytes + opens_line
    offset = np.cumsum(size) - size
    out = np.empty(int(size.sum()), np.uint8)
    out[offset[opens_line]] = repeats[pk_start[opens_line] // width]
    code_at = offset + opens_line
    out[code_at] = code
    # Every other byte is pixel data, taken from the raw line in order: all pixels of literals,
    # the first pixel of each run packet. So one mask moves them all, with no index arrays.
    keep = np.zeros(n, bool)
    keep[run_start[single]] = True
    keep[pk_start[~pk_literal]] = True
    header = np.zeros(out.size, bool)
    header[code_at] = True
    header[offset[opens_line]] = True
    out[~header] = raw[np.repeat(keep, depth) if depth > 1 else keep]
    return out.tobytes()


def decode_page(data: bytes, width: int, height: int, depth: int, white: int = 255) -> tuple[np.ndarray, int]:
    """The pixels of one coded page and the bytes it used (for tests and the simulated printer's
    checks; not on the service's path)."""
    out = np.empty((height, width * depth), np.uint8)
    pos = y = 0
    while y < height:
        repeat = data[pos] + 1
        pos += 1
        line = bytearray()
        while len(line) < width * depth:
            code = data[pos]
            pos += 1
            if code < 128:
                line += data[pos:pos + depth] * (code + 1)
                pos += depth
            elif code == 128:
                line += bytes([white]) * (width * depth - len(line))
            else:
                line += data[pos:pos + (257 - code) * depth]
                pos += (257 - code) * depth
        for _ in range(min(repeat, height - y)):
            out[y] = np.frombuffer(bytes(line[:width * depth]), np.uint8)
            y += 1
    return out.reshape(height, width, depth), pos
