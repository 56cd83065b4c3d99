"""Placing shapes with bounded occlusion: per pixel, which shape is on top.

Occlusion is counted, not guessed: a shape is placed only when every shape it covers keeps
at least :data:`MIN_VISIBLE` of its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sceneloc.data.synth.draw import ShapeMask, shape_mask
from sceneloc.data.synth.objects import SceneObject

#: Every shape keeps at least this fraction of its pixels visible, whatever is drawn over it.
MIN_VISIBLE = 0.7
#: Pixels left free along each image border.
MARGIN = 2

CanvasState = tuple[np.ndarray, np.ndarray, int]


@dataclass
class PlacedShape:
    """A shape on the canvas: what it is, where its mask's top-left corner lies."""

    shape: str
    color: str
    size: str
    x: int
    y: int
    mask: ShapeMask

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.mask.width / 2, self.y + self.mask.height / 2


class Canvas:
    """Placed shapes, bottom first, and the owner of every pixel."""

    def __init__(self, size: int, capacity: int) -> None:
        self.size = size
        self.owner = np.full((size, size), -1, np.int16)
        self.visible = np.zeros(capacity, np.int64)
        self.area = np.zeros(capacity, np.int64)
        self.shapes: list[PlacedShape] = []

    def place(self, shape: str, color: str, size: str, diameter: int, x: int, y: int) -> int | None:
        """Draw on top at ``(x, y)`` unless that would hide too much of a shape below."""
        mask = shape_mask(shape, diameter)
        limit = self.size - MARGIN
        if x < MARGIN or y < MARGIN or x + mask.width > limit or y + mask.height > limit:
            return None
        if len(self.shapes) >= len(self.area):
            return None
        region = self.owner[y : y + mask.height, x : x + mask.width]
        under = region[mask.mask]
        under = under[under >= 0]
        if under.size:
            ids, counts = np.unique(under, return_counts=True)
            left = self.visible[ids] - counts
            if np.any(left < MIN_VISIBLE * self.area[ids]):
                return None
            self.visible[ids] = left
        index = len(self.shapes)
        region[mask.mask] = index
        self.visible[index] = self.area[index] = mask.area
        self.shapes.append(PlacedShape(shape, color, size, x, y, mask))
        return index

    def place_centred(
        self, shape: str, color: str, size: str, diameter: int, cx: float, cy: float
    ) -> int | None:
        mask = shape_mask(shape, diameter)
        x, y = round(cx - mask.width / 2), round(cy - mask.height / 2)
        return self.place(shape, color, size, diameter, x, y)

    def place_anywhere(
        self,
        rng: np.random.Generator,
        shape: str,
        color: str,
        size: str,
        diameter: int,
        tries: int = 30,
    ) -> int | None:
        mask = shape_mask(shape, diameter)
        room_x = self.size - 2 * MARGIN - mask.width
        room_y = self.size - 2 * MARGIN - mask.height
        if room_x < 0 or room_y < 0:
            return None
        for _ in range(tries):
            x = MARGIN + int(rng.integers(room_x + 1))
            y = MARGIN + int(rng.integers(room_y + 1))
            index = self.place(shape, color, size, diameter, x, y)
            if index is not None:
                return index
        return None

    def snapshot(self) -> CanvasState:
        return self.owner.copy(), self.visible.copy(), len(self.shapes)

    def restore(self, state: CanvasState) -> None:
        self.owner, self.visible, count = state[0], state[1], state[2]
        del self.shapes[count:]

    def objects(self) -> list[SceneObject]:
        return [
            SceneObject(
                id=i,
                shape=placed.shape,
                color=placed.color,
                size=placed.size,
                box=(
                    float(placed.x),
                    float(placed.y),
                    float(placed.x + placed.mask.width),
                    float(placed.y + placed.mask.height),
                ),
                area=placed.mask.area,
                visible=round(float(self.visible[i]) / placed.mask.area, 3),
            )
            for i, placed in enumerate(self.shapes)
        ]
