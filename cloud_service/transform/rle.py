"""The run-length line coding PWG raster (PWG 5102.4) and Apple raster (URF) share.

Each line is a line-repeat byte (the line is used that many times plus one) followed by runs:
a byte ``n`` below 128 repeats the next pixel ``n + 1`` times; a byte ``n`` above 128 is
followed by ``257 - n`` literal pixels. (Byte 128 is never written; URF readers take it as
"the rest of the line is white", PWG readers as reserved.) Runs of two or more equal pixels are
run packets; the single pixels between them are grouped into literal packets; both are cut at
128 pixels, and a one-pixel remainder is a run of one.

Written by hand because no maintained Python encoder exists (Pillow reads neither format;
cups-filters and Ghostscript are C programs). It is vectorised with NumPy over bands of
distinct lines, and each step costs about one pass over the band's pixels or over its
segments: no Python loop runs per pixel or per run, no boolean-mask selection (slow on masks
as irregular as text), and the band's large work arrays are allocated once per page and
reused, so memory stays a few MB and in cache whatever the page.
"""

from __future__ import annotations

import numpy as np

#: Pixels coded in one pass: big enough that NumPy's per-call cost is small beside the work,
#: small enough that the work arrays (about 30 bytes a pixel) stay in the processor's cache.
BAND_PIXELS = 1 << 18
#: Longest run or literal one code byte holds; most line repeats one repeat byte holds.
MAX_PACKET = 128
MAX_REPEAT = 256


def encode_page(pixels: np.ndarray, band_pixels: int = BAND_PIXELS) -> bytes:
    """The coded lines of one page: ``pixels`` is (height, width) uint8 or (height, width, n)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, depth = pixels.shape
    if height == 0 or width == 0:
        return b""
    rows = np.ascontiguousarray(pixels).reshape(height, width * depth)
    first, repeats = distinct_lines(rows)
    per_band = max(1, band_pixels // width)
    scratch = _Scratch(min(per_band, first.size), width, depth)
    return b"".join(_encode_band(rows, first[at:at + per_band], repeats[at:at + per_band], scratch)
                    for at in range(0, first.size, per_band))


def distinct_lines(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lines that are coded (the first of each group of equal consecutive lines, at most
    256 to a group) and each one's repeat byte (the group's size less one)."""
    height = rows.shape[0]
    new = np.empty(height, bool)
    new[0] = True
    if height > 1:
        words = rows.view(np.uint64) if rows.shape[1] % 8 == 0 else rows  # 8 bytes at a time
        np.any(words[1:] != words[:-1], axis=1, out=new[1:])
    first = new.nonzero()[0]
    count = np.diff(first, append=height)
    if int(count.max()) > MAX_REPEAT:  # cut longer groups: 256 uses, 256, ..., the rest
        groups = (count + (MAX_REPEAT - 1)) // MAX_REPEAT
        owner = np.repeat(np.arange(first.size), groups)
        part = np.arange(owner.size) - np.repeat(np.cumsum(groups) - groups, groups)
        first, count = first[owner] + MAX_REPEAT * part, np.minimum(MAX_REPEAT, count[owner] - MAX_REPEAT * part)
    return first, (count - 1).astype(np.uint8)


