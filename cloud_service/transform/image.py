"""JPEG and PNG pages (Pillow): one page each, turned as its EXIF says, transparency laid on
white paper, scaled to fill its box (up or down) keeping its aspect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps

from cloud_service.transform.page import FORMAT_ERROR, UNPRINTABLE, SourcePage, TransformError

#: Larger images are refused (a decompression bomb, or a poster no printer page needs).
MAX_PIXELS = 200_000_000


class ImageSource:
    count = 1

    def __init__(self, path: Path) -> None:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            self.image = Image.open(path)
            self.image.load()
        except Image.DecompressionBombError:
            raise TransformError(UNPRINTABLE, "the image is too large to print") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise TransformError(FORMAT_ERROR, f"the image cannot be read ({exc})") from None
        self.image = ImageOps.exif_transpose(self.image) or self.image

    def pages(self) -> Iterator[SourcePage]:
        image = self.image
        yield SourcePage(image.width, image.height, self._render)

    def _render(self, box_width: int, box_height: int) -> Image.Image:
        image = _on_white(self.image)
        scale = min(box_width / image.width, box_height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)

    def close(self) -> None:
        self.image.close()


def _on_white(image: Image.Image) -> Image.Image:
    """RGB or L with any transparency composited onto white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("1", "I", "I;16", "F"):
        return image.convert("L")
    return image.convert("RGB")
