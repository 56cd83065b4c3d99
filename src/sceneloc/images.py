"""Turning whatever the user hands us into an upright RGB PIL image, safely.

Every entry point (API, CLI, server) goes through :func:`load_image`, so EXIF rotation,
odd pixel modes and decompression bombs are handled once.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sceneloc.errors import ImageTooLargeError, InvalidImageError

ImageInput = str | os.PathLike | bytes | bytearray | Image.Image

#: Largest image accepted, in pixels (width x height). 64 megapixels covers 8K frames and
#: large panoramas; raise it with the ``SCENELOC_MAX_PIXELS`` environment variable.
DEFAULT_MAX_PIXELS = 64_000_000


def max_pixels() -> int:
    """The pixel limit in force (``SCENELOC_MAX_PIXELS`` or the default)."""
    value = os.environ.get("SCENELOC_MAX_PIXELS")
    return int(value) if value else DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB image and where it came from (``path`` is None for bytes/PIL input)."""

    image: Image.Image
    path: str | None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def load_image(source: ImageInput, limit: int | None = None) -> LoadedImage:
    """Open, verify, EXIF-orient and convert an image to 8-bit RGB.

    Raises :class:`InvalidImageError` for anything that is not a complete image and
    :class:`ImageTooLargeError` above ``limit`` pixels (default :func:`max_pixels`).
    """
    limit = max_pixels() if limit is None else limit
    path: str | None = None
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise InvalidImageError("the image is empty (0 bytes)")
            stream: io.BytesIO | Path = io.BytesIO(bytes(source))
            name = "the uploaded data"
        else:
            path = os.fspath(source)
            stream = Path(path)
            name = path
            if not stream.exists():
                raise InvalidImageError(f"image not found: {path}")
            if not stream.is_file():
                raise InvalidImageError(f"not a file: {path}")
        image = _open(stream, name, limit)
    _check_size(image, limit)
    if not isinstance(source, Image.Image):
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(f"cannot decode {name}: {_short(exc)}") from None
    return LoadedImage(image=to_rgb(ImageOps.exif_transpose(image)), path=path)


def _open(stream: io.BytesIO | Path, name: str, limit: int) -> Image.Image:
    with warnings.catch_warnings():
        # Our own pixel limit applies; PIL's warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(stream)
        except Image.DecompressionBombError:
            raise ImageTooLargeError(
                f"{name} is too large to open safely (over {limit:,} pixels)"
            ) from None
        except UnidentifiedImageError:
            raise InvalidImageError(f"not an image (unrecognised format): {name}") from None
        except OSError as exc:
            raise InvalidImageError(f"cannot read {name}: {_short(exc)}") from None


def _check_size(image: Image.Image, limit: int) -> None:
    pixels = image.width * image.height
    if pixels > limit:
        raise ImageTooLargeError(
            f"image is {image.width}x{image.height} = {pixels:,} pixels, over the limit of "
            f"{limit:,} (set SCENELOC_MAX_PIXELS to raise it)"
        )
    if pixels == 0:
        raise InvalidImageError("image has no pixels")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit grey: rescale to 8 bits instead of PIL's clip at 255.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
