"""Every image a user might hand us: odd modes work, broken or hostile files fail clearly."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sceneloc import ImageTooLargeError, InvalidImageError, load_image


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny file claiming enormous dimensions: a decompression bomb's signature."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def exif_rotated_jpeg(scene: Image.Image, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    scene.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1", "I;16"])
def test_any_mode_becomes_rgb_of_same_size(scene, mode):
    if mode == "I;16":
        grey = np.asarray(scene.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
    else:
        image = scene.convert(mode)
    loaded = load_image(image)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == scene.size


def test_sixteen_bit_png_keeps_its_contrast(scene):
    grey = np.asarray(scene.convert("L"), dtype=np.uint16) * 257
    data = png_bytes(Image.fromarray(grey))
    rgb = np.asarray(load_image(data).image)[..., 0].astype(int)
    expected = np.asarray(scene.convert("L"), dtype=int)
    assert np.abs(rgb - expected).max() <= 1


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(image).image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(scene, tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg(scene))
    loaded = load_image(path)
    assert loaded.image.size == (scene.height, scene.width)
    assert loaded.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(InvalidImageError, match="not an image"):
        load_image(path)


def test_truncated_image(scene):
    data = png_bytes(scene.resize((640, 384)))
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load_image(data[: len(data) // 2])


def test_empty_bytes():
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match=r"limit|too large"):
        load_image(huge_png_header())


def test_pixel_limit_is_configurable(scene, monkeypatch):
    monkeypatch.setenv("SCENELOC_MAX_PIXELS", str(scene.width * scene.height - 1))
    with pytest.raises(ImageTooLargeError, match="SCENELOC_MAX_PIXELS"):
        load_image(png_bytes(scene))
    monkeypatch.setenv("SCENELOC_MAX_PIXELS", str(scene.width * scene.height))
    assert load_image(png_bytes(scene)).image.size == scene.size
