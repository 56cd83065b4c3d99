"""What the describer learns to say of each region of a synthetic scene.

A region has many true descriptions; which one the decoder learns matters. A fixed choice
(the same question always gets the same answer) is learnt far faster than a spread over
synonyms and forms, and a short one, of things the image shows plainly, is the most likely
to be said right. So every object of a scene is described by the first of these that picks
it out alone: its colour and shape ("the red star"), with its size ("the small red star"),
then its colour and shape with an extreme ("the leftmost red star", then rightmost,
topmost, bottommost, largest, smallest); every planted group by its arrangement ("three
pink squares in a row", "the red circle inside the blue square"). Captions are in the
grammar's canonical wording (:func:`~sceneloc.data.synth.english.render_query` without a
random generator), checked as :func:`~sceneloc.data.synth.checking.caption_picks_out`
checks a caption.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sceneloc.boxes import Box, union_box
from sceneloc.data.synth.checking import scene_objects, spec_picks_out
from sceneloc.data.synth.english import parse_query, render_query
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.specs import AttributeQuery, Desc, GroupQuery, OrdinalQuery, QuerySpec

#: The extremes tried, in order, when colour, shape and size do not single an object out;
#: left and right first, so that a mirrored scene's caption is the mirrored caption.
EXTREMES = ("left", "right", "top", "bottom", "largest", "smallest")


def object_specs(obj: SceneObject) -> Iterator[QuerySpec]:
    """The descriptions of an object, in the order of preference above."""
    pair = Desc(obj.shape, obj.color)
    yield AttributeQuery(pair)
    yield AttributeQuery(Desc(obj.shape, obj.color, obj.size))
    for order in EXTREMES:
        yield OrdinalQuery(pair, order, 1)


def group_spec(arrangement: str, members: list[SceneObject]) -> GroupQuery:
    """A planted group as the generator asks about it: each member by colour and shape."""
    descs = tuple(Desc(m.shape, m.color) for m in members)
    if arrangement in ("row", "column"):
        descs = (descs[0],) * len(members)
    return GroupQuery(arrangement, descs)


def first_picking_out(
    specs: Iterator[QuerySpec], objects: list[SceneObject], targets: tuple[int, ...]
) -> str | None:
    for spec in specs:
        if spec_picks_out(spec, objects, targets):
            return render_query(spec)
    return None


def canonical_caption(
    record: dict[str, Any], targets: tuple[int, ...], objects: list[SceneObject] | None = None
) -> str | None:
    """The caption the describer learns for the region of ``targets`` in a scene record of
    ``scenes.jsonl``; ``None`` when none of the forms above picks it out."""
    objects = objects if objects is not None else scene_objects(record)
    if len(targets) == 1:
        return first_picking_out(object_specs(objects[targets[0]]), objects, targets)
    arrangement = next(
        (g["arrangement"] for g in record.get("groups", []) if tuple(g["members"]) == targets),
        None,
    )
    if arrangement is None:
        return None
    spec = group_spec(arrangement, [objects[i] for i in targets])
    return first_picking_out(iter([spec]), objects, targets)


def canonical_wording(query: str) -> str:
    """A generated query in the grammar's canonical words ("big" -> "large"); other text
    as it is."""
    try:
        return render_query(parse_query(query))
    except ValueError:
        return query


def scene_regions(record: dict[str, Any]) -> dict[tuple[float, ...], str]:
    """Every region of a scene record with its canonical caption, by box: each object and
    each planted group that a caption picks out (a group's box wins over its container's)."""
    objects = scene_objects(record)
    regions: dict[tuple[float, ...], str] = {}
    for obj in objects:
        caption = canonical_caption(record, (obj.id,), objects)
        if caption is not None:
            regions[tuple(obj.box)] = caption
    for group in record.get("groups", []):
        targets = tuple(group["members"])
        caption = canonical_caption(record, targets, objects)
        box: Box = union_box([objects[i].box for i in targets])
        if caption is not None:
            regions[tuple(box)] = caption
    return regions
