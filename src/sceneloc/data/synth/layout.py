"""Laying out a scene: planted groups first, each with a same-shape distractor, then fill."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sceneloc.data.synth.canvas import Canvas, PlacedShape
from sceneloc.data.synth.domain import DEFAULT_DOMAIN, Domain
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.options import crowd_scale
from sceneloc.data.synth.planting import PlantedGroup, plant
from sceneloc.data.synth.sampling import choice, draw_diameter, draw_pair
from sceneloc.data.synth.vocab import SIZES

#: The most objects one planted group adds: a row of up to 4 and its distractor.
GROUP_ROOM = 5


@dataclass
class Layout:
    """A filled canvas: the objects queries are asked about, its planted groups, and the
    placed shapes the image is painted from."""

    objects: list[SceneObject]
    groups: list[PlantedGroup]
    shapes: list[PlacedShape]


def lay_out(
    rng: np.random.Generator,
    side: int,
    count: int,
    arrangements: list[str],
    split: str,
    domain: Domain = DEFAULT_DOMAIN,
) -> Layout | None:
    """Plant the arrangements, then fill up to ``count`` shapes of ``domain``; ``None`` when
    they won't fit."""
    base = domain.size_base(side)
    scale = crowd_scale(count, (side / base) ** 2)
    canvas = Canvas(side, count)
    groups: list[PlantedGroup] = []
    for arrangement in arrangements:
        if len(canvas.shapes) + GROUP_ROOM > count:
            break
        group = plant(rng, canvas, len(groups), arrangement, split, scale, domain)
        if group is None:
            continue
        groups.append(group)
        first = canvas.shapes[group.members[0]]
        color = choice(rng, [c for c in domain.colors if c != first.color])
        size = choice(rng, SIZES)
        canvas.place_anywhere(rng, first.shape, color, size, draw_diameter(rng, size, base, scale))
    while len(canvas.shapes) < count:
        color, shape = draw_pair(rng, split, domain=domain)
        size = choice(rng, SIZES)
        placed = canvas.place_anywhere(
            rng, shape, color, size, draw_diameter(rng, size, base, scale)
        )
        if placed is None and size != "small":
            d = draw_diameter(rng, "small", base, scale)
            placed = canvas.place_anywhere(rng, shape, color, "small", d)
        if placed is None:
            return None
    return Layout(canvas.objects(), groups, canvas.shapes)
