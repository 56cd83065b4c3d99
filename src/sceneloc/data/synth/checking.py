"""Checking a description of a region of a synthetic scene: does it pick out its target?

A caption picks out its region when the synthetic grammar's parser reads it and the
resolver finds exactly the region's objects, in its tolerant and its strict reading (the
rule the generator keeps its own queries by, :func:`~sceneloc.data.synth.resolver.is_unambiguous`).
A region is known by its box; :func:`region_targets` finds the objects it stands for in the
scene's record of ``scenes.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sceneloc.boxes import union_box
from sceneloc.data.format import read_jsonl
from sceneloc.data.scenes import SCENES_FILE, _key
from sceneloc.data.synth.english import parse_query
from sceneloc.data.synth.objects import SceneObject
from sceneloc.data.synth.resolver import resolve
from sceneloc.data.synth.specs import QuerySpec, target_ids

#: Two boxes are the same region when no side differs by more than this many pixels.
BOX_TOLERANCE = 0.5


class SceneIndex:
    """The raw records of a ``scenes.jsonl`` (with the generator's ``queries`` and
    ``groups``), found by image id or, failing that, by image path."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_path: dict[str, dict[str, Any]] = {}
        for _number, record in read_jsonl(path):
            if record.get("image_id") is not None:
                self.by_id[str(record["image_id"])] = record
            image = Path(record["image"])
            self.by_path[_key(image if image.is_absolute() else path.parent / image)] = record

    @classmethod
    def beside(cls, samples: str | Path) -> SceneIndex | None:
        """The scene file in the samples file's folder, if there is one."""
        path = Path(samples).parent / SCENES_FILE
        return cls(path) if path.is_file() else None

    def find(self, image_id: str | int | None, image: Path) -> dict[str, Any] | None:
        if image_id is not None and str(image_id) in self.by_id:
            return self.by_id[str(image_id)]
        return self.by_path.get(_key(image))


def scene_objects(record: dict[str, Any]) -> list[SceneObject]:
    """The objects of one line of ``scenes.jsonl``, as the resolver reads them."""
    return [SceneObject.from_dict(obj) for obj in record["objects"]]


def same_box(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(float(x) - float(y)) <= BOX_TOLERANCE for x, y in zip(a, b, strict=True))


def region_targets(record: dict[str, Any], box: Sequence[float]) -> tuple[int, ...] | None:
    """The ids of the objects the region ``box`` (pixels) stands for, ``None`` if none.

    The scene's own queries say first (a group's box is the union of its members, and the
    box of "the circle inside the square" is the square's); then its planted groups; then
    the one object with that box.
    """
    objects = {obj["id"]: obj for obj in record["objects"]}
    for query in record.get("queries", []):
        if same_box(union_box([objects[i]["box"] for i in query["target"]]), box):
            return tuple(query["target"])
    for group in record.get("groups", []):
        if same_box(union_box([objects[i]["box"] for i in group["members"]]), box):
            return tuple(group["members"])
    found = [obj["id"] for obj in record["objects"] if same_box(obj["box"], box)]
    return (found[0],) if len(found) == 1 else None


def caption_picks_out(caption: str, objects: Sequence[SceneObject], targets: Sequence[int]) -> bool:
    """Whether ``caption`` describes exactly the objects ``targets`` (ids, a group's in the
    order its description names them: a row left to right) and nothing else: parsed by the
    grammar, true of them and of them alone. Anything the grammar cannot read is False."""
    try:
        spec = parse_query(caption)
    except ValueError:
        return False
    return spec_picks_out(spec, objects, targets)


def spec_picks_out(spec: QuerySpec, objects: Sequence[SceneObject], targets: Sequence[int]) -> bool:
    """:func:`caption_picks_out` for a spec: its one tolerant reading is of ``targets``, and
    a strict reading too (:func:`~sceneloc.data.synth.resolver.is_unambiguous`)."""
    readings = resolve(spec, objects)
    if len(readings) != 1 or target_ids(spec, readings[0]) != tuple(targets):
        return False
    return readings[0] in resolve(spec, objects, strict=True)