class _Scratch:
    """A band's large work arrays, made once per page: fresh memory for each band would cost
    a page fault per 4 KiB, about as much as the coding itself."""

    def __init__(self, lines: int, width: int, depth: int) -> None:
        n = lines * width
        self.width, self.depth = width, depth
        self.lines = np.empty((lines, width * depth), np.uint8)
        self.starts = np.empty(n + 2, bool)  # padded: a run starts before and after the band
        self.segment = np.empty(n, bool)
        self.differs = np.empty(max(0, (n - 1) * depth), bool) if depth > 1 else None
        self.step = np.empty(0, np.intp)
        self.index = np.empty(0, np.intp)

    def output(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if self.step.size < size:
            self.step = np.empty(max(size, 2 * self.step.size), np.intp)
            self.index = np.empty(self.step.size, np.intp)
        return self.step[:size], self.index[:size]


def _encode_band(rows: np.ndarray, chosen: np.ndarray, repeats: np.ndarray, scratch: _Scratch) -> np.ndarray:
    """The coded bytes of the lines ``chosen`` of ``rows``, each after its repeat byte."""
    width, depth = scratch.width, scratch.depth
    lines = scratch.lines[:chosen.size]
    np.take(rows, chosen, axis=0, out=lines, mode="clip")
    n = chosen.size * width
    raw = lines.reshape(-1)
    # starts[1 + i]: pixel i starts a run (it differs from the pixel before, or starts a line).
    starts = scratch.starts[:n + 2]
    starts[0] = starts[-1] = True
    run = starts[1:-1]
    if depth == 1:
        np.not_equal(raw[1:], raw[:-1], out=run[1:])
    else:
        differs = scratch.differs[:(n - 1) * depth]
        np.not_equal(raw[depth:], raw[:-depth], out=differs)
        np.bitwise_or(differs[0::depth], differs[1::depth], out=run[1:])
        for channel in range(2, depth):
            run[1:] |= differs[channel::depth]
    run[::width] = True
    single_after = starts[2:]  # the pixel after starts a run: this pixel's run ends here
    # A segment (a run of 2+ pixels, or a group of single pixels: a literal) starts at a run's
    # start unless both neighbouring runs are single pixels, and at every line's start.
    segment = scratch.segment[:n]
    np.bitwise_and(starts[:-2], single_after, out=segment)
    np.greater(run, segment, out=segment)
    segment[::width] = True
    start = segment.nonzero()[0]
    length = np.empty_like(start)
    np.subtract(start[1:], start[:-1], out=length[:-1])
    length[-1] = n - start[-1]
    literal = single_after[start]
    opens = np.searchsorted(start, np.arange(0, n, width))  # the segment each line starts with
    less = length - 1
    pieces = (less >> 7) + 1 if int(less.max()) >= MAX_PACKET else None  # packets per segment (128 = 2**7)
    # Output bytes per segment: code bytes, pixel bytes, and a line's repeat byte.
    data = np.where(literal, length, 1 if pieces is None else pieces)
    if depth > 1:
        data *= depth
    size = data + (1 if pieces is None else pieces)
    size[opens] += 1
    end = np.cumsum(size)
    head = end - size  # where each segment's first code byte goes
    head[opens] += 1
    # The output is raw bytes taken in order, with code bytes between: the raw index of every
    # output byte is the running sum of steps, 1 within a packet's pixels; a segment's first
    # code byte skips the rest of the run before it (a literal before it was taken whole).
    step, index = scratch.output(int(end[-1]))
    step.fill(1)
    skip = np.where(literal, 0, less * depth if depth > 1 else less)
    step[head[1:]] = skip[:-1]
    step[head[0]] = -1  # so the band's first pixel is raw index 0
    repeat_at = head[opens] - 1
    step[repeat_at] = 0  # repeat bytes (their index, like a code byte's, is overwritten)
    if pieces is not None:
        # Segments over 128 pixels: the code bytes of their full pieces come first, each
        # followed by 128 literal pixels, or by the run's pixel again.
        cut = np.flatnonzero(pieces > 1)
        full = pieces[cut] - 1
        owner = np.repeat(cut, full)
        part = np.arange(owner.size) - np.repeat(np.cumsum(full) - full, full)
        owner_literal = literal[owner]
        gap = np.where(owner_literal, MAX_PACKET * depth + 1, depth + 1)
        full_at = head[owner] + part * gap
        step[full_at + gap] = np.where(owner_literal, 0, -depth)
        head[cut] += full * np.where(literal[cut], MAX_PACKET * depth + 1, depth + 1)  # now the last piece's
        less &= MAX_PACKET - 1
    np.cumsum(step, out=index)
    out = np.take(raw, index, mode="clip")  # "clip": the -1 before the first pixel is overwritten
    # A run of n pixels is n - 1, a literal of n is 257 - n: -(n - 1) in a byte, as (c ^ 255) + 1.
    flag = literal.view(np.uint8)
    out[head] = (less.astype(np.uint8) ^ -flag) + flag
    if pieces is not None:
        out[full_at] = np.where(owner_literal, 257 - MAX_PACKET, MAX_PACKET - 1)
    out[repeat_at] = repeats
    return out


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
