"""What every dataset converter shares: counts of what was skipped, the image path rule,
clear errors for missing or malformed input, and box conversions.

Every converter streams :class:`~sceneloc.data.format.Sample` objects and fills in a
:class:`ConversionStats` as it goes, so a caller can write the samples with
:func:`~sceneloc.data.format.write_samples` and then report what was left out and why.

Image paths follow one rule (:func:`image_ref`): relative to ``relative_to`` (the output
file's folder) when the image lies inside that folder, otherwise absolute. Paths with
``..`` are never written, so a file stays valid when its folder is moved as a whole, and
an absolute path stays valid when only the file is moved.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sceneloc.boxes import Box, union_box
from sceneloc.data.format import parse_box, report_bad
from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

#: The skip reason of a record rejected as malformed under ``skip_bad``.
MALFORMED = "malformed records"


@dataclass
class ConversionStats:
    """How many samples a conversion produced and how many records it skipped, by reason."""

    samples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count

    def skipped_summary(self) -> str:
        """``"skipped 3 (phrases without a box: 2, malformed records: 1)"``, or ``""``."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.items())
        return f"skipped {total} ({reasons})"

    def summary(self) -> str:
        """``"12 samples; skipped 3 (phrases without a box: 2, malformed records: 1)"``."""
        skipped = self.skipped_summary()
        return f"{self.samples} samples" + (f"; {skipped}" if skipped else "")


def reject(
    stats: ConversionStats,
    path: Path,
    where: int | str | None,
    problem: str,
    skip_bad: bool,
    reason: str = MALFORMED,
) -> None:
    """Stop on a malformed record, or with ``skip_bad`` log it and count it under ``reason``."""
    report_bad(path, where, problem, skip_bad)
    stats.skip(reason)


def log_summary(name: str, stats: ConversionStats) -> None:
    logger.info("%s: %s", name, stats.summary())


def require_dir(path: Path, what: str) -> Path:
    """The folder, or a clear error naming what it should have held."""
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise DataFormatError(f"{what} {path} {problem}")
    return path


def read_text(path: Path, what: str = "file") -> str:
    """A whole text file, or a clear error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_json(path: Path, what: str = "file") -> Any:
    """A whole JSON file; a file that is not JSON is an error naming the file and line."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None


def image_ref(path: Path, relative_to: Path | None) -> str:
    """The sample's ``image``: relative to ``relative_to`` when inside it, else absolute.

    Paths are made absolute without resolving symlinks, so a linked image folder keeps
    the name the user gave it.
    """
    absolute = Path(os.path.abspath(path))
    if relative_to is not None:
        base = Path(os.path.abspath(relative_to))
        if absolute.is_relative_to(base) and absolute != base:
            return absolute.relative_to(base).as_posix()
    return str(absolute)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def xywh_to_xyxy(value: Any, name: str = "bbox") -> Box:
    """A COCO ``[x, y, width, height]`` box as ``[x1, y1, x2, y2]``; ``ValueError`` if bad."""
    if not isinstance(value, list | tuple) or len(value) != 4 or not all(map(is_number, value)):
        raise ValueError(f"{name!r} must be [x, y, width, height], got {value!r}")
    x, y, width, height = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (x, y, width, height)):
        raise ValueError(f"{name!r} must be finite, got {value!r}")
    if width < 0 or height < 0:
        raise ValueError(f"{name!r} has a negative width or height: {value!r}")
    return parse_box([x, y, x + width, y + height], name)


def group_boxes(boxes: list[Box]) -> tuple[Box, list[Box] | None]:
    """``(box, boxes)`` for a sample: the union, plus every box when there are several."""
    if len(boxes) == 1:
        return boxes[0], None
    return union_box(boxes), boxes
