"""Checking a caption exactly: does the resolver map it to its region's objects, and only them?

A describer's caption of a synthetic region is *exact* when it reads as a query of the
synthetic grammar (:func:`~sceneloc.data.synth.english.parse_query`) and that query is true of
the region's objects alone, in the tolerant and the strict reading
(:func:`~sceneloc.data.synth.resolver.is_unambiguous`): the check every generated query
passes. A region is found among a scene's objects by its box: the box of one object, or the
union box of a planted group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sceneloc.boxes import Box, union_box
from sceneloc.data.scenes import SceneRecord
from sceneloc.data.synth.english import parse_query
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.resolver import is_unambiguous, resolve
from sceneloc.data.synth.specs import target_ids as referred_ids

#: How far (pixels) a region's box may be from an object's and still be that object's.
BOX_TOLERANCE = 0.01


def picked_out(caption: str, objects: Sequence[SceneObject]) -> tuple[int, ...] | None:
    """The ids ``caption`` refers to when it reads as a synthetic query with exactly one
    referent (see the module doc), else ``None``. Letter case and a trailing full stop are
    ignored."""
    try:
        spec = parse_query(caption.strip().rstrip("."))
    except ValueError:
        return None
    matches = resolve(spec, objects)
    if len(matches) != 1 or not is_unambiguous(spec, objects, matches[0]):
        return None
    return referred_ids(spec, matches[0])


def caption_picks_out(
    caption: str, objects: Sequence[SceneObject], target_ids: Iterable[int]
) -> bool:
    """Whether ``caption`` refers to exactly the objects ``target_ids``, unambiguously."""
    picked = picked_out(caption, objects)
    return picked is not None and set(picked) == set(target_ids)


def region_targets(
    box: Box, objects: Sequence[SceneObject], groups: Iterable[Sequence[int]] = ()
) -> list[tuple[int, ...]]:
    """Every target whose box is ``box``: an object, a group (its member ids) whose union box
    it is. A container and the pair "X inside it" share one box, so both may be listed."""

    def at_box(members: Sequence[int]) -> bool:
        union = union_box([objects[i].box for i in members])
        return bool(np.allclose(union, box, rtol=0, atol=BOX_TOLERANCE))

    found = [(obj.id,) for obj in objects if at_box([obj.id])]
    return found + [tuple(members) for members in groups if at_box(members)]


@dataclass(frozen=True)
class CheckedScene:
    """A synthetic scene as the exact check needs it: its objects and planted groups."""

    objects: tuple[SceneObject, ...]
    groups: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_record(cls, record: SceneRecord) -> CheckedScene | None:
        """The scene of a ``scenes.jsonl`` line, or ``None`` when its objects are not the
        generator's shapes (each with an id, a shape, a colour and a size)."""
        objects = []
        for obj in record.objects:
            values = [obj.attributes.get(k) for k in ("shape", "color", "size")]
            if obj.id is None or None in values:
                return None
            objects.append(SceneObject(obj.id, *values, box=tuple(obj.box)))  # type: ignore[arg-type]
        return cls(tuple(objects), record.groups)

    def is_exact(self, caption: str, box: Box) -> bool:
        """Whether ``caption`` picks out the region ``box`` (one of its targets) alone;
        ``ValueError`` when ``box`` is no object's or group's."""
        targets = region_targets(box, self.objects, self.groups)
        if not targets:
            raise ValueError(f"the region {box} is no object or group of the scene")
        picked = picked_out(caption, self.objects)
        return picked is not None and any(set(picked) == set(t) for t in targets)
