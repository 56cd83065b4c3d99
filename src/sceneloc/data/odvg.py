"""Open-GroundingDino's ODVG JSON Lines as samples.

Each line is one image (``filename`` relative to the image folder, ``height``, ``width``)
with grounding regions, detection instances, or both (see Open-GroundingDino's
``data_format.md``); boxes are already ``[x1, y1, x2, y2]`` pixels:

* ``grounding``: ``{"caption", "regions": [{"bbox", "phrase"}]}``: one sample per distinct
  phrase. Regions with the same phrase are merged (converters into ODVG write one region
  per box), so ``boxes`` holds all of them and ``box`` their union. A region's ``bbox``
  may itself be a list of boxes, as some ODVG files write.
* ``detection``: ``{"instances": [{"bbox", "label", "category"}]}``: one sample per
  category present, its name as the query, all its instances as ``boxes``. An instance
  without ``category`` is named through ``label_map`` (``{"0": "person", ...}``).

``id`` is ``"<line>-<n>"``, the n-th (0-based) sample of the record on that line.
Records without any region or instance yield nothing and are counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sceneloc.boxes import Box
from sceneloc.data.convert import (
    ConversionStats,
    group_boxes,
    image_ref,
    is_number,
    load_json,
    log_summary,
    reject,
    require_dir,
)
from sceneloc.data.format import Sample, parse_box
from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

EMPTY = "records without boxes"


def load_label_map(path: Path) -> dict[str, str]:
    """Open-GroundingDino's label map, ``{"0": "person", ...}``, keyed by label as text."""
    data = load_json(path, "label map")
    if not isinstance(data, dict) or not all(
        isinstance(name, str) and name.strip() for name in data.values()
    ):
        raise DataFormatError(f"{path}: a label map must be a JSON object of label -> name")
    return {str(label): name for label, name in data.items()}


def _boxes(value: Any, name: str) -> list[Box]:
    """One ``[x1, y1, x2, y2]`` box, or a non-empty list of them."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return [parse_box(v, name) for v in value]
    return [parse_box(value, name)]


def _text(record: dict[str, Any], key: str, what: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} needs a non-empty string {key!r}")
    return value.strip()


def _grounding(grounding: Any) -> dict[str, list[Box]]:
    """Boxes by phrase, in the order phrases first appear."""
    if not isinstance(grounding, dict) or not isinstance(grounding.get("regions"), list):
        raise ValueError("'grounding' must be an object with a 'regions' list")
    by_phrase: dict[str, list[Box]] = {}
    for number, region in enumerate(grounding["regions"]):
        what = f"region {number}"
        if not isinstance(region, dict):
            raise ValueError(f"{what} must be an object")
        phrase = _text(region, "phrase", what)
        by_phrase.setdefault(phrase, []).extend(_boxes(region.get("bbox"), f"{what} bbox"))
    return by_phrase


def _detection(detection: Any, label_map: dict[str, str] | None) -> dict[str, list[Box]]:
    """Boxes by category name, in the order categories first appear."""
    if not isinstance(detection, dict) or not isinstance(detection.get("instances"), list):
        raise ValueError("'detection' must be an object with an 'instances' list")
    by_category: dict[str, list[Box]] = {}
    for number, instance in enumerate(detection["instances"]):
        what = f"instance {number}"
        if not isinstance(instance, dict):
            raise ValueError(f"{what} must be an object")
        if "category" in instance:
            category = _text(instance, "category", what)
        elif label_map is None:
            raise ValueError(f"{what} has no 'category' (a label map can name its 'label')")
        else:
            label = instance.get("label")
            if not is_number(label) and not isinstance(label, str):
                raise ValueError(f"{what} has neither 'category' nor 'label'")
            label = str(label)
            if label not in label_map:
                raise ValueError(f"{what}: label {label} is not in the label map")
            category = label_map[label]
        by_category.setdefault(category, []).extend(_boxes(instance.get("bbox"), f"{what} bbox"))
    return by_category


def _record(
    record: Any, label_map: dict[str, str] | None
) -> tuple[str, list[tuple[str, list[Box], bool]]]:
    """``(filename, [(query, boxes, is_detection)])``; ``ValueError`` when malformed."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    filename = _text(record, "filename", "a record")
    if "grounding" not in record and "detection" not in record:
        raise ValueError("neither 'grounding' nor 'detection'")
    targets: list[tuple[str, list[Box], bool]] = []
    if "grounding" in record:
        targets += [(q, b, False) for q, b in _grounding(record["grounding"]).items()]
    if "detection" in record:
        targets += [(q, b, True) for q, b in _detection(record["detection"], label_map).items()]
    return filename, targets


def convert_odvg(
    path: str | Path,
    images: str | Path,
    split: str | None = None,
    *,
    label_map: str | Path | None = None,
    relative_to: str | Path | None = None,
    skip_bad: bool = False,
    stats: ConversionStats | None = None,
) -> Iterator[Sample]:
    """Stream the samples of the ODVG file at ``path`` (see the module docstring).

    ``split`` defaults to the file's stem. A malformed line raises
    :class:`DataFormatError` naming the file and line, or with ``skip_bad`` is logged and
    counted in ``stats``. Image paths follow :func:`~sceneloc.data.convert.image_ref`
    against ``relative_to``.
    """
    stats = stats if stats is not None else ConversionStats()
    path, images = Path(path), Path(images)
    relative_to = Path(relative_to) if relative_to is not None else None
    split = split or path.stem
    require_dir(images, "image folder")
    labels = load_label_map(Path(label_map)) if label_map is not None else None
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataFormatError(f"ODVG file {path} does not exist") from None
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                filename, targets = _record(json.loads(line), labels)
            except UnicodeDecodeError as exc:
                reject(stats, path, number, f"not UTF-8 text ({exc.reason})", skip_bad)
                continue
            except json.JSONDecodeError as exc:
                reject(stats, path, number, f"not JSON ({exc.msg})", skip_bad)
                continue
            except ValueError as exc:
                reject(stats, path, number, str(exc), skip_bad)
                continue
            if not targets:
                stats.skip(EMPTY)
                continue
            image = image_ref(images / filename, relative_to)
            for index, (query, boxes, is_detection) in enumerate(targets):
                box, several = group_boxes(boxes)
                stats.samples += 1
                yield Sample(
                    id=f"{number}-{index}",
                    image=image,
                    query=query,
                    box=box,
                    split=split,
                    boxes=several,
                    category=query if is_detection else None,
                )
    log_summary(str(path), stats)
