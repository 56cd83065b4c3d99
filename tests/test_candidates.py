"""A query's candidates as arrays: selecting, suppressing, merging tiles, moving, exporting."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from sceneloc import Candidate, Candidates, SceneLocError


@pytest.fixture
def found() -> Candidates:
    return Candidates(
        boxes=[[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 40], [0, 0, 10, 9]],
        scores=[0.9, 0.8, 0.7, 0.95],
        labels=["cat", "dog", "cat", "dog"],
    )


def test_arrays_and_views(found):
    assert found.boxes.shape == (4, 4) and found.boxes.dtype == np.float64
    assert len(found) == 4
    assert found[2] == Candidate([20.0, 20.0, 30.0, 40.0], 0.7, "cat")
    assert [c.label for c in found] == ["cat", "dog", "cat", "dog"]
    assert found.area.tolist() == [100.0, 100.0, 200.0, 90.0]
    with pytest.raises(ValueError, match="one of each"):
        Candidates([[0, 0, 1, 1]], [0.5, 0.6], ["a"])


def test_filter_by_score_mask_and_index(found):
    assert found.with_min_score(0.8).scores.tolist() == [0.9, 0.8, 0.95]
    assert found[found.labels == "cat"].scores.tolist() == [0.9, 0.7]
    assert found[[3, 0]].labels.tolist() == ["dog", "cat"]
    assert found[1:3].scores.tolist() == [0.8, 0.7]
    assert len(found.with_min_score(1.0)) == 0


def test_sort_and_top_k(found):
    assert found.sorted().scores.tolist() == [0.95, 0.9, 0.8, 0.7]
    assert found.top_k(2).labels.tolist() == ["dog", "cat"]
    ties = Candidates([[0, 0, 1, 1]] * 3, [0.5, 0.9, 0.5], ["first", "best", "second"])
    assert ties.sorted().labels.tolist() == ["best", "first", "second"]


def test_nms_class_agnostic_and_per_label(found):
    # The best box [0,0,10,9] overlaps [0,0,10,10] by IoU 0.9 and [1,0,11,10] by 81 / 109.
    assert found.nms(0.5).scores.tolist() == [0.95, 0.7]
    assert found.nms(0.5, per_label=True).scores.tolist() == [0.95, 0.9, 0.7]


def test_concatenate_and_offset_join_tiles():
    left = Candidates([[10, 10, 20, 20]], [0.6], ["cat"])
    right = Candidates([[0, 5, 8, 15], [30, 30, 40, 40]], [0.9, 0.2], ["cat", "cat"])
    joined = Candidates.concatenate([left, right.offset(100, 50)])
    assert joined.boxes.tolist() == [[10, 10, 20, 20], [100, 55, 108, 65], [130, 80, 140, 90]]
    assert joined.scores.tolist() == [0.6, 0.9, 0.2]
    assert len(Candidates.concatenate([])) == 0


def test_merge_overlapping_fuses_an_object_cut_by_a_tile_edge():
    # One object [40, 10, 80, 30] seen whole by one tile and cut at x = 60 by the next,
    # plus an unrelated box; intersection over the smaller box links the cut part to the whole.
    tiles = Candidates(
        [[40, 10, 80, 30], [55, 12, 90, 28], [200, 200, 220, 220]],
        [0.7, 0.9, 0.5],
        ["car", "car", "car"],
    )
    merged = tiles.merge_overlapping(0.5, metric="ios")
    assert merged.boxes.tolist() == [[40, 10, 90, 30], [200, 200, 220, 220]]
    assert merged.scores.tolist() == [0.9, 0.5]
    # By IoU (400 / 960) the two parts are not the same object at 0.5.
    assert len(tiles.merge_overlapping(0.5, metric="iou")) == 3
    other = Candidates.concatenate([tiles, Candidates([[41, 10, 80, 30]], [0.95], ["bus"])])
    assert len(other.merge_overlapping(0.5, per_label=True)) == 3
    assert other.merge_overlapping(0.5).labels.tolist() == ["bus", "car"]


def test_clipped_and_inside():
    found = Candidates([[-10, -5, 20, 30], [200, 10, 260, 40]], [0.5, 0.9], ["a", "b"])
    assert found.inside(100, 50).labels.tolist() == ["a"]
    assert found.clipped(100, 50).boxes.tolist() == [[0, 0, 20, 30], [100, 10, 100, 40]]


def test_crop_of_any_candidate(found):
    image = Image.new("RGB", (64, 48))
    image.paste((255, 0, 0), (20, 20, 30, 40))
    crop = found.crop(image, 2)
    assert crop.size == (10, 20)
    assert set(crop.getdata()) == {(255, 0, 0)}
    assert found.crop(image, 0).size == (10, 10)


def test_to_coco(found):
    records = found[[2, 3]].to_coco(image_id=7, category_id=3)
    assert records == [
        {"image_id": 7, "category_id": 3, "bbox": [20.0, 20.0, 10.0, 20.0], "score": 0.7},
        {"image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 10.0, 9.0], "score": 0.95},
    ]


@pytest.mark.filterwarnings("ignore:OpenCV")
def test_to_supervision(found):
    supervision = pytest.importorskip("supervision")
    detections = found.to_supervision()
    assert isinstance(detections, supervision.Detections)
    assert detections.xyxy.tolist() == found.boxes.tolist()
    assert detections.confidence.tolist() == found.scores.tolist()
    assert detections.data["class_name"].tolist() == ["cat", "dog", "cat", "dog"]
    kept = detections.with_nms(threshold=0.5, class_agnostic=True)
    assert sorted(kept.confidence.tolist()) == sorted(found.nms(0.5).scores.tolist())


def test_to_supervision_without_the_package_says_how_to_get_it(found, monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # makes ``import supervision`` fail
    with pytest.raises(SceneLocError, match=r"sceneloc\[supervision\]"):
        found.to_supervision()


def test_tensors_on_any_device_become_float_arrays():
    torch = pytest.importorskip("torch")
    found = Candidates.of(torch.tensor([[1, 2, 3, 4]], dtype=torch.float16), torch.ones(1), "x")
    assert found.boxes.dtype == np.float64 and found.boxes.tolist() == [[1, 2, 3, 4]]
    assert found.labels.tolist() == ["x"]
