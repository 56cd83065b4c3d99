"""Synthetic dense-scene grounding data: coloured shapes on textured ground, one referent per query
(opt-in: several, or none; the ``multiple`` and ``absent`` query types).

Usable in memory (:func:`make_scene`, e.g. inside a training loop) or on disk (:func:`generate`,
behind ``sceneloc data synth``). Each scene has 20 to 60 shapes by default; each query is
resolved against the scene's objects by :func:`resolve`, the same logic the tests use, and kept
only when it has exactly one referent and a same-shape distractor.

On disk: ``images/NNNNNN.png``, ``annotations.jsonl`` (:class:`~sceneloc.data.Sample` lines),
``descriptions.jsonl`` (samples too: every description of each annotated target that picks it
out, the references a describer is scored against; :mod:`~sceneloc.data.synth.describing`)
and ``scenes.jsonl``, one line per image::

    {"image": "images/000042.png", "image_id": "000042", "width": W, "height": H,
     "split": "train", "objects": [{"id": 0, "shape": "circle", "color": "red",
     "size": "small", "box": [x1, y1, x2, y2], "area": 310, "visible": 0.93}, ...],
     "groups": [{"id": 0, "arrangement": "row", "members": [3, 4, 5]}],
     "queries": [{"id": "000042_0", "type": "relation", "query": "...", "spec": {...},
                  "target": [7], "named": [7, 12]}]}

Boxes are tight float pixel boxes of each whole (amodal) shape; every shape keeps most of its
pixels visible (:data:`~sceneloc.data.synth.canvas.MIN_VISIBLE`). Held-out colour-shape pairs
(:data:`HELD_OUT`) are never named in train/val/test queries and are the target of every
compositional query.

One job per module. Queries: ``specs`` (what a query asks), ``english`` (its wording, both
ways), ``ordering`` and ``resolver`` (what it means in a scene of ``objects``). Scenes:
``vocab`` (the words), ``options`` (the limits), ``sampling`` (random draws), ``canvas``
(placing with bounded occlusion), ``planting`` (arrangements for group queries), ``layout``
(a full canvas), ``asking`` (verified queries), ``describing`` (every description of a
target), ``domain`` (the colours, shapes, query types, ground and object scale a dataset
draws), ``draw`` (pixels), ``scene`` (one scene assembled) and ``generate`` (a dataset on
disk).
"""

from sceneloc.data.synth.asking import SceneQuery
from sceneloc.data.synth.domain import BACKGROUNDS, DEFAULT_DOMAIN, Domain, make_domain
from sceneloc.data.synth.english import parse_query, render_query
from sceneloc.data.synth.generate import (
    DEFAULT_SPLITS,
    SynthStats,
    generate,
    parse_splits,
    split_counts,
)
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.options import SynthError, check_options
from sceneloc.data.synth.planting import PlantedGroup
from sceneloc.data.synth.resolver import is_unambiguous, resolve
from sceneloc.data.synth.scene import Scene, make_scene
from sceneloc.data.synth.specs import (
    AbsentQuery,
    AttributeQuery,
    Desc,
    GroupQuery,
    MultipleQuery,
    OrdinalQuery,
    QuerySpec,
    RelationQuery,
    anchor_index,
    described,
    spec_from_dict,
    spec_to_dict,
    target_ids,
    with_target,
)
from sceneloc.data.synth.vocab import (
    ALL_QUERY_TYPES,
    COLORS,
    HELD_OUT,
    QUERY_TYPES,
    SHAPES,
    SIZES,
    SPLITS,
)

__all__ = [
    "ALL_QUERY_TYPES",
    "BACKGROUNDS",
    "COLORS",
    "DEFAULT_DOMAIN",
    "DEFAULT_SPLITS",
    "HELD_OUT",
    "QUERY_TYPES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "AbsentQuery",
    "AttributeQuery",
    "Desc",
    "Domain",
    "GroupQuery",
    "MultipleQuery",
    "OrdinalQuery",
    "PlantedGroup",
    "QuerySpec",
    "RelationQuery",
    "Scene",
    "SceneObject",
    "SceneQuery",
    "SynthError",
    "SynthStats",
    "anchor_index",
    "check_options",
    "described",
    "generate",
    "is_unambiguous",
    "make_domain",
    "make_scene",
    "parse_query",
    "parse_splits",
    "render_query",
    "resolve",
    "spec_from_dict",
    "spec_to_dict",
    "split_counts",
    "target_ids",
    "with_target",
]
