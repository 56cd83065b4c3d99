"""Structured queries over a scene's objects: render them as English, parse them back, resolve.

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
- ordinal "the second star from the left": rank by centre x (y for top/bottom); tolerant
  reading: centres closer than half the median extent may come in either order.
  "the largest red shape": by extent; tolerant: within a factor 1.25 of the largest.
- group "inside": the box within the container's box (tolerant: the centre within it and a
  smaller extent); "on top of": horizontally aligned within 0.15 of the larger extent and the
  gap between one's bottom and the other's top in [0, 0.25] of the smaller extent (tolerant:
  0.5 and [-0.3, 0.5]); "row"/"column": collinear centres within 0.15 of the mean extent and
  neighbours 1 to 2 extents apart (tolerant: 0.4, and 0.7 to 2.6).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from sceneloc.data.synth.vocab import (
    COLORS,
    EXTREMES,
    NUMBERS,
    ORDINALS,
    PLURALS,
    SHAPES,
    SIZE_WORDS,
)

Match = tuple[int, ...]


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape: its attributes, tight (amodal) box, pixel area and visible fraction."""

    id: int
    shape: str
    color: str
    size: str
    box: tuple[float, float, float, float]
    area: int = 0
    visible: float = 1.0

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def extent(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, y2 - y1)

    @property
    def pair(self) -> tuple[str, str]:
        """``(colour, shape)``: the unit the compositional split holds out."""
        return self.color, self.shape

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "box": [float(v) for v in self.box],
            "area": self.area,
            "visible": self.visible,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SceneObject:
        box = tuple(float(v) for v in record["box"])
        if len(box) != 4:
            raise ValueError("an object's 'box' must be [x1, y1, x2, y2]")
        return cls(
            id=int(record["id"]),
            shape=record["shape"],
            color=record["color"],
            size=record["size"],
            box=box,  # type: ignore[arg-type]
            area=int(record.get("area", 0)),
            visible=float(record.get("visible", 1.0)),
        )


