"""Every object of every image: the ``scenes.jsonl`` beside a dataset's samples.

Samples name one referent per query; a scene file lists all the objects of each image, so
training can teach the image features every object (its box and attributes) and chance
baselines can pick among them. The synthetic generator writes one; a converted dataset that
lists all its objects can write the same. One line per image::

    {"image": "images/000042.png", "image_id": "000042", "width": W, "height": H,
     "objects": [{"box": [x1, y1, x2, y2], "shape": "circle", "color": "red", ...}, ...]}

``image`` is relative to the file's folder or absolute; boxes are float pixels; an
object's text-valued fields are its attributes. ``groups`` (the generator's planted
arrangements, ``[{"members": [ids], ...}]``) are read when present; other fields (the
generator's ``queries``) are left to whoever wrote them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sceneloc.boxes import Box
from sceneloc.data.format import parse_box, read_jsonl, report_bad
from sceneloc.errors import DataFormatError

#: The scene file's name, beside the samples it describes.
SCENES_FILE = "scenes.jsonl"


@dataclass(frozen=True)
class ObjectRecord:
    """One object of an image: its pixel box, its id when the file gives one, and its
    attributes (every text-valued field: colour, shape, size, a category...)."""

    box: Box
    id: int | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneRecord:
    """One image and all its objects."""

    image: str
    image_id: str | None
    width: int
    height: int
    objects: tuple[ObjectRecord, ...]
    #: Object ids of each group of objects that is a region of its own (a row of stars).
    groups: tuple[tuple[int, ...], ...] = ()

    @property
    def boxes(self) -> np.ndarray:
        """The objects' boxes, ``(k, 4)``."""
        return np.asarray([o.box for o in self.objects], dtype=np.float64).reshape(-1, 4)

    @classmethod
    def from_dict(cls, record: Any) -> SceneRecord:
        """Validate one line; raises ``ValueError`` saying what is wrong with it."""
        if not isinstance(record, dict):
            raise ValueError("a scene must be a JSON object")
        for name in ("image", "width", "height", "objects"):
            if name not in record:
                raise ValueError(f"missing field {name!r}")
        width, height = record["width"], record["height"]
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)
        ):
            raise ValueError("'width' and 'height' must be positive integers")
        if not isinstance(record["objects"], list):
            raise ValueError("'objects' must be a list")
        objects = []
        for index, item in enumerate(record["objects"]):
            if not isinstance(item, dict) or "box" not in item:
                raise ValueError(f"object {index} must be an object with a 'box'")
            box = parse_box(item["box"], f"objects[{index}].box")
            identity = item.get("id")
            attributes = {k: v for k, v in item.items() if isinstance(v, str)}
            objects.append(
                ObjectRecord(box, identity if type(identity) is int else None, attributes)
            )
        image_id = record.get("image_id")
        return cls(str(record["image"]), None if image_id is None else str(image_id), width,
                   height, tuple(objects), _groups(record.get("groups", [])))  # fmt: skip


def _groups(value: Any) -> tuple[tuple[int, ...], ...]:
    if not isinstance(value, list):
        raise ValueError("'groups' must be a list")
    groups = []
    for index, group in enumerate(value):
        members = group.get("members") if isinstance(group, dict) else None
        if not isinstance(members, list) or not all(type(m) is int for m in members):
            raise ValueError(f"group {index} must have 'members', a list of object ids")
        groups.append(tuple(members))
    return tuple(groups)


@dataclass
class Scenes:
    """The scenes of one file, found by ``image_id`` or, for samples without one, by path."""

    by_id: dict[str, SceneRecord] = field(default_factory=dict)
    by_path: dict[str, SceneRecord] = field(default_factory=dict)

    def find(self, image_id: str | int | None, path: Path) -> SceneRecord | None:
        """The scene of the image with this id or at this path; ``None`` if not listed."""
        if image_id is not None and str(image_id) in self.by_id:
            return self.by_id[str(image_id)]
        return self.by_path.get(_key(path))

    def __iter__(self) -> Iterator[SceneRecord]:
        return iter(self.by_path.values())

    def attributes(self) -> dict[str, list[str]]:
        """Each attribute the objects have and all its values, sorted."""
        values: dict[str, set[str]] = {}
        for scene in self:
            for obj in scene.objects:
                for name, value in obj.attributes.items():
                    values.setdefault(name, set()).add(value)
        return {name: sorted(found) for name, found in sorted(values.items())}


def _key(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def read_scenes(path: str | Path) -> Scenes:
    """Read a scene file; a malformed line raises :class:`DataFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"scenes file not found: {path}")
    scenes = Scenes()
    for number, record in read_jsonl(path):
        try:
            scene = SceneRecord.from_dict(record)
        except ValueError as exc:
            report_bad(path, number, str(exc), skip_bad=False)
            continue
        if scene.image_id is not None:
            scenes.by_id[scene.image_id] = scene
        image = Path(scene.image)
        scenes.by_path[_key(image if image.is_absolute() else path.parent / image)] = scene
    return scenes


def scenes_beside(data: str | Path) -> Scenes | None:
    """The scene file in the samples file's folder, if there is one."""
    path = Path(data).parent / SCENES_FILE
    return read_scenes(path) if path.is_file() else None
