"""Every description of a target the query grammar can form, each verified to pick it out.

A describer's caption is checked by the same resolver that checks queries, so the
references of a region are all the queries that would have found it: the annotated query
and every other one the grammar allows. Each is kept only when
:func:`~sceneloc.data.synth.resolver.is_unambiguous` holds, as for the asked queries (a
relation is checked once per anchor: named alone, the anchor is read the same whichever of
its namings says it); unlike those, no same-shape distractor is required (a description is
good when it is true of its region alone, however easy the scene).

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
from dataclasses import replace
from itertools import chain, product

from sceneloc.data.synth.asking import SceneQuery
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.ordering import strict_rank
from sceneloc.data.synth.resolver import is_unambiguous, related
from sceneloc.data.synth.sampling import named_ok
from sceneloc.data.synth.specs import (
    AbsentQuery,
    AttributeQuery,
    Desc,
    GroupQuery,
    Match,
    MultipleQuery,
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


class SceneDescriber:
    """Every description of any target of one scene; each object's own namings (the ones
    fitting it alone) are found once and serve every relation that names it."""

    def __init__(self, objects: Sequence[SceneObject], split: str) -> None:
        self.objects, self.split = objects, split
        self._unique: dict[int, list[Desc]] = {}

    def unique_namings(self, obj: SceneObject) -> list[Desc]:
        """The namings that fit ``obj`` alone."""
        if obj.id not in self._unique:
            self._unique[obj.id] = [
                d for d in namings(obj) if self.verified(AttributeQuery(d), (obj.id,))
            ]
        return self._unique[obj.id]

    def verified(self, spec: QuerySpec, match: Match) -> bool:
        return is_unambiguous(spec, self.objects, match)

    def descriptions(self, query: SceneQuery) -> list[QuerySpec]:
        """Every unambiguous description of the target of ``query`` (see the module doc)."""
        if isinstance(query.spec, AbsentQuery):
            return []  # nothing to describe
        if isinstance(query.spec, MultipleQuery):
            found = iter([query.spec])  # verified as asked; its other wordings are not listed
        elif isinstance(query.spec, GroupQuery):
            found = self._group(query)
        else:
            target = self.objects[query.target[0]]
            found = chain(self._attributes(target), self._relations(target),
                          self._ordinals(target))  # fmt: skip
        return list(dict.fromkeys(found))

    def _attributes(self, target: SceneObject) -> Iterator[QuerySpec]:
        return (AttributeQuery(d) for d in self.unique_namings(target))

    def _relations(self, target: SceneObject) -> Iterator[QuerySpec]:
        for anchor in self.objects:
            if anchor.id == target.id or not named_ok(anchor.pair, self.split):
                continue
            relations = [r for r in RELATIONS if related(target, anchor, r, strict=True)]
            anchor_descs = self.unique_namings(anchor) if relations else []
            if not anchor_descs:
                continue
            for relation, desc in product(relations, namings(target)):
                # the anchor named alone, the reading is the same whichever naming says it
                spec = RelationQuery(desc, relation, anchor_descs[0])
                if self.verified(spec, (target.id, anchor.id)):
                    yield from (replace(spec, anchor=a) for a in anchor_descs)

    def _ordinals(self, target: SceneObject) -> Iterator[QuerySpec]:
        fitting = {d: [o for o in self.objects if d.matches(o)] for d in namings(target)}
        for order, (desc, candidates) in product(ORDERS, fitting.items()):
            if len(candidates) < 2:
                continue
            rank = strict_rank(target, candidates, order)
            top = 1 if order in ("largest", "smallest") else max(ORDINALS)
            if rank > top or (rank > 1 and rank == len(candidates)):
                continue
            spec = OrdinalQuery(desc, order, rank)
            if self.verified(spec, (target.id,)):
                yield spec

    def _group(self, query: SceneQuery) -> Iterator[QuerySpec]:
        spec = query.spec
        assert isinstance(spec, GroupQuery)
        if spec.arrangement in ("row", "column"):
            candidates = [spec]
        else:
            first, second = (self.objects[i] for i in query.match)
            candidates = [GroupQuery(spec.arrangement, named)
                          for named in product(namings(first), namings(second))]  # fmt: skip
        return (c for c in candidates if self.verified(c, query.match))
