"""Box geometry on hand-computed cases, against brute-force definitions, numpy and torch alike."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sceneloc import boxes


def brute_iou(a, b) -> float:
    """IoU by counting the unit cells of a grid that each box covers (integer boxes)."""
    cells_a = set(itertools.product(range(a[0], a[2]), range(a[1], a[3])))
    cells_b = set(itertools.product(range(b[0], b[2]), range(b[1], b[3])))
    union = cells_a | cells_b
    return len(cells_a & cells_b) / len(union) if union else 0.0


def random_integer_boxes(rng: np.random.Generator, n: int, side: int = 12, grow: int = 0):
    """``n`` integer boxes in a ``side`` square; ``grow`` adds to the far corner (no empty box)."""
    corners = rng.integers(0, side, size=(n, 2, 2))
    return np.concatenate([corners.min(axis=1), corners.max(axis=1) + grow], axis=1)


def test_iou_matrix_known_cases():
    a = [[0, 0, 2, 1], [0, 0, 2, 2], [5, 5, 5, 9]]  # the last has no area
    b = [[0, 0, 1, 1], [1, 1, 3, 3], [2, 0, 3, 1]]
    expected = [
        [0.5, 0.0, 0.0],  # half of a inside; touching a corner; touching an edge
        [0.25, 1 / 7, 0.0],
        [0.0, 0.0, 0.0],
    ]
    assert boxes.iou_matrix(a, b) == pytest.approx(np.array(expected))
    assert boxes.iou_matrix(a, b).shape == (3, 3)
    assert boxes.iou_matrix(a, np.zeros((0, 4))).shape == (3, 0)


def test_iou_matrix_equals_counting_cells():
    rng = np.random.default_rng(0)
    a, b = random_integer_boxes(rng, 30), random_integer_boxes(rng, 20)
    expected = np.array([[brute_iou(x, y) for y in b.tolist()] for x in a.tolist()])
    assert boxes.iou_matrix(a, b) == pytest.approx(expected)
    as_tensor = boxes.iou_matrix(torch.tensor(a, dtype=torch.float64), torch.tensor(b))
    assert isinstance(as_tensor, torch.Tensor)
    assert as_tensor.numpy() == pytest.approx(expected)


def test_intersection_over_smaller_box():
    whole, part = [0, 0, 10, 10], [8, 0, 12, 10]  # half of the part lies in the whole
    assert boxes.overlap_matrix([whole], [part], "ios")[0, 0] == pytest.approx(0.5)
    assert boxes.overlap_matrix([whole], [part], "iou")[0, 0] == pytest.approx(20 / 120)
    with pytest.raises(ValueError, match="metric"):
        boxes.overlap_matrix([whole], [part], "dice")


def test_generalized_iou_known_cases():
    a = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [1.0, 0.0, 2.0, 1.0], [3.0, 0.0, 4.0, 1.0], [2, 2, 3, 3]])
    expected = [
        1 / 7 - (9 - 7) / 9,  # overlap 1, union 7, hull [0,0,3,3]
        0.0,  # touching: union 2 fills the hull [0,0,2,1]
        -0.5,  # apart: union 2, hull [0,0,4,1] of area 4
        -7 / 9,  # diagonally apart: union 2, hull of area 9
    ]
    assert boxes.generalized_iou(a, b) == pytest.approx(expected)
    assert boxes.generalized_iou(b, a) == pytest.approx(expected)
    assert boxes.generalized_iou(a, a) == pytest.approx([1.0] * 4)


def test_generalized_iou_keeps_gradients_in_torch():
    predicted = torch.tensor([[0.2, 0.2, 0.6, 0.7]], requires_grad=True)
    target = torch.tensor([[0.3, 0.1, 0.8, 0.6]])
    (1 - boxes.generalized_iou(predicted, target)).sum().backward()
    assert predicted.grad is not None and predicted.grad.abs().sum() > 0


def test_generalized_iou_is_iou_minus_the_hull_left_empty():
    rng = np.random.default_rng(1)
    a, b = random_integer_boxes(rng, 50, grow=1), random_integer_boxes(rng, 50, grow=1)
    iou = np.array([brute_iou(x, y) for x, y in zip(a.tolist(), b.tolist())])
    hull = (np.maximum(a[:, 2:], b[:, 2:]) - np.minimum(a[:, :2], b[:, :2])).prod(axis=1)
    union = (
        boxes.area(a)
        + boxes.area(b)
        - np.array([boxes.intersection_matrix([x], [y])[0, 0] for x, y in zip(a, b)])
    )
    assert boxes.generalized_iou(a, b) == pytest.approx(iou - (hull - union) / hull)


def test_conversions_round_trip():
    xyxy = np.array([[0.0, 0.0, 2.0, 2.0], [0.1, 0.2, 0.5, 0.9]])
    cxcywh = np.array([[1.0, 1.0, 2.0, 2.0], [0.3, 0.55, 0.4, 0.7]])
    assert boxes.xyxy_to_cxcywh(xyxy) == pytest.approx(cxcywh)
    assert boxes.cxcywh_to_xyxy(cxcywh) == pytest.approx(xyxy)
    assert torch.allclose(boxes.cxcywh_to_xyxy(torch.tensor(cxcywh)), torch.tensor(xyxy))
    assert boxes.xyxy_to_xywh(xyxy) == pytest.approx(np.array([[0, 0, 2, 2], [0.1, 0.2, 0.4, 0.7]]))


def test_clip_inside_area_and_union():
    found = [[-10.0, -5.0, 20.0, 30.0], [200.0, 10.0, 260.0, 40.0], [5.0, 5.0, 5.0, 9.0]]
    assert boxes.clip(found, 100, 50).tolist() == [
        [0.0, 0.0, 20.0, 30.0],
        [100.0, 10.0, 100.0, 40.0],
        [5.0, 5.0, 5.0, 9.0],
    ]
    assert boxes.inside(found, 100, 50).tolist() == [True, False, False]
    assert boxes.clip_box(found[0], 100, 50) == [0.0, 0.0, 20.0, 30.0]
    assert boxes.is_inside(found[0], 100, 50) and not boxes.is_inside(found[1], 100, 50)
    assert boxes.area([[0, 0, 2, 3], [4, 4, 2, 2]]).tolist() == [6.0, 0.0]
    assert boxes.union_box([[1, 2, 3, 4], [0, 3, 2, 6]]) == [0.0, 2.0, 3.0, 6.0]


def brute_nms(b: np.ndarray, scores: np.ndarray, threshold: float, labels=None) -> list[int]:
    """The definition: a box survives unless a better surviving box overlaps it too much."""
    kept: list[int] = []
    for i in sorted(range(len(b)), key=lambda i: -scores[i]):
        rivals = [k for k in kept if labels is None or labels[k] == labels[i]]
        if all(brute_iou(b[k].tolist(), b[i].tolist()) <= threshold for k in rivals):
            kept.append(i)
    return kept


def test_nms_known_case():
    found = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # The best (3) overlaps 0 by IoU 90 / 100 and 1 by 81 / 109; 0 and 1 overlap by 90 / 110.
    assert boxes.nms(found, scores, 0.5).tolist() == [3, 2]
    assert boxes.nms(found, scores, 0.8).tolist() == [3, 1, 2]
    assert boxes.nms(found, scores, 0.95).tolist() == [3, 0, 1, 2]
    # Per label, 0 (label a) no longer competes with 3 (label b); 1 (b) still does.
    labels = np.array(["a", "b", "a", "b"])
    assert boxes.nms(found, scores, 0.5, labels).tolist() == [3, 0, 2]
    assert boxes.nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_nms_equals_its_definition(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    found = random_integer_boxes(rng, 40, side=20, grow=1)
    scores = rng.permutation(40) / 40.0
    labels = rng.choice(["x", "y"], 40)
    assert boxes.nms(found, scores, threshold).tolist() == brute_nms(found, scores, threshold)
    assert boxes.nms(found, scores, threshold, labels).tolist() == brute_nms(
        found, scores, threshold, labels
    )
