"""A query's candidates as arrays: selecting, suppressing, merging tiles, moving, exporting."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from sceneloc import Candidate, Candidates, SceneLocError
from sceneloc.masks import decode_rle


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


# --- masks ---------------------------------------------------------------------------------------


@pytest.fixture
def segmented() -> Candidates:
    """Three candidates on a 12 x 8 image, each mask the pixels of its own box."""
    boxes = [[0, 0, 4, 4], [2, 0, 6, 4], [8, 4, 12, 8]]
    masks = np.zeros((3, 8, 12), dtype=bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[y1:y2, x1:x2] = True
    return Candidates(boxes, [0.6, 0.9, 0.3], ["cat", "cat", "dog"], masks)


def mask_extents(found: Candidates) -> list[list[float]]:
    """Each mask's extent as a box, to tell whose mask it is."""
    return [
        [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        for ys, xs in (np.nonzero(mask) for mask in found.masks)
    ]


def test_masks_follow_every_selection(segmented):
    for selected in (
        segmented.sorted(),
        segmented.top_k(2),
        segmented.with_min_score(0.5),
        segmented[[2, 0]],
        segmented[segmented.labels == "cat"],
        segmented.nms(0.3),
        segmented.inside(8, 8),
        Candidates.from_list(list(segmented)),
    ):
        assert selected.masks.shape == (len(selected), 8, 12)
        assert mask_extents(selected) == selected.boxes.tolist()
    assert mask_extents(segmented.top_k(2)) == [[2, 0, 6, 4], [0, 0, 4, 4]]
    assert np.array_equal(segmented[1].mask, segmented.masks[1])
    # Clipping boxes to an image leaves the masks, already that image's, as they are.
    assert np.array_equal(segmented.clipped(10, 8).masks, segmented.masks)
    assert Candidates.empty().masks is None and segmented[0:0].masks.shape == (0, 8, 12)
    with pytest.raises(ValueError, match="one per candidate"):
        Candidates([[0, 0, 1, 1]], [0.5], ["a"], np.zeros((2, 4, 4), bool))


def test_merging_overlaps_unites_their_masks(segmented):
    merged = segmented.merge_overlapping(0.3, metric="iou")
    assert merged.boxes.tolist() == [[0, 0, 6, 4], [8, 4, 12, 8]]
    assert mask_extents(merged) == merged.boxes.tolist()
    assert merged.masks[0].sum() == 6 * 4


def test_offset_places_tile_masks_into_the_image_or_drops_them(segmented):
    placed = segmented.offset(20, 10, image_size=(40, 30))
    assert placed.masks.shape == (3, 30, 40)
    assert mask_extents(placed) == placed.boxes.tolist() == [
        [20, 10, 24, 14], [22, 10, 26, 14], [28, 14, 32, 18],
    ]  # fmt: skip
    assert segmented.offset(20, 10).masks is None
    with pytest.raises(ValueError, match="whole pixels"):
        segmented.offset(0.5, 0, image_size=(40, 30))


def test_concatenate_keeps_masks_only_when_every_part_has_them(segmented):
    boxes_only = Candidates([[1, 1, 2, 2]], [0.5], ["bird"])
    joined = Candidates.concatenate([segmented, Candidates.empty(), segmented[:1]])
    assert joined.masks.shape == (4, 8, 12)
    assert mask_extents(joined) == joined.boxes.tolist()
    assert Candidates.concatenate([segmented, boxes_only]).masks is None
    assert len(Candidates.concatenate([segmented, boxes_only])) == 4


def test_masked_crop_is_the_cut_out(segmented, found):
    image = Image.new("RGB", (12, 8), (10, 200, 30))
    cut = segmented.crop(image, 1, masked=True)
    assert cut.mode == "RGBA" and cut.size == (4, 4)
    assert set(cut.getdata()) == {(10, 200, 30, 255)}
    # A mask smaller than its box: transparent outside it.
    hole = Candidates([[0, 0, 4, 4]], [0.5], ["ring"], np.ones((1, 8, 12), bool))
    hole.masks[0, 1:3, 1:3] = False
    alpha = np.asarray(hole.crop(image, 0, masked=True))[..., 3]
    assert alpha.tolist() == [[255] * 4, [255, 0, 0, 255], [255, 0, 0, 255], [255] * 4]
    assert segmented.crop(image, 1).mode == "RGB"
    with pytest.raises(SceneLocError, match="boxes only"):
        found.crop(image, 0, masked=True)


@pytest.mark.filterwarnings("ignore:OpenCV")
def test_to_coco_and_supervision_carry_the_masks(segmented):
    records = segmented.to_coco(image_id=1, category_id=2)
    for record, mask in zip(records, segmented.masks):
        assert record["segmentation"]["size"] == [8, 12]
        assert np.array_equal(decode_rle(record["segmentation"]), mask)
    supervision = pytest.importorskip("supervision")
    detections = segmented.to_supervision()
    assert isinstance(detections, supervision.Detections)
    assert np.array_equal(detections.mask, segmented.masks)
