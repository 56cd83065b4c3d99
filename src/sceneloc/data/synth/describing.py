"""Every description of a target the query grammar can form, each verified to pick it out.

A describer's caption is checked by the same resolver that checks queries, so the
references of a region are all the queries that would have found it: the annotated query
and every other one the grammar allows. Each is kept only when
:func:`~sceneloc.data.synth.resolver.is_unambiguous` holds, as for the asked queries; unlike
those, no same-shape distractor is required (a description is good when it is true of its
region alone, however easy the scene).

What "every" means, per type (objects are named by any non-empty combination of their
shape, colour and size, :func:`namings`):

- attribute: each naming of the target;
- relation: each strict relation to each other object the split may name that has a naming of
  its own, the target and the anchor each named every way;
- ordinal: each order, among the objects fitting a naming of the target that has company,
  at the target's strict rank, with the ranks the asker uses (rank 1 only for largest and
  smallest; no "third from the left" for the last of three, which is "the rightmost");
- group (a group target only): the annotated arrangement, a row or column as its one form,
  "inside"/"on top of" with each member named every way.

A region is a box: "the square" and "the star inside the square" share the square's box, so
when both were asked their descriptions are one region's references, each true of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import product

from sceneloc.data.synth.asking import SceneQuery
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.ordering import strict_rank
from sceneloc.data.synth.resolver import is_unambiguous, related
from sceneloc.data.synth.sampling import named_ok
from sceneloc.data.synth.specs import (
    AttributeQuery,
    Desc,
    GroupQuery,
    Match,
    OrdinalQuery,
    QuerySpec,
    RelationQuery,
)
from sceneloc.data.synth.vocab import ORDERS, ORDINALS, RELATIONS


def namings(obj: SceneObject) -> list[Desc]:
    """Every non-empty combination of the object's shape, colour and size, shortest first."""
    fields = [
        (shape, color, size)
        for shape, color, size in product((obj.shape, None), (obj.color, None), (obj.size, None))
        if (shape, color, size) != (None, None, None)
    ]
    fields.sort(key=lambda f: sum(v is not None for v in f))
    return [Desc(shape, color, size) for shape, color, size in fields]


def unique_namings(obj: SceneObject, objects: Sequence[SceneObject]) -> list[Desc]:
    """The namings that fit ``obj`` alone."""
    return [d for d in namings(obj) if is_unambiguous(AttributeQuery(d), objects, (obj.id,))]


def descriptions(query: SceneQuery, objects: Sequence[SceneObject], split: str) -> list[QuerySpec]:
    """Every unambiguous description of the target of ``query`` (see the module doc), in order."""
    found = (
        _group(query, objects)
        if isinstance(query.spec, GroupQuery)
        else _single(objects[query.target[0]], objects, split)
    )
    unique: dict[QuerySpec, None] = {}
    for spec, match in found:
        if is_unambiguous(spec, objects, match):
            unique.setdefault(spec)
    return list(unique)


def _single(
    target: SceneObject, objects: Sequence[SceneObject], split: str
) -> Iterator[tuple[QuerySpec, Match]]:
    own = (target.id,)
    for desc in namings(target):
        yield AttributeQuery(desc), own
    for anchor in objects:
        if anchor.id == target.id or not named_ok(anchor.pair, split):
            continue
        relations = [r for r in RELATIONS if related(target, anchor, r, strict=True)]
        anchor_descs = unique_namings(anchor, objects) if relations else []
        for relation, desc, anchor_desc in product(relations, namings(target), anchor_descs):
            yield RelationQuery(desc, relation, anchor_desc), (target.id, anchor.id)
    for order, desc in product(ORDERS, namings(target)):
        candidates = [o for o in objects if desc.matches(o)]
        if len(candidates) < 2:
            continue
        rank = strict_rank(target, candidates, order)
        top = 1 if order in ("largest", "smallest") else max(ORDINALS)
        if rank <= top and not (rank > 1 and rank == len(candidates)):
            yield OrdinalQuery(desc, order, rank), own


def _group(query: SceneQuery, objects: Sequence[SceneObject]) -> Iterator[tuple[QuerySpec, Match]]:
    spec = query.spec
    assert isinstance(spec, GroupQuery)
    if spec.arrangement in ("row", "column"):
        yield spec, query.match
        return
    first, second = (objects[i] for i in query.match)
    for named in product(namings(first), namings(second)):
        yield GroupQuery(spec.arrangement, named), query.match
