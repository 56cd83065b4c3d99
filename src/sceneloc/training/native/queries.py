"""The strategies the training data is read with beyond its boxes, chosen by what the data is.

A :class:`~sceneloc.training.native.dataset.QueryLabeller` says what a query says of its
image's objects, an :class:`~sceneloc.training.native.dataset.AbsentSampler` makes queries
whose referent is certainly absent. Scenes drawn by the synthetic generator speak a closed
grammar: their queries can be resolved (:class:`SyntheticLabeller`) and a colour-shape pair
missing from an image is surely absent (:class:`MissingPairs`). Any other data (photos, a
converted dataset's scene file) gets no labeller and borrows other images' queries
(:class:`BorrowedQueries`), which for real photos are almost always absent.
"""

from __future__ import annotations

import numpy as np

from sceneloc.data.scenes import SceneRecord, Scenes
from sceneloc.data.synth import (
    COLORS,
    HELD_OUT,
    SHAPES,
    SIZES,
    SceneObject,
    anchor_index,
    described,
    parse_query,
    resolve,
)
from sceneloc.native.processing import to_normalized
from sceneloc.training.native.dataset import AbsentSampler, ImageGroup, QueryLabeller, QueryLabels


def labeller_for(scenes: Scenes | None) -> QueryLabeller | None:
    """The labeller for the data's scenes: the synthetic grammar's, or none."""
    return SyntheticLabeller() if scenes is not None and is_synthetic(scenes) else None


def absent_sampler_for(groups: list[ImageGroup], scenes: Scenes | None) -> AbsentSampler:
    """Missing colour-shape pairs for synthetic scenes, borrowed queries otherwise."""
    if scenes is not None and is_synthetic(scenes):
        return MissingPairs(groups, scenes)
    return BorrowedQueries(groups)


def calibration_sampler(groups: list[ImageGroup], scenes: Scenes | None) -> AbsentSampler | None:
    """What makes absent queries for calibrating "not there": nothing when the data has
    no-target queries of its own (they show what absence looks like in it: a missing
    anchor, a size that is not there, which made queries rarely are), else
    :func:`absent_sampler_for`'s."""
    if any(box is None for group in groups for box in group.boxes):
        return None
    return absent_sampler_for(groups, scenes)


def present_and_absent(
    group: ImageGroup, sampler: AbsentSampler | None, rng: np.random.Generator
) -> tuple[list[tuple[str, list[float]]], list[str]]:
    """An image's queries for calibrating "not there": those with a target (with its box),
    and the absent ones: the data's own no-target queries, then one made by ``sampler`` (if
    any) per present query (fewer where it can make none)."""
    present = [(query, box) for query, box in zip(group.queries, group.boxes) if box is not None]
    absent = [query for query, box in zip(group.queries, group.boxes) if box is None]
    if sampler is None:
        return present, absent
    made = (sampler.sample(group, rng) for _ in present)
    return present, absent + [query for query in made if query is not None]


def is_synthetic(scenes: Scenes) -> bool:
    """Whether every object is a shape of the synthetic vocabulary, with an id."""
    return all(
        obj.id is not None
        and obj.attributes.get("shape") in SHAPES
        and obj.attributes.get("color") in COLORS
        and obj.attributes.get("size") in SIZES
        for scene in scenes
        for obj in scene.objects
    )


class BorrowedQueries:
    """A query of another image, picked at random."""

    def __init__(self, groups: list[ImageGroup]) -> None:
        self.groups = groups

    def sample(self, group: ImageGroup, rng: np.random.Generator) -> str | None:
        other = self.groups[rng.integers(len(self.groups))]
        if other is group:
            return None
        return other.queries[rng.integers(len(other.queries))]


class MissingPairs:
    """ "the <colour> <shape>" for a pair the image lacks, of the scenes' own colours and
    shapes (a model trained on a few colours is asked about things it can name, not about
    words it never read; held-out pairs are never asked); borrowed queries for an image the
    scenes do not list."""

    def __init__(self, groups: list[ImageGroup], scenes: Scenes) -> None:
        self.scenes = scenes
        self.borrowed = BorrowedQueries(groups)
        values = scenes.attributes()
        colors, shapes = set(values.get("color", [])), set(values.get("shape", []))
        self.pairs = [(c, s) for c in COLORS for s in SHAPES
                      if c in colors and s in shapes and (c, s) not in HELD_OUT]  # fmt: skip

    def missing_pairs(self, group: ImageGroup) -> list[tuple[str, str]] | None:
        """The (colour, shape) pairs the image lacks; ``None`` when its scene is not listed."""
        scene = self.scenes.find(group.image_id, group.path)
        if scene is None:
            return None
        present = {(o.attributes.get("color"), o.attributes.get("shape")) for o in scene.objects}
        return [pair for pair in self.pairs if pair not in present]

    def sample(self, group: ImageGroup, rng: np.random.Generator) -> str | None:
        absent = self.missing_pairs(group)
        if absent is None:
            return self.borrowed.sample(group, rng)
        if not absent:
            return None
        color, shape = absent[rng.integers(len(absent))]
        return f"the {color} {shape}"


class SyntheticLabeller:
    """Labels read by resolving a query of the synthetic grammar against the scene: the
    objects that fit its referent's description, and the centre of its anchor when the
    query has one and it is unique. Empty labels for a query outside the grammar."""

    def __init__(self) -> None:
        self._objects: dict[str, list[SceneObject]] = {}  # converted once per image

    def __call__(self, scene: SceneRecord, query: str) -> QueryLabels:
        try:
            spec = parse_query(query)
        except ValueError:
            return QueryLabels()
        objects = self._scene_objects(scene)
        fits = [float(described(spec).matches(obj)) for obj in objects]
        position = anchor_index(spec)
        matches = resolve(spec, objects) if position is not None else []
        if len(matches) != 1:
            return QueryLabels(fits)
        anchor = next(obj for obj in objects if obj.id == matches[0][position])
        return QueryLabels(fits, to_normalized(list(anchor.box), scene.width, scene.height)[:2])

    def _scene_objects(self, scene: SceneRecord) -> list[SceneObject]:
        if scene.image not in self._objects:
            self._objects[scene.image] = [
                SceneObject.from_dict({"id": o.id, "box": o.box, **o.attributes})
                for o in scene.objects
            ]
        return self._objects[scene.image]
