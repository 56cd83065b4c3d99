"""Finding queries in a laid-out scene, each verified to have its referent alone.

A query is kept only when the resolver finds exactly its match
(:func:`~sceneloc.data.synth.resolver.is_unambiguous`) and a same-shape object outside it
is in the scene, so the shape alone never gives the answer away. A multiple query's match
is all its referents; an absent query is kept when the resolver finds no match at all, and
names what the scene has as far as it can (a present target with a missing anchor, a
present target and anchor in another relation), so that the words alone never give the
absence away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sceneloc.boxes import Box, union_box
from sceneloc.data.synth.english import render_query
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.ordering import strict_rank
from sceneloc.data.synth.planting import PlantedGroup
from sceneloc.data.synth.resolver import is_unambiguous, related, resolve
from sceneloc.data.synth.sampling import choice, named_ok, shuffled, target_ok
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
    described,
    target_ids,
)
from sceneloc.data.synth.vocab import (
    COLORS,
    MAX_REFERENTS,
    NUMBERS,
    ORDERS,
    QUERY_TYPES,
    RELATIONS,
    SHAPES,
    SIDES,
    SIZES,
)


@dataclass(frozen=True)
class SceneQuery:
    """A verified query: its spec and text, what it names and the box it refers to (the
    union of a group's; a multiple query's first referent's, ``boxes`` holding each; ``None``
    for an absent query)."""

    spec: QuerySpec
    text: str
    match: Match
    target: Match
    box: Box | None
    category: str
    boxes: tuple[Box, ...] = ()

    @property
    def type(self) -> str:
        return self.spec.type


def verified(
    rng: np.random.Generator, objects: list[SceneObject], spec: QuerySpec, match: Match
) -> SceneQuery | None:
    """The query, if it is unambiguous and a same-shape object outside it is in the scene."""
    targets = target_ids(spec, match)
    shape = objects[targets[0]].shape
    if not any(o.shape == shape and o.id not in match for o in objects):
        return None
    if not is_unambiguous(spec, objects, match):
        return None
    text = render_query(spec, rng)
    if isinstance(spec, MultipleQuery):
        boxes = tuple(objects[i].box for i in targets)
        return SceneQuery(spec, text, match, targets, boxes[0], shape, boxes)
    box = union_box([objects[i].box for i in targets])
    return SceneQuery(spec, text, match, targets, box, shape)


def verified_absent(
    rng: np.random.Generator, objects: list[SceneObject], spec: AbsentQuery
) -> SceneQuery | None:
    """The query, if no reading of it fits the scene."""
    if resolve(spec, objects):
        return None
    return SceneQuery(spec, render_query(spec, rng), (), (), None, described(spec).shape or "shape")


def unique_desc(
    rng: np.random.Generator, obj: SceneObject, objects: Sequence[SceneObject]
) -> Desc | None:
    """The shortest description fitting ``obj`` alone (a random one of the shortest)."""
    tiers = (
        [Desc(obj.shape, obj.color), Desc(obj.shape, size=obj.size)],
        [Desc(obj.shape, obj.color, obj.size)],
    )
    for tier in tiers:
        fits = [d for d in tier if is_unambiguous(AttributeQuery(d), objects, (obj.id,))]
        if fits:
            return choice(rng, fits)
    return None


class Asker:
    """Finds one new query of a given type in a laid-out scene, never the same referent twice."""

    def __init__(
        self,
        rng: np.random.Generator,
        objects: list[SceneObject],
        groups: list[PlantedGroup],
        split: str,
    ) -> None:
        self.rng, self.objects, self.groups, self.split = rng, objects, groups, split
        self.used: set[Match] = set()
        self.used_groups: set[int] = set()
        self.asked_absent: set[AbsentQuery] = set()

    def targets(self, limit: int) -> list[SceneObject]:
        fits = [
            o for o in self.objects if target_ok(o.pair, self.split) and (o.id,) not in self.used
        ]
        return shuffled(self.rng, fits)[:limit]

    def ask(self, kind: str) -> SceneQuery | None:
        query = getattr(self, kind)()
        if query is not None:
            self.used.add(query.target)
        return query

    def attribute(self) -> SceneQuery | None:
        for obj in self.targets(60):
            desc = unique_desc(self.rng, obj, self.objects)
            if desc is not None:
                query = verified(self.rng, self.objects, AttributeQuery(desc), (obj.id,))
                if query is not None:
                    return query
        return None

    def relation(self) -> SceneQuery | None:
        rng, objects = self.rng, self.objects
        for target in self.targets(20):
            anchors = [a for a in objects if named_ok(a.pair, self.split) and a.id != target.id]
            for anchor in shuffled(rng, anchors):
                relations = [r for r in RELATIONS if related(target, anchor, r, strict=True)]
                if not relations:
                    continue
                anchor_desc = unique_desc(rng, anchor, objects)
                if anchor_desc is None:
                    continue
                relation = choice(rng, relations)
                same = sum(1 for o in objects if o.pair == target.pair)
                descs = [Desc(target.shape)] + (
                    [Desc(target.shape, target.color)] if same > 1 else []
                )
                for desc in descs:
                    spec = RelationQuery(desc, relation, anchor_desc)
                    query = verified(rng, objects, spec, (target.id, anchor.id))
                    if query is not None:
                        return query
        return None

    def ordinal(self) -> SceneQuery | None:
        rng, objects = self.rng, self.objects
        for target in self.targets(25):
            for order in shuffled(rng, ORDERS):
                descs = [
                    Desc(target.shape),
                    Desc(color=target.color),
                    Desc(target.shape, target.color),
                ]
                for desc in shuffled(rng, descs):
                    candidates = [o for o in objects if desc.matches(o)]
                    if len(candidates) < 2:
                        continue
                    rank = strict_rank(target, candidates, order)
                    if rank > (1 if order in ("largest", "smallest") else 3):
                        continue
                    if rank > 1 and rank == len(candidates):  # the last: ask from the other end
                        continue
                    query = verified(rng, objects, OrdinalQuery(desc, order, rank), (target.id,))
                    if query is not None:
                        return query
        return None

    def group(self) -> SceneQuery | None:
        for group in self.groups:
            if group.id in self.used_groups:
                continue
            members = [self.objects[i] for i in group.members]
            if not target_ok(members[0].pair, self.split) or not all(
                named_ok(m.pair, self.split) for m in members[1:]
            ):
                continue
            descs = tuple(Desc(m.shape, m.color) for m in members)
            if group.arrangement in ("row", "column"):
                descs = (descs[0],) * len(members)
            spec = GroupQuery(group.arrangement, descs)
            query = verified(self.rng, self.objects, spec, group.members)
            if query is not None:
                self.used_groups.add(group.id)
                return query
        return None

    def multiple(self) -> SceneQuery | None:
        """ "all the red stars" or "the two circles on the left": every referent a target of
        this split, a same-shape object outside them."""
        rng, objects = self.rng, self.objects
        for target in self.targets(20):
            descs = [Desc(target.shape, target.color), Desc(color=target.color),
                     Desc(target.shape, target.color, target.size)]  # fmt: skip
            for desc in shuffled(rng, descs):
                fitting = [o for o in objects if desc.matches(o)]
                if len(fitting) < 2 or not all(target_ok(o.pair, self.split) for o in fitting):
                    continue
                forms = [MultipleQuery(desc)] if len(fitting) <= MAX_REFERENTS else []
                forms += [MultipleQuery(desc, n, side)
                          for n in NUMBERS if n < len(fitting) for side in SIDES]  # fmt: skip
                for spec in shuffled(rng, forms):
                    matches = resolve(spec, objects)
                    if len(matches) != 1 or target.id not in matches[0]:
                        continue
                    if spec.count is not None and len(matches[0]) != spec.count:
                        continue
                    query = verified(rng, objects, spec, matches[0])
                    if query is not None and query.target not in self.used:
                        return query
        return None

    def absent(self) -> SceneQuery | None:
        """A description of nothing here: a missing colour-shape pair (or size), a present
        target placed relative to a missing anchor, or a relation that holds of none."""
        for kind in shuffled(self.rng, (self._missing_pair, self._missing_anchor,
                                        self._false_relation)):  # fmt: skip
            spec = kind()
            if spec is not None and spec not in self.asked_absent:
                query = verified_absent(self.rng, self.objects, spec)
                if query is not None:
                    self.asked_absent.add(spec)
                    return query
        return None

    def _missing(self, ok: Callable[[tuple[str, str], str], bool]) -> list[Desc]:
        """Colour-shape pairs (of the scene's colours and shapes) no object has, ``ok`` to
        name in this split."""
        present = {o.pair for o in self.objects}
        colors = sorted({o.color for o in self.objects}, key=list(COLORS).index)
        shapes = sorted({o.shape for o in self.objects}, key=SHAPES.index)
        return [Desc(s, c) for c in colors for s in shapes
                if (c, s) not in present and ok((c, s), self.split)]  # fmt: skip

    def _missing_pair(self) -> AbsentQuery | None:
        rng = self.rng
        descs = self._missing(target_ok)
        for obj in self.targets(10):  # a present pair in a size it does not come in
            sizes = {o.size for o in self.objects if o.pair == obj.pair}
            descs += [Desc(obj.shape, obj.color, size) for size in SIZES if size not in sizes][:1]
        return AbsentQuery(AttributeQuery(choice(rng, descs))) if descs else None

    def _missing_anchor(self) -> AbsentQuery | None:
        anchors = self._missing(named_ok)
        targets = self.targets(1)
        if not anchors or not targets:
            return None
        target = targets[0]
        desc = choice(self.rng, [Desc(target.shape), Desc(target.shape, target.color)])
        relation = choice(self.rng, RELATIONS)
        return AbsentQuery(RelationQuery(desc, relation, choice(self.rng, anchors)))

    def _false_relation(self) -> AbsentQuery | None:
        rng, objects = self.rng, self.objects
        for target in self.targets(5):
            desc = Desc(target.shape, target.color)
            for anchor in shuffled(rng, objects)[:10]:
                if anchor.pair == target.pair or not named_ok(anchor.pair, self.split):
                    continue
                anchor_desc = unique_desc(rng, anchor, objects)
                if anchor_desc is None:
                    continue
                for relation in shuffled(rng, RELATIONS):
                    spec = RelationQuery(desc, relation, anchor_desc)
                    if not resolve(spec, objects):
                        return AbsentQuery(spec)
        return None


def plan_types(
    rng: np.random.Generator, count: int, types: Sequence[str] = QUERY_TYPES
) -> list[str]:
    """Every type once (in random order) while there is room, then random types."""
    plan = shuffled(rng, types)[:count]
    plan += [choice(rng, types) for _ in range(count - len(plan))]
    return plan


def ask_all(
    rng: np.random.Generator,
    objects: list[SceneObject],
    groups: list[PlantedGroup],
    split: str,
    plan: list[str],
    types: Sequence[str] = QUERY_TYPES,
) -> list[SceneQuery]:
    """One query per planned type; a type this scene cannot carry gives way to the others
    of ``types``."""
    asker = Asker(rng, objects, groups, split)
    queries = []
    for kind in plan:
        for other in [kind, *(t for t in types if t != kind)]:
            query = asker.ask(other)
            if query is not None:
                queries.append(query)
                break
    return queries
