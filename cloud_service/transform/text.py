"""UTF-8 plain text pages: a form feed starts a page, 60 lines fill one (as the page counter
counts them, schemas.model.pages), long lines wrap. Drawn with DejaVu Sans Mono, found on the
machine at run time (Debian's fonts-dejavu-core), which covers Latin, Greek, Cyrillic and
more; without it Pillow's built-in font is used, which draws only Latin characters (others
print as boxes). Text is read line by line: memory is one page whatever the file's size."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cloud_service.transform.page import SourcePage

LINES_PER_PAGE = 60
#: Characters per line: a classic 80-column listing.
COLUMNS = 80
FONT_NAMES = ("DejaVuSansMono.ttf", "DejaVuSans.ttf")
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts"), Path("/usr/local/share/fonts"),
             Path.home() / ".fonts")


@functools.cache
def font_path() -> Path | None:
    """The first DejaVu font on the machine (None: fall back to Pillow's own font)."""
    for name in FONT_NAMES:
        for folder in FONT_DIRS:
            direct = folder / name
            if direct.is_file():
                return direct
            if folder.is_dir():
                found = next(folder.rglob(name), None)
                if found is not None:
                    return found
    return None


class TextSource:
    def __init__(self, path: Path, aspect: float) -> None:
        self.path = path
        #: Width over height of the box a page fills (the printable area).
        self.aspect = aspect
        self.count: int | None = None  # known only after reading

    def pages(self) -> Iterator[SourcePage]:
        for lines in self._paginate():
            yield SourcePage(self.aspect, 1.0, functools.partial(_draw, lines))

    def _paginate(self) -> Iterator[list[str]]:
        page: list[str] = []
        with self.path.open("r", encoding="utf-8", errors="replace", newline=None) as f:
            for raw in f:
                parts = raw.rstrip("\n").split("\f")
                for i, part in enumerate(parts):
                    if i:
                        yield page
                        page = []
                    if not part and len(parts) > 1:
                        continue  # the empty side of a form feed is not a line
                    for line in _wrap(part.expandtabs(8)):
                        page.append(line)
                        if len(page) == LINES_PER_PAGE:
                            yield page
                            page = []
        if page:
            yield page

    def close(self) -> None:
        return None


def _wrap(line: str) -> list[str]:
    if not line:
        return [""]
    return [line[i:i + COLUMNS] for i in range(0, len(line), COLUMNS)]


def _draw(lines: list[str], box_width: int, box_height: int) -> Image.Image:
    image = Image.new("L", (box_width, box_height), 255)
    line_height = box_height / LINES_PER_PAGE
    size = max(4, min(int(line_height * 0.85), int(box_width / COLUMNS / 0.61)))
    path = font_path()
    font = ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        if line:
            draw.text((0, number * line_height), line, fill=0, font=font)
    return image
