"""Box geometry, the one copy: used by backends, evaluation, the native model and its data.

Boxes are ``[x1, y1, x2, y2]`` (corners) unless a name says ``cxcywh`` (centre and size).
Functions on box arrays take ``(..., 4)`` numpy arrays (or anything ``np.asarray`` reads)
or torch tensors and answer in the same kind, so the native model's losses keep their
gradients while evaluation never needs to import torch. Pixel boxes are in the
(EXIF-oriented) original image.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import numpy as np

Box = list[float]
#: A numpy array or a torch tensor of boxes; functions answer in the kind they are given.
Boxes = TypeVar("Boxes")
#: How much two boxes overlap: intersection over union, or over the smaller box's area
#: (IoS finds a tile's cut-off part of an object inside the whole object).
OverlapMetric = Literal["iou", "ios"]


def _as_boxes(boxes: Any) -> tuple[Any, Any]:
    """``(boxes, namespace)``: a tensor stays a tensor (with ``torch``), else a float array.

    Only an already imported torch can have made a tensor, so numpy users never load it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(boxes, torch.Tensor):
        return boxes, torch
    return np.asarray(boxes, dtype=np.float64), np


def _safe_divide(numerator: Any, denominator: Any, namespace: Any) -> Any:
    """``numerator / denominator``, 0 where the denominator is not positive (empty boxes)."""
    positive = denominator > 0
    return namespace.where(positive, numerator / namespace.where(positive, denominator, 1), 0)


def area(boxes: Boxes) -> Boxes:
    """The area of each box, 0 for an inverted one."""
    boxes, _ = _as_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]).clip(min=0) * (boxes[..., 3] - boxes[..., 1]).clip(min=0)


def cxcywh_to_xyxy(boxes: Boxes) -> Boxes:
    boxes, namespace = _as_boxes(boxes)
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return namespace.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(boxes: Boxes) -> Boxes:
    boxes, namespace = _as_boxes(boxes)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return namespace.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def xyxy_to_xywh(boxes: Boxes) -> Boxes:
    """Corners to COCO's ``[x, y, width, height]`` (top-left corner and size)."""
    boxes, namespace = _as_boxes(boxes)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return namespace.stack([x1, y1, x2 - x1, y2 - y1], -1)


def clip(boxes: Boxes, width: float, height: float) -> Boxes:
    """Boxes cut to the image rectangle ``[0, width] x [0, height]``."""
    boxes, namespace = _as_boxes(boxes)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return namespace.stack(
        [x1.clip(0, width), y1.clip(0, height), x2.clip(0, width), y2.clip(0, height)], -1
    )


def inside(boxes: Boxes, width: float, height: float) -> Boxes:
    """True for each box that overlaps the image with a positive area."""
    boxes, _ = _as_boxes(boxes)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return (x1 < width) & (y1 < height) & (x2 > 0) & (y2 > 0) & (x2 > x1) & (y2 > y1)


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """One box cut to the image rectangle, as a plain list."""
    return clip(np.asarray(box, dtype=np.float64), width, height).tolist()


def is_inside(box: Sequence[float], width: int, height: int) -> bool:
    """True when one box overlaps the image with a positive area."""
    return bool(inside(np.asarray(box, dtype=np.float64), width, height))


def union_box(boxes: Sequence[Sequence[float]]) -> Box:
    """The smallest box containing all the given boxes."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return [*arr[:, :2].min(axis=0).tolist(), *arr[:, 2:].max(axis=0).tolist()]


def _intersection(a: Any, b: Any, namespace: Any) -> Any:
    """Intersection areas of boxes ``a`` and ``b`` of broadcastable shapes."""
    top_left = namespace.maximum(a[..., :2], b[..., :2])
    bottom_right = namespace.minimum(a[..., 2:], b[..., 2:])
    size = (bottom_right - top_left).clip(min=0)
    return size[..., 0] * size[..., 1]


def intersection_matrix(a: Boxes, b: Boxes) -> Boxes:
    """The intersection area of every box of ``a`` with every box of ``b``: ``(n, m)``."""
    a, namespace = _as_boxes(a)
    b, _ = _as_boxes(b)
    return _intersection(a.reshape(-1, 4)[:, None, :], b.reshape(-1, 4)[None, :, :], namespace)


def overlap_matrix(a: Boxes, b: Boxes, metric: OverlapMetric = "iou") -> Boxes:
    """IoU (or IoS) of every box of ``a`` with every box of ``b``: ``(n, m)``, 0 if no area."""
    a, namespace = _as_boxes(a)
    b, _ = _as_boxes(b)
    inter = intersection_matrix(a, b)
    area_a, area_b = area(a.reshape(-1, 4))[:, None], area(b.reshape(-1, 4))[None, :]
    if metric == "iou":
        return _safe_divide(inter, area_a + area_b - inter, namespace)
    if metric == "ios":
        return _safe_divide(inter, namespace.minimum(area_a, area_b), namespace)
    raise ValueError(f"unknown overlap metric {metric!r} (use 'iou' or 'ios')")


def iou_matrix(a: Boxes, b: Boxes) -> Boxes:
    """IoU of every box of ``a`` with every box of ``b``: shape ``(len(a), len(b))``."""
    return overlap_matrix(a, b, "iou")


def generalized_iou(a: Boxes, b: Boxes) -> Boxes:
    """Generalised IoU of paired boxes ``a[i]``, ``b[i]`` (1 if identical, down to -1).

    Unlike IoU it still says how far apart two disjoint boxes are, which a box loss needs.
    """
    a, namespace = _as_boxes(a)
    b, _ = _as_boxes(b)
    inter = _intersection(a, b, namespace)
    union = area(a) + area(b) - inter
    hull = namespace.maximum(a[..., 2:], b[..., 2:]) - namespace.minimum(a[..., :2], b[..., :2])
    hull_area = hull[..., 0] * hull[..., 1]
    return _safe_divide(inter, union, namespace) - _safe_divide(
        hull_area - union, hull_area, namespace
    )


def greedy_groups(
    boxes: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    metric: OverlapMetric = "iou",
    labels: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Greedy grouping behind NMS and box merging: indices of each group, leader first.

    The best-scoring box not yet grouped leads a group of every ungrouped box overlapping
    it by more than ``threshold`` (with the same label, when ``labels`` are given); groups
    come best leader first. NMS keeps the leaders; merging fuses each group into one box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    overlaps = overlap_matrix(boxes[order], boxes[order], metric) > threshold
    np.fill_diagonal(overlaps, True)
    if labels is not None:
        ordered = np.asarray(labels)[order]
        overlaps &= ordered[:, None] == ordered[None, :]
    grouped = np.zeros(len(order), dtype=bool)
    groups = []
    for leader in range(len(order)):
        if grouped[leader]:
            continue
        members = np.flatnonzero(overlaps[leader] & ~grouped)
        grouped[members] = True
        groups.append(order[members])
    return groups


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = 0.5,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Non-maximum suppression: indices of the boxes kept, best first.

    A box is dropped when a better one kept overlaps it by IoU > ``iou_threshold``; with
    ``labels``, only a better box of the same label can drop it.
    """
    groups = greedy_groups(boxes, scores, iou_threshold, "iou", labels)
    return np.asarray([group[0] for group in groups], dtype=np.int64)
