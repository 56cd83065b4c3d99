"""Planted groups: arrangements a group query can ask about, placed on purpose.

Random placement almost never puts three same-coloured stars in a row or a star inside a
circle, so each arrangement is built where it is wanted, on the still-empty canvas, with
the referent's colour-shape pair drawn for the scene's split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sceneloc.data.synth.canvas import MARGIN, Canvas
from sceneloc.data.synth.domain import DEFAULT_DOMAIN, Domain
from sceneloc.data.synth.draw import shape_mask
from sceneloc.data.synth.sampling import choice, draw_diameter, draw_pair

#: Fresh attempts at an arrangement before the scene does without it.
PLANT_TRIES = 20


@dataclass(frozen=True)
class PlantedGroup:
    """An arrangement placed in a scene; ``members`` are object ids in the order a query
    names them (a row left to right, a column top to bottom, the inner or upper one first)."""

    id: int
    arrangement: str
    members: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """The group as listed in ``scenes.jsonl``."""
        return {"id": self.id, "arrangement": self.arrangement, "members": list(self.members)}


def plant(
    rng: np.random.Generator,
    canvas: Canvas,
    group_id: int,
    arrangement: str,
    split: str,
    scale: float,
    domain: Domain = DEFAULT_DOMAIN,
) -> PlantedGroup | None:
    """Place one arrangement's members, or nothing (the canvas as it was) when it won't fit."""
    color, shape = draw_pair(rng, split, "target", domain)
    planter = _Planter(rng, canvas, scale, color, shape, domain)
    for _ in range(PLANT_TRIES):
        state = canvas.snapshot()
        if arrangement in ("row", "column"):
            members = planter.line(arrangement)
        else:
            other = _other_pair(rng, split, color, domain)
            members = planter.inside(other) if arrangement == "inside" else planter.on_top(other)
        if members is not None:
            return PlantedGroup(group_id, arrangement, tuple(members))
        canvas.restore(state)
    return None


def _other_pair(
    rng: np.random.Generator, split: str, color: str, domain: Domain
) -> tuple[str, str]:
    """The second object's pair, in another colour so the two are told apart by it."""
    while True:
        pair = draw_pair(rng, split, "named", domain)
        if pair[0] != color:
            return pair


class _Planter:
    """Places the referent's ``color`` ``shape`` in one arrangement; each method returns the
    members in the order named, or ``None`` when a shape did not fit."""

    def __init__(
        self,
        rng: np.random.Generator,
        canvas: Canvas,
        scale: float,
        color: str,
        shape: str,
        domain: Domain,
    ) -> None:
        self.rng, self.canvas, self.scale = rng, canvas, scale
        self.color, self.shape, self.domain = color, shape, domain

    def diameter(self, size: str) -> int:
        base = self.domain.size_base(self.canvas.size)
        return draw_diameter(self.rng, size, base, self.scale)

    def line(self, arrangement: str) -> list[int] | None:
        """Three or four identical shapes evenly spaced along a row or a column."""
        rng, canvas, side = self.rng, self.canvas, self.canvas.size
        count = int(rng.integers(3, 5))
        size = choice(rng, ("small", "medium"))
        d = self.diameter(size)
        mask = shape_mask(self.shape, d)
        extent = max(mask.width, mask.height)
        step = extent * rng.uniform(1.3, 1.6)  # the resolver's strict rows: 1 to 2 extents
        length = step * (count - 1) + extent
        if length > side - 2 * MARGIN - 2:
            return None
        along = MARGIN + 1 + extent / 2 + rng.uniform(0, side - 2 * MARGIN - 2 - length)
        across = rng.uniform(MARGIN + extent, side - MARGIN - extent)
        members = []
        for k in range(count):
            c = along + k * step
            cx, cy = (c, across) if arrangement == "row" else (across, c)
            index = canvas.place_centred(self.shape, self.color, size, d, cx, cy)
            if index is None:
                return None
            members.append(index)
        return members

    def inside(self, other: tuple[str, str]) -> list[int] | None:
        """A small shape centred in a large container of the other pair's colour."""
        other_color, _ = other
        container = choice(self.rng, self.domain.containers)
        outer_d = self.diameter("large")
        inner_d = min(self.diameter("small"), int(0.42 * outer_d))
        outer = self.canvas.place_anywhere(
            self.rng, container, other_color, "large", outer_d, tries=5
        )
        if outer is None:
            return None
        cx, cy = self.canvas.shapes[outer].center
        inner = self.canvas.place_centred(self.shape, self.color, "small", inner_d, cx, cy)
        return None if inner is None else [inner, outer]

    def on_top(self, other: tuple[str, str]) -> list[int] | None:
        """The referent standing on the other pair's shape, centred, a pixel or two above it."""
        rng, canvas = self.rng, self.canvas
        other_color, other_shape = other
        lower_size, upper_size = choice(rng, ("medium", "large")), choice(rng, ("small", "medium"))
        lower_d, upper_d = self.diameter(lower_size), self.diameter(upper_size)
        upper_mask = shape_mask(self.shape, upper_d)
        lower = canvas.place_anywhere(rng, other_shape, other_color, lower_size, lower_d, tries=5)
        if lower is None:
            return None
        below = canvas.shapes[lower]
        smallest = min(
            max(upper_mask.width, upper_mask.height), max(below.mask.width, below.mask.height)
        )
        gap = int(rng.integers(1, max(2, int(0.12 * smallest)) + 1))
        x = round(below.center[0] - upper_mask.width / 2)
        y = below.y - gap - upper_mask.height
        upper = canvas.place(self.shape, self.color, upper_size, upper_d, x, y)
        return None if upper is None else [upper, lower]