@dataclass(frozen=True)
class Desc:
    """A description of one object: any of shape, colour and size (``None``: not said)."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.color is None or obj.color == self.color)
            and (self.size is None or obj.size == self.size)
        )

    def text(self, rng: np.random.Generator | None = None) -> str:
        words = []
        if self.size is not None:
            words.append(pick(SIZE_WORDS[self.size], rng))
        if self.color is not None:
            words.append(self.color)
        words.append(self.shape or "shape")
        return " ".join(words)

    def to_dict(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (("shape", self.shape), ("color", self.color), ("size", self.size))
            if v is not None
        }


@dataclass(frozen=True)
class AttributeQuery:
    """An attribute query ("the small purple star"): attributes alone single it out."""

    desc: Desc
    type: ClassVar[str] = "attribute"


@dataclass(frozen=True)
class RelationQuery:
    """A relation query ("the circle left of the big blue square"): relative to an anchor."""

    target: Desc
    relation: str
    anchor: Desc
    type: ClassVar[str] = "relation"


@dataclass(frozen=True)
class OrdinalQuery:
    """An ordinal query: "the second triangle from the left", "the largest red shape"."""

    desc: Desc
    order: str
    rank: int = 1
    type: ClassVar[str] = "ordinal"


@dataclass(frozen=True)
class GroupQuery:
    """An arrangement of 2 to 4 objects: inside, on top of, in a row, in a column.

    ``members`` lists one description per object in the order named; a row or column repeats
    the one description once per member.
    """

    arrangement: str
    members: tuple[Desc, ...]
    type: ClassVar[str] = "group"


QuerySpec = AttributeQuery | RelationQuery | OrdinalQuery | GroupQuery


def pick(options: Sequence[str], rng: np.random.Generator | None) -> str:
    """The canonical word without a generator, else a random synonym (varied phrasing)."""
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


# --- to and from JSON ----------------------------------------------------------------------


def spec_to_dict(spec: QuerySpec) -> dict[str, Any]:
    """The spec as stored in ``scenes.jsonl`` (``{"type": ..., ...}``)."""
    if isinstance(spec, AttributeQuery):
        return {"type": spec.type, "desc": spec.desc.to_dict()}
    if isinstance(spec, RelationQuery):
        return {
            "type": spec.type,
            "target": spec.target.to_dict(),
            "relation": spec.relation,
            "anchor": spec.anchor.to_dict(),
        }
    if isinstance(spec, OrdinalQuery):
        return {
            "type": spec.type,
            "desc": spec.desc.to_dict(),
            "order": spec.order,
            "rank": spec.rank,
        }
    return {
        "type": spec.type,
        "arrangement": spec.arrangement,
        "members": [m.to_dict() for m in spec.members],
    }


def spec_from_dict(record: dict[str, Any]) -> QuerySpec:
    kind = record.get("type")
    if kind == "attribute":
        return AttributeQuery(Desc(**record["desc"]))
    if kind == "relation":
        return RelationQuery(Desc(**record["target"]), record["relation"], Desc(**record["anchor"]))
    if kind == "ordinal":
        return OrdinalQuery(Desc(**record["desc"]), record["order"], int(record["rank"]))
    if kind == "group":
        return GroupQuery(record["arrangement"], tuple(Desc(**m) for m in record["members"]))
    raise ValueError(f"unknown query type {kind!r}")


# --- English -------------------------------------------------------------------------------

RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below",),
}


def render_query(spec: QuerySpec, rng: np.random.Generator | None = None) -> str:
    """The query in English; ``rng`` varies synonyms ("big"/"large"), :func:`parse_query`
    reads every variant back."""
    if isinstance(spec, AttributeQuery):
        return f"the {spec.desc.text(rng)}"
    if isinstance(spec, RelationQuery):
        relation = pick(RELATION_WORDS[spec.relation], rng)
        return f"the {spec.target.text(rng)} {relation} the {spec.anchor.text(rng)}"
    if isinstance(spec, OrdinalQuery):
        if spec.rank == 1 or spec.order in ("largest", "smallest"):
            return f"the {pick(EXTREMES[spec.order], rng)} {spec.desc.text(rng)}"
        return f"the {ORDINALS[spec.rank]} {spec.desc.text(rng)} from the {spec.order}"
    if spec.arrangement in ("row", "column"):
        first = spec.members[0]
        shape = PLURALS[first.shape] if first.shape else "shapes"
        return f"{NUMBERS[len(spec.members)]} {first.color} {shape} in a {spec.arrangement}"
    first, second = (m.text(rng) for m in spec.members)
    return f"the {first} {spec.arrangement} the {second}"


_SIZE_OF_WORD = {word: size for size, words in SIZE_WORDS.items() for word in words}
_SHAPE_OF_PLURAL = {plural: shape for shape, plural in PLURALS.items()}
_NUMBER_OF_WORD = {word: n for n, word in NUMBERS.items()}
_RANK_OF_WORD = {word: n for n, word in ORDINALS.items()}
_ORDER_OF_WORD = {word: order for order, words in EXTREMES.items() for word in words}
_ROW = re.compile(rf"({'|'.join(NUMBERS.values())}) (\S+) (\S+) in a (row|column)")
_PAIR = re.compile(r"the (.+) (inside|on top of) the (.+)")
_RELATION = re.compile(r"the (.+?) (?:to the )?(left of|right of|above|below) the (.+)")
_NTH = re.compile(rf"the ({'|'.join(ORDINALS.values())}) (.+) from the (left|right|top|bottom)")
_EXTREME = re.compile(rf"the ({'|'.join(_ORDER_OF_WORD)}) (.+)")
_ATTRIBUTE = re.compile(r"the (.+)")


def parse_desc(text: str) -> Desc:
    """``"[size] [colour] shape"``; the shape may be the word "shape" after a size or colour."""
    words = text.split()
    size = _SIZE_OF_WORD.get(words[0]) if words else None
    words = words[1:] if size else words
    color = words[0] if words and words[0] in COLORS else None
    words = words[1:] if color else words
    if len(words) != 1 or (words[0] not in SHAPES and words[0] != "shape"):
        raise ValueError(f"not an object description: {text!r}")
    shape = None if words[0] == "shape" else words[0]
    if shape is None and color is None and size is None:
        raise ValueError(f"'shape' alone describes nothing: {text!r}")
    return Desc(shape=shape, color=color, size=size)


def parse_query(text: str) -> QuerySpec:
    """Read a generated query back into its spec; raises ``ValueError`` on anything else."""
    text = " ".join(text.strip().lower().split())
    if m := _ROW.fullmatch(text):
        count, color, plural, arrangement = m.groups()
        if color not in COLORS or plural not in _SHAPE_OF_PLURAL:
            raise ValueError(f"not a synthetic-scene query: {text!r}")
        member = Desc(shape=_SHAPE_OF_PLURAL[plural], color=color)
        return GroupQuery(arrangement, (member,) * _NUMBER_OF_WORD[count])
    if m := _PAIR.fullmatch(text):
        return GroupQuery(m[2], (parse_desc(m[1]), parse_desc(m[3])))
    if m := _RELATION.fullmatch(text):
        return RelationQuery(parse_desc(m[1]), m[2], parse_desc(m[3]))
    if m := _NTH.fullmatch(text):
        return OrdinalQuery(parse_desc(m[2]), m[3], _RANK_OF_WORD[m[1]])
    if m := _EXTREME.fullmatch(text):
        return OrdinalQuery(parse_desc(m[2]), _ORDER_OF_WORD[m[1]], 1)
    if m := _ATTRIBUTE.fullmatch(text):
        return AttributeQuery(parse_desc(m[1]))
    raise ValueError(f"not a synthetic-scene query: {text!r}")


# --- resolution ----------------------------------------------------------------------------

STRICT_CONE, LOOSE_CONE = math.tan(math.radians(30)), math.tan(math.radians(50))
STRICT_REACH, LOOSE_REACH = 2.5, 4.0
SIZE_TOLERANCE = 1.25


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


def _order_key(order: str) -> Callable[[SceneObject], float]:
    return {
        "left": lambda o: o.center[0],
        "right": lambda o: -o.center[0],
        "top": lambda o: o.center[1],
        "bottom": lambda o: -o.center[1],
        "largest": lambda o: -math.log(max(o.extent, 1e-6)),
        "smallest": lambda o: math.log(max(o.extent, 1e-6)),
    }[order]


def ranked(
    objects: Sequence[SceneObject], order: str, rank: int, strict: bool = False
) -> list[SceneObject]:
    """The objects that can be ``rank``-th (1-based) in ``order``; several when it is unclear.

    An object can be rank r when fewer than r others come clearly before it and at least
    r - 1 others may come before it, "clearly" meaning by more than the tolerance.
    """
    key = _order_key(order)
    if strict:
        tol = 0.0
    elif order in ("largest", "smallest"):
        tol = math.log(SIZE_TOLERANCE)
    else:
        tol = 0.5 * float(np.median([o.extent for o in objects])) if objects else 0.0
    keys = [key(o) for o in objects]
    found = []
    for i, (obj, k) in enumerate(zip(objects, keys)):
        before = sum(1 for j, q in enumerate(keys) if j != i and q < k - tol)
        maybe_before = sum(1 for j, q in enumerate(keys) if j != i and q <= k + tol)
        if before <= rank - 1 <= maybe_before:
            found.append(obj)
    return found


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
    bottom). A well-posed query has exactly one match; see :func:`target_ids`.
    """
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
    axis = 0 if spec.arrangement == "row" else 1
    line = sorted(members[0], key=lambda o: (o.center[axis], o.id))
    return [
        tuple(o.id for o in group)
        for group in combinations(line, len(spec.members))
        if in_line(group, spec.arrangement, strict)
    ]


