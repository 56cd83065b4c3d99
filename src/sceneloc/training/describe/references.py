"""What the describer learns to say of each region of a synthetic scene.

A region has many true descriptions; which one the decoder learns matters. A fixed choice
(the same region always gets the same words) is learnt far faster than a spread over
synonyms and forms, and a short one, of things the image shows plainly, is the most likely
to be said right. So every object of a scene is described by the first of these that picks
it out alone: its colour and shape ("the red star"), with its size ("the small red star"),
then its colour and shape with an extreme ("the leftmost red star", then rightmost,
topmost, bottommost, largest, smallest); every planted group by its arrangement ("three
pink squares in a row", "the red circle inside the blue square"). Captions are in the
grammar's canonical wording (:func:`~sceneloc.data.synth.english.render_query` without a
random generator), checked by :func:`~sceneloc.data.synth.checking.caption_picks_out`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sceneloc.boxes import union_box
from sceneloc.data.synth.checking import CheckedScene, caption_picks_out
from sceneloc.data.synth.english import parse_query, render_query
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.specs import AttributeQuery, Desc, GroupQuery, OrdinalQuery, QuerySpec
from sceneloc.data.synth.vocab import ARRANGEMENTS

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


def group_specs(members: Sequence[SceneObject]) -> Iterator[QuerySpec]:
    """A planted group as the generator asks about it, each member by colour and shape, in
    each arrangement (the scene's geometry says which one holds)."""
    descs = tuple(Desc(m.shape, m.color) for m in members)
    for arrangement in ARRANGEMENTS:
        if arrangement in ("row", "column"):
            yield GroupQuery(arrangement, (descs[0],) * len(members))
        elif len(members) == 2:
            yield GroupQuery(arrangement, descs)


def first_picking_out(
    specs: Iterable[QuerySpec], objects: Sequence[SceneObject], targets: Sequence[int]
) -> str | None:
    for spec in specs:
        caption = render_query(spec)
        if caption_picks_out(caption, objects, targets):
            return caption
    return None


def scene_regions(scene: CheckedScene) -> dict[tuple[float, ...], str]:
    """Every region of a scene with its canonical caption, by box: each object and each
    planted group that a caption picks out (a group's box wins over its container's)."""
    objects = scene.objects
    regions: dict[tuple[float, ...], str] = {}
    for obj in objects:
        caption = first_picking_out(object_specs(obj), objects, (obj.id,))
        if caption is not None:
            regions[tuple(obj.box)] = caption
    for members in scene.groups:
        caption = first_picking_out(group_specs([objects[i] for i in members]), objects, members)
        if caption is not None:
            regions[tuple(union_box([objects[i].box for i in members]))] = caption
    return regions


def canonical_wording(query: str) -> str:
    """A generated query in the grammar's canonical words ("big" -> "large"); other text
    as it is."""
    try:
        return render_query(parse_query(query))
    except ValueError:
        return query
