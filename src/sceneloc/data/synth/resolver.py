"""Resolving a spec against a scene's objects: every reading of it, tolerant or strict.

The generator keeps a query only when :func:`resolve` finds exactly one match in both its
tolerant and its strict reading (:func:`is_unambiguous`), and the tests re-resolve every
query from its text and ``scenes.jsonl`` the same way: one referent is checked, not assumed.

All geometry uses tight box centres in pixels; an object's *extent* is its larger box side.

- relation "A left of B": A's centre lies left of B's within 30 degrees of the horizontal,
  A's box ends where B's begins or before, and the gap is at most 2.5 extents of the larger
  of the two. Tolerant reading: any centre left of B's within 50 degrees and a gap of at most
  4 extents. "right of", "above" and "below" are the same turned. The anchor must be unique:
  when its description fits several objects the relation says nothing and every object
  fitting the target description matches, once per anchor candidate.
- ordinal: see :mod:`~sceneloc.data.synth.ordering`.
- multiple "all the red stars": every object fitting the description, one match of all of
  them; "the two circles on the left": the circles whose every possible rank from the left is
  at most two, and, when some circle's rank straddles two, a second reading with it.
- absent: read as the attribute or relation query it is worded as (no match, when well-posed).
- group "inside": the box within the container's box (tolerant: the centre within it and a
  smaller extent); "on top of": horizontally aligned within 0.15 of the larger extent and the
  gap between one's bottom and the other's top in [0, 0.25] of the smaller extent (tolerant:
  0.5 and [-0.3, 0.5]); "row"/"column": collinear centres within 0.15 of the mean extent and
  neighbours 1 to 2 extents apart (tolerant: 0.4, and 0.7 to 2.6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.ordering import order_key, possible_ranks, ranked
from sceneloc.data.synth.specs import (
    AbsentQuery,
    AttributeQuery,
    Match,
    MultipleQuery,
    OrdinalQuery,
    QuerySpec,
    RelationQuery,
)

STRICT_CONE, LOOSE_CONE = math.tan(math.radians(30)), math.tan(math.radians(50))
STRICT_REACH, LOOSE_REACH = 2.5, 4.0


def related(target: SceneObject, anchor: SceneObject, relation: str, strict: bool = False) -> bool:
    """Whether ``target`` is ``relation`` (e.g. "left of") ``anchor``; see the module doc."""
    if target.id == anchor.id:
        return False
    (tx, ty), (ax, ay) = target.center, anchor.center
    t, a = target.box, anchor.box
    along, across, gap = {
        "left of": (ax - tx, ty - ay, a[0] - t[2]),
        "right of": (tx - ax, ty - ay, t[0] - a[2]),
        "above": (ay - ty, tx - ax, a[1] - t[3]),
        "below": (ty - ay, tx - ax, t[1] - a[3]),
    }[relation]
    cone, reach = (STRICT_CONE, STRICT_REACH) if strict else (LOOSE_CONE, LOOSE_REACH)
    if along <= 0 or abs(across) > cone * along:
        return False
    if gap > reach * max(target.extent, anchor.extent):
        return False
    return gap >= 0 or not strict


def inside(inner: SceneObject, outer: SceneObject, strict: bool = False) -> bool:
    if inner.id == outer.id:
        return False
    i, o = inner.box, outer.box
    if strict:
        return o[0] <= i[0] and o[1] <= i[1] and i[2] <= o[2] and i[3] <= o[3]
    cx, cy = inner.center
    return o[0] <= cx <= o[2] and o[1] <= cy <= o[3] and inner.extent < outer.extent


def on_top(upper: SceneObject, lower: SceneObject, strict: bool = False) -> bool:
    if upper.id == lower.id or upper.center[1] >= lower.center[1]:
        return False
    big, small = max(upper.extent, lower.extent), min(upper.extent, lower.extent)
    dx = abs(upper.center[0] - lower.center[0])
    gap = lower.box[1] - upper.box[3]
    if strict:
        return dx <= 0.15 * big and 0 <= gap <= 0.25 * small
    return dx <= 0.5 * big and -0.3 * small <= gap <= 0.5 * small


def in_line(objects: Sequence[SceneObject], arrangement: str, strict: bool = False) -> bool:
    """Collinear, evenly enough spaced neighbours (``objects`` sorted along the line)."""
    axis = 0 if arrangement == "row" else 1
    ext = float(np.mean([o.extent for o in objects]))
    along = np.array([o.center[axis] for o in objects])
    across = np.array([o.center[1 - axis] for o in objects])
    low, high, dev = (1.0, 2.0, 0.15) if strict else (0.7, 2.6, 0.4)
    steps = np.diff(along)
    return bool(
        np.all(steps >= low * ext)
        and np.all(steps <= high * ext)
        and np.abs(across - across.mean()).max() <= dev * ext
    )


def resolve(spec: QuerySpec, objects: Sequence[SceneObject], strict: bool = False) -> list[Match]:
    """Every reading of ``spec`` in the scene, as tuples of object ids.

    Attribute and ordinal matches are ``(target,)``; relation matches ``(target, anchor)``;
    group matches the member ids in the order named (a row left to right, a column top to
    bottom); a multiple query's match its referents' ids in increasing order. A well-posed
    query has exactly one match (an absent one none); see
    :func:`~sceneloc.data.synth.specs.target_ids`.
    """
    if isinstance(spec, AbsentQuery):
        return resolve(spec.spec, objects, strict)
    if isinstance(spec, MultipleQuery):
        return _multiple(spec, objects, strict)
    if isinstance(spec, AttributeQuery):
        return [(o.id,) for o in objects if spec.desc.matches(o)]
    if isinstance(spec, RelationQuery):
        anchors = [o for o in objects if spec.anchor.matches(o)]
        targets = [o for o in objects if spec.target.matches(o)]
        if len(anchors) > 1:  # an ambiguous anchor: the relation narrows nothing down
            return [(t.id, a.id) for a in anchors for t in targets if t.id != a.id]
        return [
            (t.id, a.id) for a in anchors for t in targets if related(t, a, spec.relation, strict)
        ]
    if isinstance(spec, OrdinalQuery):
        candidates = [o for o in objects if spec.desc.matches(o)]
        return [(o.id,) for o in ranked(candidates, spec.order, spec.rank, strict)]
    members = [[o for o in objects if m.matches(o)] for m in spec.members]
    if spec.arrangement == "inside":
        return [(a.id, b.id) for a in members[0] for b in members[1] if inside(a, b, strict)]
    if spec.arrangement == "on top of":
        return [(a.id, b.id) for a in members[0] for b in members[1] if on_top(a, b, strict)]
    along = order_key("left" if spec.arrangement == "row" else "top")
    line = sorted(members[0], key=lambda o: (along(o), o.id))
    return [
        tuple(o.id for o in group)
        for group in combinations(line, len(spec.members))
        if in_line(group, spec.arrangement, strict)
    ]


def _multiple(spec: MultipleQuery, objects: Sequence[SceneObject], strict: bool) -> list[Match]:
    fitting = [o for o in objects if spec.desc.matches(o)]
    if spec.count is None:
        return [tuple(sorted(o.id for o in fitting))] if fitting else []
    if spec.side is None:  # "the two red stars": true only when there are exactly two
        return [tuple(sorted(o.id for o in fitting))] if len(fitting) == spec.count else []
    if len(fitting) < spec.count:
        return []
    ranks = possible_ranks(fitting, spec.side, strict)
    surely = tuple(sorted(o.id for o, r in zip(fitting, ranks) if r.stop - 1 <= spec.count))
    maybe = tuple(sorted(o.id for o, r in zip(fitting, ranks) if r.start <= spec.count))
    return list(dict.fromkeys(m for m in (surely, maybe) if m))


def is_unambiguous(spec: QuerySpec, objects: Sequence[SceneObject], match: Match) -> bool:
    """True when ``match`` is the only tolerant reading and also a strict one."""
    return resolve(spec, objects) == [match] and match in resolve(spec, objects, strict=True)
