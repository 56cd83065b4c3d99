"""What a query asks, as data: descriptions, the query types and their JSON form.

A spec says nothing about wording (:mod:`~sceneloc.data.synth.english`) or about how it is
read against a scene (:mod:`~sceneloc.data.synth.resolver`); it is the common ground of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sceneloc.data.synth.objects import SceneObject

#: One reading of a query in a scene: object ids, in the order :func:`target_ids` and
#: :func:`anchor_index` describe.
Match = tuple[int, ...]


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


@dataclass(frozen=True)
class MultipleQuery:
    """Several referents: "all the red stars" (``count`` ``None``: every object fitting
    ``desc``) or "the two circles on the left" (the ``count`` nearest the ``side``)."""

    desc: Desc
    count: int | None = None
    side: str | None = None
    type: ClassVar[str] = "multiple"


@dataclass(frozen=True)
class AbsentQuery:
    """A description of nothing in the scene, worded as an attribute or relation query: a
    colour-shape pair the scene lacks, an anchor it lacks, or a relation that holds of no
    object fitting the target's description."""

    spec: AttributeQuery | RelationQuery
    type: ClassVar[str] = "absent"


QuerySpec = AttributeQuery | RelationQuery | OrdinalQuery | GroupQuery | MultipleQuery | AbsentQuery


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
    if isinstance(spec, MultipleQuery):
        return {"type": spec.type, "desc": spec.desc.to_dict(), "count": spec.count,
                "side": spec.side}  # fmt: skip
    if isinstance(spec, AbsentQuery):
        return {"type": spec.type, "spec": spec_to_dict(spec.spec)}
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
    if kind == "multiple":
        return MultipleQuery(Desc(**record["desc"]), record.get("count"), record.get("side"))
    if kind == "absent":
        inner = spec_from_dict(record["spec"])
        if not isinstance(inner, AttributeQuery | RelationQuery):
            raise ValueError(f"an absent query is an attribute or relation one, not {inner.type}")
        return AbsentQuery(inner)
    raise ValueError(f"unknown query type {kind!r}")


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
    if isinstance(spec, MultipleQuery):
        return MultipleQuery(target, spec.count, spec.side)
    if isinstance(spec, AbsentQuery):
        inner = with_target(spec.spec, target)
        assert isinstance(inner, AttributeQuery | RelationQuery)
        return AbsentQuery(inner)
    if spec.arrangement in ("row", "column"):
        return GroupQuery(spec.arrangement, (target,) * len(spec.members))
    return GroupQuery(spec.arrangement, (target, *spec.members[1:]))


def described(spec: QuerySpec) -> Desc:
    """The description the referent fits (:func:`with_target`'s target): "the second star
    from the left" -> star; a relation's target, a group's first member."""
    if isinstance(spec, AttributeQuery | OrdinalQuery | MultipleQuery):
        return spec.desc
    if isinstance(spec, RelationQuery):
        return spec.target
    if isinstance(spec, AbsentQuery):
        return described(spec.spec)
    return spec.members[0]


def anchor_index(spec: QuerySpec) -> int | None:
    """Where a match of ``spec`` holds the thing its referent is placed relative to: a
    relation's anchor, the second of "inside"/"on top of"; ``None`` for others."""
    if isinstance(spec, AbsentQuery):
        return anchor_index(spec.spec)
    if isinstance(spec, RelationQuery) or (
        isinstance(spec, GroupQuery) and spec.arrangement in ("inside", "on top of")
    ):
        return 1
    return None


def target_ids(spec: QuerySpec, match: Match) -> Match:
    """The ids the query refers to: all of a group or a multiple query, none of an absent
    one, the first id of any other match."""
    if isinstance(spec, AbsentQuery):
        return ()
    return match if isinstance(spec, GroupQuery | MultipleQuery) else match[:1]
