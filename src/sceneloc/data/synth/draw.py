"""Pixels: shape masks, textured backgrounds and the composite, with numpy and PIL only.

Every shape is rasterised once per (shape, diameter) into a tight boolean mask; placement,
occlusion bookkeeping, the object's box and the final paint all use that same mask, so a box
is exactly the extent of the pixels drawn for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from sceneloc.data.synth.vocab import COLORS

#: Per-pixel noise amplitude over everything; more of it mostly makes PNGs bigger.
GRAIN = 3


@dataclass(frozen=True)
class ShapeMask:
    """A tight mask (its array is exactly the shape's box) and its dark outline pixels."""

    mask: np.ndarray
    edge: np.ndarray
    area: int

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])


def _polygon(shape: str, d: float, c: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of extent ``d`` centred on ``(c, c)``."""
    r = d / 2
    if shape == "triangle":  # equilateral, pointing up
        h = d * math.sqrt(3) / 2
        return [(c, c - h / 2), (c + r, c + h / 2), (c - r, c + h / 2)]
    if shape == "hexagon":  # flat top and bottom, so things can stand on it
        return [
            (c + r * math.cos(a), c + r * math.sin(a)) for a in (math.pi / 3 * k for k in range(6))
        ]
    if shape == "diamond":
        return [(c, c - r), (c + 0.35 * d, c), (c, c + r), (c - 0.35 * d, c)]
    if shape == "cross":
        t = d / 6
        return [
            (c - t, c - r),
            (c + t, c - r),
            (c + t, c - t),
            (c + r, c - t),
            (c + r, c + t),
            (c + t, c + t),
            (c + t, c + r),
            (c - t, c + r),
            (c - t, c + t),
            (c - r, c + t),
            (c - r, c - t),
            (c - t, c - t),
        ]
    if shape == "star":  # five points, scaled so its width is d, centred vertically
        outer = d / (2 * math.sin(math.radians(72)))
        inner = 0.45 * outer
        shift = outer * (1 - math.cos(math.radians(36))) / 2
        return [
            (c + rad * math.sin(math.pi / 5 * k), c + shift - rad * math.cos(math.pi / 5 * k))
            for k, rad in zip(range(10), [outer, inner] * 5)
        ]
    raise ValueError(f"unknown shape {shape!r}")


def _erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


@lru_cache(maxsize=8192)
def shape_mask(shape: str, diameter: int) -> ShapeMask:
    """The rasterised shape of extent about ``diameter`` pixels (cached: sizes repeat)."""
    side = diameter + 4
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([2, 2, diameter + 1, diameter + 1], fill=255)
    elif shape == "square":
        draw.rectangle([2, 2, diameter + 1, diameter + 1], fill=255)
    else:
        draw.polygon(_polygon(shape, diameter, side / 2), fill=255)
    x0, y0, x1, y1 = canvas.getbbox() or (0, 0, side, side)
    mask = np.asarray(canvas)[y0:y1, x0:x1] > 0
    inner = _erode(mask)
    if diameter >= 30:  # a thicker outline where a 1 px one would vanish
        inner = _erode(inner)
    mask.flags.writeable = False
    edge = mask & ~inner
    edge.flags.writeable = False
    return ShapeMask(mask=mask, edge=edge, area=int(mask.sum()))


#: Mean brightness range of each textured ground (``noise`` has its own).
GROUND_LEVELS: dict[str, tuple[float, float]] = {
    "texture": (95, 170),
    "light": (195, 235),
    "dark": (25, 65),
}


def background(rng: np.random.Generator, size: int, kind: str = "texture") -> np.ndarray:
    """A low-saturation textured ground: tinted grey, a gradient, blotches, maybe stripes
    (``texture``, ``light``, ``dark``); or ``noise``: strong coloured per-pixel noise.

    Returned as float32 ``(size, size, 3)`` so shapes are painted before the final grain.
    """
    if kind == "noise":
        level = np.float32(rng.uniform(100, 160))
        return level + rng.normal(0, 30, (size, size, 3)).astype(np.float32)
    base = rng.uniform(*GROUND_LEVELS[kind])
    tint = rng.uniform(-10, 10, 3).astype(np.float32)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    gray = (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]) * rng.uniform(8, 28)
    coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    gray = gray + blotches * np.float32(rng.uniform(5, 12)) + np.float32(base)
    if rng.random() < 0.5:
        period = rng.uniform(10, 40) * size / 512
        theta = rng.uniform(0, math.pi)
        pix = np.arange(size, dtype=np.float32)
        phase = (math.cos(theta) * pix[None, :] + math.sin(theta) * pix[:, None]) / period
        gray = gray + np.sin(2 * math.pi * phase + rng.uniform(0, 2 * math.pi)).astype(
            np.float32
        ) * np.float32(rng.uniform(3, 7))
    return gray[:, :, None] + tint


def compose(
    rng: np.random.Generator,
    size: int,
    placed: list[tuple[int, int, ShapeMask, str]],
    ground: str = "texture",
) -> Image.Image:
    """Paint ``(x, y, mask, colour)`` in order on a fresh ``ground``, then add film grain."""
    canvas = background(rng, size, ground)
    for x, y, shape, color in placed:
        fill = np.asarray(COLORS[color], np.float32) + rng.integers(-8, 9, 3).astype(np.float32)
        region = canvas[y : y + shape.height, x : x + shape.width]
        region[shape.mask] = fill
        region[shape.edge] = fill * 0.55
    canvas += rng.integers(-GRAIN, GRAIN + 1, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
