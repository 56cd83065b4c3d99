"""Box arithmetic shared by every backend and by evaluation.

Boxes are ``[x1, y1, x2, y2]`` in float pixels of the (EXIF-oriented) original image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = list[float]


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """Clip a box to the image rectangle."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [
        min(max(x1, 0.0), float(width)),
        min(max(y1, 0.0), float(height)),
        min(max(x2, 0.0), float(width)),
        min(max(y2, 0.0), float(height)),
    ]


def is_inside(box: Sequence[float], width: int, height: int) -> bool:
    """True when the box overlaps the image with a positive area."""
    x1, y1, x2, y2 = box
    return x1 < width and y1 < height and x2 > 0 and y2 > 0 and x2 > x1 and y2 > y1


def area(box: Sequence[float]) -> float:
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes; 0 when either has no area."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = area([ix1, iy1, ix2, iy2])
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def union_box(boxes: Sequence[Sequence[float]]) -> Box:
    """The smallest box containing all the given boxes."""
    arr = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return [
        float(arr[:, 0].min()),
        float(arr[:, 1].min()),
        float(arr[:, 2].max()),
        float(arr[:, 3].max()),
    ]
