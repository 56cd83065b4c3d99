"""The offline demo: a dense synthetic scene, asked several questions by ``native-synth``.

Needs no network and no argument: the scene is drawn on the spot, the model ships inside
the package. The questions cover each query type, a ``group`` event, and one thing that is
not in the picture, so the answer "not found" is shown too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sceneloc.data.synth import COLORS, QUERY_TYPES, SHAPES, make_scene

DEMO_MODEL = "native-synth"


@dataclass(frozen=True)
class DemoScene:
    image: Image.Image
    queries: list[str]
    #: The true box of each query, ``None`` for the one whose referent is absent.
    truths: list[list[float] | None]


def demo_scene(seed: int = 2024) -> DemoScene:
    """A scene with one query of each type, a group event among them, and an absent one."""
    for attempt in itertools.count(seed):  # the first scene asked all four kinds of query
        scene = make_scene(np.random.default_rng(attempt), queries_per_image=8, split="test")
        chosen = {}
        for sample in scene.samples:
            chosen.setdefault(sample.type, sample)
        if set(QUERY_TYPES) <= set(chosen):
            break
    samples = [chosen[kind] for kind in QUERY_TYPES]
    present = {(o.color, o.shape) for o in scene.objects}
    color, shape = next((c, s) for c in COLORS for s in SHAPES if (c, s) not in present)
    return DemoScene(
        image=scene.image,
        queries=[s.query for s in samples] + [f"the {color} {shape}"],
        truths=[s.box for s in samples] + [None],
    )
