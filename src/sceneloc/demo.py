"""The offline demo: a dense synthetic scene, asked several questions by ``native-synth``,
and the other way round, a few of its regions described by ``native-describer-synth`` and
each description located again.

Needs no network and no argument: the scene is drawn on the spot, the models ship inside
the package. The questions cover each query type, a ``group`` event, and one thing that is
not in the picture, so the answer "not found" is shown too. The regions described are the
present questions' true boxes; a description is good when the grounder, given it, finds
the same region again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sceneloc.api import Describer, Grounder
from sceneloc.boxes import Box, iou_matrix
from sceneloc.data.synth import COLORS, QUERY_TYPES, SHAPES, make_scene
from sceneloc.results import DescribeAnswer

DEMO_MODEL = "native-synth"
DEMO_DESCRIBER = "native-describer-synth"


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


@dataclass(frozen=True)
class RoundTrip:
    """A region, what the describer said of it, and where the grounder found those words."""

    box: Box
    caption: str
    found: Box | None
    iou: float


def describe_and_locate(
    image: Image.Image, boxes: Sequence[Box], describer: Describer, grounder: Grounder
) -> tuple[DescribeAnswer, list[RoundTrip]]:
    """Describe each box, then locate each description: the speaker-listener check."""
    described = describer.describe(image, boxes)
    located = grounder.locate(image, described.captions, threshold=0.0, top_k=1)
    trips = [
        RoundTrip(
            region.box,
            region.caption,
            result.box,
            float(iou_matrix([result.box], [region.box])[0, 0]) if result.found else 0.0,
        )
        for region, result in zip(described, located)
    ]
    return described, trips
