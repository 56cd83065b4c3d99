"""One synthetic scene, assembled: a layout, the queries found in it, and the painted image.

A layout that cannot carry enough queries is redrawn from the same generator, so a seed
still fixes the result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from sceneloc.data.format import Sample
from sceneloc.data.synth.asking import SceneQuery, ask_all, plan_types
from sceneloc.data.synth.describing import SceneDescriber
from sceneloc.data.synth.domain import DEFAULT_DOMAIN, Domain
from sceneloc.data.synth.draw import compose
from sceneloc.data.synth.english import render_query
from sceneloc.data.synth.layout import Layout, lay_out
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.options import SynthError, check_options
from sceneloc.data.synth.planting import PlantedGroup
from sceneloc.data.synth.sampling import choice
from sceneloc.data.synth.specs import spec_to_dict
from sceneloc.data.synth.vocab import SPLITS

logger = logging.getLogger(__name__)

#: Layouts drawn for one scene before settling for the one with the most queries.
ATTEMPTS = 30
#: The most arrangements planted in one scene (each serves one group query).
MAX_PLANTED = 2


@dataclass
class Scene:
    """One generated image, its objects and its verified queries (and their samples)."""

    image: Image.Image
    objects: list[SceneObject]
    queries: list[SceneQuery]
    split: str
    image_id: str
    image_path: str
    groups: list[PlantedGroup] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        """``image, objects, samples = make_scene(rng)`` for callers that want just those."""
        return iter((self.image, self.objects, self.samples))

    def sample_id(self, index: int) -> str:
        return f"{self.image_id}_{index}"

    def _sample(self, sample_id: str, query: SceneQuery, text: str, kind: str) -> Sample:
        several = query.type in ("multiple", "absent")  # every target box, or none
        return Sample(
            id=sample_id,
            image=self.image_path,
            query=text,
            box=query.box,
            split=self.split,
            boxes=[list(b) for b in query.boxes] if several else None,
            type=kind,
            category=query.category,
            image_id=self.image_id,
        )

    @property
    def samples(self) -> list[Sample]:
        """The queries in the common sample format (``image`` is ``image_path``)."""
        return [
            self._sample(self.sample_id(i), q, q.text, q.type) for i, q in enumerate(self.queries)
        ]

    def descriptions(self) -> list[Sample]:
        """Every description of each query's target (its references), in canonical wording:
        ids ``<query id>_<k>``, ``type`` the description's own (see
        :mod:`~sceneloc.data.synth.describing`)."""
        describer = SceneDescriber(self.objects, self.split)
        return [
            self._sample(f"{self.sample_id(i)}_{k}", q, render_query(spec), spec.type)
            for i, q in enumerate(self.queries)
            for k, spec in enumerate(describer.descriptions(q))
        ]

    def record(self) -> dict[str, Any]:
        """The ``scenes.jsonl`` line: the image, every object, the groups and query specs."""
        return {
            "image": self.image_path,
            "image_id": self.image_id,
            "width": self.image.width,
            "height": self.image.height,
            "split": self.split,
            "objects": [o.to_dict() for o in self.objects],
            "groups": [g.to_dict() for g in self.groups],
            "queries": [
                {
                    "id": self.sample_id(i),
                    "type": q.type,
                    "query": q.text,
                    "spec": spec_to_dict(q.spec),
                    "target": list(q.target),
                    "named": list(q.match),
                }
                for i, q in enumerate(self.queries)
            ],
        }


def make_scene(
    rng: np.random.Generator,
    *,
    size: int = 512,
    min_objects: int = 20,
    max_objects: int = 60,
    queries_per_image: int = 6,
    split: str = "train",
    image_id: str = "000000",
    image_path: str | None = None,
    domain: Domain = DEFAULT_DOMAIN,
) -> Scene:
    """Generate one scene in memory; the same generator state gives the same scene.

    ``split`` decides which colour-shape pairs queries may name (``compositional``: targets
    are held-out pairs; any other split: held-out pairs are never named); ``domain`` which
    colours, shapes, query types, ground and object scale it draws. Raises
    :class:`SynthError` for impossible settings.
    """
    check_options(size, min_objects, max_objects, queries_per_image, domain.size_base(size))
    if split not in SPLITS:
        raise SynthError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    domain.check(size, compositional=split == "compositional")
    count = int(rng.integers(min_objects, max_objects + 1))
    plan = plan_types(rng, queries_per_image, domain.query_types)
    planted = min(MAX_PLANTED, plan.count("group"))
    arrangements = [choice(rng, domain.arrangements) for _ in range(planted)]
    best: tuple[list[SceneQuery], Layout] | None = None
    for attempt in range(ATTEMPTS):
        layout = lay_out(rng, size, count, arrangements, split, domain)
        if layout is None:
            continue
        queries = ask_all(rng, layout.objects, layout.groups, split, plan, domain.query_types)
        if best is None or len(queries) > len(best[0]):
            best = queries, layout
        if len(queries) == queries_per_image:
            break
        logger.debug("scene %s attempt %d: %d queries", image_id, attempt, len(queries))
    if best is None or not best[0]:
        raise SynthError(
            f"could not lay out {count} objects with a query on a {size} px image; "
            "try a larger size or fewer objects"
        )
    queries, layout = best
    if len(queries) < queries_per_image:
        logger.info("scene %s has %d of %d queries", image_id, len(queries), queries_per_image)
    placed = [(s.x, s.y, s.mask, s.color) for s in layout.shapes]
    image = compose(rng, size, placed, domain.background)
    path = image_path if image_path is not None else f"images/{image_id}.png"
    return Scene(image, layout.objects, queries, split, image_id, path, layout.groups)
