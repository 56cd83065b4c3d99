"""COCO detection annotations as grounding samples: each category name is a query.

One sample per (image, category) pair present in the file: the query and ``category`` are
the category's name, ``boxes`` every instance of it in the image (COCO ``[x, y, w, h]``
turned into ``[x1, y1, x2, y2]``) and ``box`` their union. Crowd annotations
(``iscrowd: 1``) are left out by default and counted: COCO's own evaluation treats them as
regions to ignore, not as objects to find, and their box covers a whole group. Images
without annotations yield nothing (there is no query to ask of them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sceneloc.boxes import Box
from sceneloc.data.convert import (
    ConversionStats,
    group_boxes,
    image_ref,
    load_json,
    log_summary,
    reject,
    require_dir,
    xywh_to_xyxy,
)
from sceneloc.data.format import Sample
from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

CROWD = "crowd annotations"


@dataclass(frozen=True)
class Annotation:
    """The fields of one COCO annotation a converter needs, validated."""

    image_id: int | str
    category_id: int | str
    box: Box
    iscrowd: bool


def _is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def describe(index: int, record: Any, kind: str = "annotation") -> str:
    """``"annotation 3 (id 17)"``: the record's position in its list, and its id if any."""
    if isinstance(record, dict) and _is_id(record.get("id")):
        return f"{kind} {index} (id {record['id']})"
    return f"{kind} {index}"


class CocoIndex:
    """A COCO-style JSON file (``images``, ``annotations``, ``categories``), indexed by id.

    Images and categories are validated on loading; annotations are kept raw and checked
    by :meth:`annotation` when used, so a converter that needs only a few of them (RefCOCO)
    does not reject a file for a record it never reads.
    """

    def __init__(self, path: Path, skip_bad: bool, stats: ConversionStats) -> None:
        self.path = path
        data = load_json(path, "COCO annotations file")
        if not isinstance(data, dict):
            raise DataFormatError(f"{path}: a COCO file must be a JSON object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataFormatError(f"{path}: not a COCO file (no {key!r} list)")
        self.images: dict[int | str, str | None] = {}
        for index, image in enumerate(data["images"]):
            file_name = image.get("file_name") if isinstance(image, dict) else None
            if not isinstance(image, dict) or not _is_id(image.get("id")):
                reject(stats, path, describe(index, image, "image"), "no 'id'", skip_bad)
            elif file_name is not None and (not isinstance(file_name, str) or not file_name):
                problem = "'file_name' must be a non-empty string"
                reject(stats, path, describe(index, image, "image"), problem, skip_bad)
            else:
                self.images[image["id"]] = file_name
        self.categories: dict[int | str, str] = {}
        for index, category in enumerate(data["categories"]):
            name = category.get("name") if isinstance(category, dict) else None
            if not isinstance(category, dict) or not _is_id(category.get("id")):
                reject(stats, path, describe(index, category, "category"), "no 'id'", skip_bad)
            elif not isinstance(name, str) or not name.strip():
                problem = "'name' must be a non-empty string"
                reject(stats, path, describe(index, category, "category"), problem, skip_bad)
            else:
                self.categories[category["id"]] = name
        self.annotations: list[Any] = data["annotations"]

    def annotation(self, record: Any) -> Annotation:
        """Validate one raw annotation; ``ValueError`` says what is wrong with it."""
        if not isinstance(record, dict):
            raise ValueError("an annotation must be a JSON object")
        missing = [key for key in ("image_id", "category_id", "bbox") if key not in record]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        if not _is_id(record["image_id"]) or record["image_id"] not in self.images:
            raise ValueError(f"unknown image_id {record['image_id']!r}")
        if not _is_id(record["category_id"]) or record["category_id"] not in self.categories:
            raise ValueError(f"unknown category_id {record['category_id']!r}")
        iscrowd = record.get("iscrowd", 0)
        if iscrowd not in (0, 1):  # True and False compare equal to 1 and 0
            raise ValueError(f"'iscrowd' must be 0 or 1, got {iscrowd!r}")
        return Annotation(
            image_id=record["image_id"],
            category_id=record["category_id"],
            box=xywh_to_xyxy(record["bbox"]),
            iscrowd=bool(iscrowd),
        )

    def annotations_by_id(self) -> dict[int | str, Any]:
        return {
            record["id"]: record
            for record in self.annotations
            if isinstance(record, dict) and _is_id(record.get("id"))
        }


def default_coco_split(annotations: Path) -> str:
    """``instances_val2017.json`` -> ``val2017``: the split named in COCO's file names."""
    return annotations.stem.removeprefix("instances_") or annotations.stem


def convert_coco(
    annotations: str | Path,
    images: str | Path,
    split: str | None = None,
    *,
    relative_to: str | Path | None = None,
    include_crowd: bool = False,
    skip_bad: bool = False,
    stats: ConversionStats | None = None,
) -> Iterator[Sample]:
    """Stream one sample per category present in each image of a COCO detection file.

    ``split`` defaults to the file's name without ``instances_`` (``val2017``). Image paths
    follow :func:`~sceneloc.data.convert.image_ref` against ``relative_to``. Malformed
    records raise :class:`DataFormatError` naming the file and record, or with ``skip_bad``
    are logged and counted in ``stats``, as are the crowd annotations left out.
    """
    stats = stats if stats is not None else ConversionStats()
    annotations, images = Path(annotations), Path(images)
    relative_to = Path(relative_to) if relative_to is not None else None
    require_dir(images, "image folder")
    split = split or default_coco_split(annotations)
    index = CocoIndex(annotations, skip_bad, stats)
    order = {category_id: rank for rank, category_id in enumerate(index.categories)}

    grouped: dict[int | str, dict[int | str, list[Box]]] = {}
    for position, record in enumerate(index.annotations):
        try:
            annotation = index.annotation(record)
            if index.images[annotation.image_id] is None:
                raise ValueError(f"image {annotation.image_id!r} has no 'file_name'")
        except ValueError as exc:
            reject(stats, annotations, describe(position, record), str(exc), skip_bad)
            continue
        if annotation.iscrowd and not include_crowd:
            stats.skip(CROWD)
            continue
        by_category = grouped.setdefault(annotation.image_id, {})
        by_category.setdefault(annotation.category_id, []).append(annotation.box)

    for image_id, file_name in index.images.items():
        by_category = grouped.get(image_id, {})
        for category_id in sorted(by_category, key=order.__getitem__):
            name = index.categories[category_id]
            box, boxes = group_boxes(by_category[category_id])
            stats.samples += 1
            yield Sample(
                id=f"{image_id}-{category_id}",
                image=image_ref(images / str(file_name), relative_to),
                query=name,
                box=box,
                split=split,
                boxes=boxes,
                category=name,
                image_id=image_id,
            )
    log_summary(str(annotations), stats)
