"""Tiling's pieces: the tiles cover the image with the asked overlap (as SAHI slices it),
tiles' boxes come back to the image's pixels exactly, and merging joins what SAHI joins."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sahi.postprocess.combine import GreedyNMMPostprocess, greedy_nmm
from sahi.prediction import ObjectPrediction
from sahi.slicing import get_slice_bboxes

from sceneloc.boxes import greedy_groups
from sceneloc.candidates import Candidates
from sceneloc.tiling import context_window, merge, parse_overlap, parse_tiles, tile_windows

SIZES = [(4096, 4096), (1000, 700), (513, 2050), (300, 200), (512, 512), (1537, 1025)]


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize(("side", "overlap"), [(512, 0.2), (256, 0.0), (400, 0.5), (100, 0.9)])
def test_tiles_are_sahis_slices(width, height, side, overlap):
    ours = tile_windows(width, height, side, overlap).tolist()
    assert ours == get_slice_bboxes(height, width, side, side, False, overlap, overlap)


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize(("side", "overlap"), [(512, 0.2), (256, 0.0), (400, 0.5)])
def test_tiles_cover_the_image_with_the_asked_overlap(width, height, side, overlap):
    windows = tile_windows(width, height, side, overlap)
    covered = np.zeros((height, width), dtype=np.int32)
    for x1, y1, x2, y2 in windows:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x2 - x1 == min(side, width) and y2 - y1 == min(side, height)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    # neighbours share at least the asked overlap (the last one, moved back inside, more)
    for axis in (0, 1):
        starts = sorted({int(w[axis]) for w in windows})
        for first, second in itertools.pairwise(starts):
            assert first + min(side, (width, height)[axis]) - second >= int(overlap * side)


def test_an_image_within_one_tile_is_one_tile():
    assert tile_windows(300, 200, 512, 0.2).tolist() == [[0, 0, 300, 200]]


def test_boxes_map_back_exactly():
    windows = tile_windows(1000, 700, 400, 0.25)
    x1, y1 = windows[4][:2].tolist()
    in_tile = Candidates([[10.5, 20.25, 30.0, 40.0]], [0.9], ["a"])
    assert in_tile.offset(float(x1), float(y1)).boxes.tolist() == [
        [x1 + 10.5, y1 + 20.25, x1 + 30.0, y1 + 40.0]
    ]


def test_merge_joins_a_cut_object_and_keeps_others():
    found = Candidates(
        [[100, 100, 160, 140], [100, 100, 200, 140], [400, 400, 420, 420]],
        [0.8, 0.9, 0.7],
        ["a", "a", "a"],
    )
    merged = merge(found, 0.5)
    assert merged.boxes.tolist() == [[100, 100, 200, 140], [400, 400, 420, 420]]
    assert merged.scores.tolist() == [0.9, 0.7]


def test_an_unsure_candidate_never_widens_a_sure_one():
    found = Candidates([[100, 100, 200, 200], [100, 100, 210, 200], [150, 150, 400, 400]],
                       [0.9, 0.2, 0.3], ["a"] * 3)  # fmt: skip
    merged = merge(found, 0.5)
    # the unsure near-duplicate is suppressed (NMS), the unsure other box stays as it was
    assert merged.boxes.tolist() == [[100, 100, 200, 200], [150, 150, 400, 400]]
    assert merged.scores.tolist() == [0.9, 0.3]


def random_boxes(rng, n):
    corners = rng.uniform(0, 900, (n, 2))
    sizes = rng.uniform(10, 200, (n, 2))
    return np.concatenate([corners, corners + sizes], axis=1), rng.uniform(0.5, 1.0, n)


@pytest.mark.parametrize("seed", range(5))
def test_merging_groups_as_sahis_greedy_nmm(seed):
    boxes, scores = random_boxes(np.random.default_rng(seed), 40)
    predictions = np.concatenate([boxes, scores[:, None], np.zeros((40, 1))], axis=1)
    theirs = greedy_nmm(predictions, "IOS", 0.5)
    ours = greedy_groups(boxes, scores, 0.5, "ios")
    assert {int(g[0]): sorted(g[1:].tolist()) for g in ours} == {
        int(k): sorted(int(i) for i in merged) for k, merged in theirs.items()
    }


@pytest.mark.parametrize("seed", range(5))
def test_merged_boxes_are_sahis(seed):
    boxes, scores = random_boxes(np.random.default_rng(seed), 30)
    predictions = [
        ObjectPrediction(bbox=box.tolist(), category_id=0, category_name="a", score=float(score))
        for box, score in zip(boxes, scores)
    ]
    theirs = GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=True)(
        predictions
    )
    ours = merge(Candidates(boxes, scores, ["a"] * 30), 0.5)
    expected = sorted((p.score.value, tuple(p.bbox.to_xyxy())) for p in theirs)
    got = sorted((float(s), tuple(b)) for s, b in zip(ours.scores, ours.boxes.tolist()))
    assert len(got) == len(expected)
    for (score, box), (their_score, their_box) in zip(got, expected):
        assert score == pytest.approx(their_score)
        assert box == pytest.approx(their_box, abs=1e-6)


def test_context_window_centres_the_candidate_inside_the_image():
    assert context_window(np.array([990, 490, 1010, 510]), 512, 4096, 4096) == [744, 244, 1256, 756]
    assert context_window(np.array([0, 0, 20, 20]), 512, 4096, 4096) == [0, 0, 512, 512]
    assert context_window(np.array([4080, 4080, 4096, 4096]), 512, 4096, 4096) == [
        3584,
        3584,
        4096,
        4096,
    ]
    # a large candidate gets a crop several times its size, at most the image
    assert context_window(np.array([100, 100, 400, 400]), 512, 1000, 800) == [0, 0, 1000, 800]


@pytest.mark.parametrize("value", [0, -5, "0", "big", 2.5, True])
def test_bad_tile_sizes_are_refused(value):
    from sceneloc.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError):
        parse_tiles(value)


@pytest.mark.parametrize("value", [-0.1, 1.0, 3])
def test_bad_overlaps_are_refused(value):
    from sceneloc.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError):
        parse_overlap(value)


def test_huge_synthetic_scenes_hold_hundreds_of_small_things():
    from sceneloc.data.synth import SynthError, check_options

    check_options(4096, 400, 800, 6, size_base=512)  # as benchmarks/tiling_huge.py draws them
    check_options(4096, 400, 5000, 6, size_base=512)
    with pytest.raises(SynthError, match="max objects <= 5000"):
        check_options(4096, 400, 5001, 6, size_base=512)
    with pytest.raises(SynthError, match="do not fit"):  # as crowded as ever at its own scale
        check_options(512, 400, 800, 6)
