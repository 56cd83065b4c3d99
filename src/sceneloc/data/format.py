"""The one sample format every dataset is converted to: JSON Lines, one referring query a line.

``{"id", "image", "query", "box": [x1, y1, x2, y2], "split"}`` plus optional ``"boxes"``
(every target box; ``[]`` and ``"box": null`` when the query describes nothing in the image),
``"type"``, ``"category"`` and ``"image_id"``. ``box`` is the one box a single-answer
grounder is scored against: the referent's, or for several targets the first (the converters
of phrase datasets write their union, the region the phrase covers). A file without
``boxes`` has one target, ``box``. ``image`` is relative to the file's folder or absolute;
boxes are float pixels.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sceneloc.boxes import Box
from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

REQUIRED = ("id", "image", "query", "box", "split")
OPTIONAL = ("boxes", "type", "category", "image_id")


@dataclass(frozen=True)
class Sample:
    """One referring query on one image, with its target box (or boxes, or none)."""

    id: str
    image: str
    query: str
    box: Box | None
    split: str
    boxes: list[Box] | None = None
    type: str | None = None
    category: str | None = None
    image_id: str | int | None = None

    @property
    def targets(self) -> list[Box]:
        """Every target box: ``boxes`` when given, else ``box`` (none when it is ``None``)."""
        if self.boxes is not None:
            return self.boxes
        return [] if self.box is None else [self.box]

    @property
    def has_target(self) -> bool:
        """Whether the query describes something in the image."""
        return bool(self.targets)

    def image_path(self, root: Path) -> Path:
        """The image's path, resolving a relative ``image`` against ``root`` (the file's folder)."""
        path = Path(self.image)
        return path if path.is_absolute() else root / path

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {name: getattr(self, name) for name in REQUIRED}
        record.update({name: getattr(self, name) for name in OPTIONAL if getattr(self, name)})
        if self.boxes == []:
            record["boxes"] = []
        return record

    @classmethod
    def from_dict(cls, record: Any) -> Sample:
        """Validate one record; raises ``ValueError`` saying what is wrong with it."""
        if not isinstance(record, dict):
            raise ValueError("a sample must be a JSON object")
        missing = [name for name in REQUIRED if name not in record]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        for name in ("image", "query", "split"):
            if not isinstance(record[name], str) or not record[name].strip():
                raise ValueError(f"{name!r} must be a non-empty string")
        boxes = record.get("boxes")
        if boxes is not None:
            if not isinstance(boxes, list):
                raise ValueError("'boxes' must be a list of boxes")
            boxes = [parse_box(b, "boxes") for b in boxes]
        if record["box"] is None:
            if boxes:
                raise ValueError("'box' is null but 'boxes' lists targets")
            boxes = []
        elif boxes == []:
            raise ValueError("'boxes' is empty (no target) but 'box' is given")
        return cls(
            id=str(record["id"]),
            image=record["image"],
            query=record["query"],
            box=None if record["box"] is None else parse_box(record["box"], "box"),
            split=record["split"],
            boxes=boxes,
            type=record.get("type"),
            category=record.get("category"),
            image_id=record.get("image_id"),
        )


def parse_box(value: Any, name: str = "box") -> Box:
    """``[x1, y1, x2, y2]`` as floats, finite, with ``x1 <= x2`` and ``y1 <= y2``."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ValueError(f"{name!r} must be [x1, y1, x2, y2]")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name!r} must hold four numbers")
    box = [float(v) for v in value]
    if not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"{name!r} must be finite with x1 <= x2 and y1 <= y2, got {value}")
    return box


def read_jsonl(path: Path, skip_bad: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` for each non-blank line, streamed.

    A line that is not JSON raises :class:`DataFormatError` naming the file and line, or
    with ``skip_bad`` is logged and skipped.
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                report_bad(path, number, f"not JSON ({exc.msg})", skip_bad)


def report_bad(path: Path, where: int | str | None, problem: str, skip_bad: bool) -> None:
    """Stop on a malformed record, or log it when the user asked to skip bad records.

    ``where`` is a line number (written ``file:line:``), a description of the record
    (``file: annotation 3 (id 17):``) or ``None`` when the whole file is bad.
    """
    if where is None:
        location = str(path)
    else:
        location = f"{path}:{where}" if isinstance(where, int) else f"{path}: {where}"
    message = f"{location}: {problem}"
    if not skip_bad:
        raise DataFormatError(message)
    logger.warning("skipped %s", message)


def read_samples(path: str | Path, skip_bad: bool = False) -> Iterator[Sample]:
    """Stream the samples of a JSON Lines file (see the module docstring)."""
    path = Path(path)
    for number, record in read_jsonl(path, skip_bad):
        try:
            yield Sample.from_dict(record)
        except ValueError as exc:
            report_bad(path, number, str(exc), skip_bad)


def write_samples(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as JSON Lines; returns how many were written.

    Writes through a ``.partial`` file renamed at the end, so a conversion that fails half
    way leaves no truncated output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps(sample.to_dict()) + "\n")
                count += 1
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return count