def with_target(spec: QuerySpec, target: Desc) -> QuerySpec:
    """The same question about another target: "the second star from the left" becomes "the
    second red cross from the left"; a row's every member, a pair's first. Asked with a
    colour-shape pair the scene lacks, it has no answer whatever its form."""
    if isinstance(spec, AttributeQuery):
        return AttributeQuery(target)
    if isinstance(spec, RelationQuery):
        return RelationQuery(target, spec.relation, spec.anchor)
    if isinstance(spec, OrdinalQuery):
        return OrdinalQuery(target, spec.order, spec.rank)
    if spec.arrangement in ("row", "column"):
        return GroupQuery(spec.arrangement, (target,) * len(spec.members))
    return GroupQuery(spec.arrangement, (target, *spec.members[1:]))


def described(spec: QuerySpec) -> Desc:
    """The description the referent fits (:func:`with_target`'s target): "the second star
    from the left" -> star; a relation's target, a group's first member."""
    if isinstance(spec, AttributeQuery | OrdinalQuery):
        return spec.desc
    if isinstance(spec, RelationQuery):
        return spec.target
    return spec.members[0]


def anchor_index(spec: QuerySpec) -> int | None:
    """Where a match of ``spec`` (:func:`resolve`) holds the thing its referent is placed
    relative to: a relation's anchor, the second of "inside"/"on top of"; ``None`` for others."""
    if isinstance(spec, RelationQuery) or (
        isinstance(spec, GroupQuery) and spec.arrangement in ("inside", "on top of")
    ):
        return 1
    return None


def target_ids(spec: QuerySpec, match: Match) -> Match:
    """The ids the query refers to: all of a group, the first id of any other match."""
    return match if isinstance(spec, GroupQuery) else match[:1]


def is_unambiguous(spec: QuerySpec, objects: Sequence[SceneObject], match: Match) -> bool:
    """True when ``match`` is the only tolerant reading and also a strict one."""
    return resolve(spec, objects) == [match] and match in resolve(spec, objects, strict=True)
