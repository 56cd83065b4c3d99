"""Metrics on hand-computed cases: thresholds, missing predictions, multi-box targets, recall."""

from __future__ import annotations

import json
import math

import pytest

from sceneloc.candidates import Candidates
from sceneloc.data.format import Sample
from sceneloc.errors import DataFormatError
from sceneloc.evaluation import (
    Prediction,
    best_iou,
    evaluate_predictions,
    first_hit,
    group_samples,
    read_predictions,
    score,
)
from sceneloc.evaluation.metrics import size_bin, size_fraction


def sample(id_, box, boxes=None, type_=None, split="test", image="a.png", category=None):
    return Sample(id=str(id_), image=image, query=f"query {id_}", box=box, split=split,
                  boxes=boxes, type=type_, category=category)  # fmt: skip


def ranked(*boxes):
    return Candidates(boxes, [1.0 - 0.1 * i for i in range(len(boxes))], [""] * len(boxes))


def test_iou_exactly_half_is_correct_at_half_only():
    # [0,0,2,1] vs [0,0,1,1]: intersection 1, union 2, IoU exactly 0.5 in floating point.
    result = score([(sample(1, [0.0, 0.0, 1.0, 1.0]), Prediction([0.0, 0.0, 2.0, 1.0]))])
    metrics = result.to_dict()
    assert result.ious == [0.5]
    assert metrics["acc@0.5"] == 1.0
    assert metrics["acc@0.75"] == 0.0
    assert metrics["miou"] == 0.5


def test_threshold_075_boundary():
    target = [0.0, 0.0, 4.0, 1.0]
    pairs = [
        (sample(1, target), Prediction([0.0, 0.0, 3.0, 1.0])),  # 3/4 = 0.75 exactly
        (sample(2, target), Prediction([0.0, 0.0, 2.5, 1.0])),  # 2.5/4 = 0.625
    ]
    metrics = score(pairs).to_dict()
    assert metrics["acc@0.75"] == 0.5
    assert metrics["acc@0.5"] == 1.0
    assert metrics["miou"] == pytest.approx((0.75 + 0.625) / 2)


def test_null_and_missing_predictions_are_iou_zero_and_wrong():
    samples = [sample(1, [0.0, 0.0, 1.0, 1.0]), sample(2, [0.0, 0.0, 1.0, 1.0]),
               sample(3, [5.0, 5.0, 7.0, 7.0])]  # fmt: skip
    predictions = {
        "1": Prediction(None),  # null box
        "3": Prediction([5.0, 5.0, 7.0, 7.0]),  # exact; sample 2 has no prediction at all
    }
    result = evaluate_predictions(samples, predictions)
    assert result.ious == [0.0, 0.0, 1.0]
    metrics = result.to_dict()
    assert metrics["n"] == 3
    assert metrics["acc@0.5"] == pytest.approx(1 / 3)
    assert metrics["miou"] == pytest.approx(1 / 3)


def test_multi_box_target_matches_any_box():
    parts = [[0.0, 0.0, 1.0, 1.0], [10.0, 10.0, 12.0, 12.0]]
    union = [0.0, 0.0, 12.0, 12.0]
    multi = sample(1, union, boxes=parts)
    assert best_iou([10.0, 10.0, 12.0, 12.0], multi.targets) == 1.0
    assert best_iou(union, multi.targets) == pytest.approx(4 / 144)  # the bigger part's share
    metrics = score([(multi, Prediction([10.0, 10.0, 12.0, 12.0]))]).to_dict()
    assert metrics["acc@0.75"] == 1.0 and metrics["miou"] == 1.0


def test_mean_iou_is_the_mean_of_best_ious():
    target = [0.0, 0.0, 4.0, 1.0]
    predictions = [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 3.0, 1.0], None, [0.0, 0.0, 4.0, 1.0]]
    pairs = [(sample(i, target), Prediction(p)) for i, p in enumerate(predictions)]
    metrics = score(pairs).to_dict()
    assert metrics["miou"] == pytest.approx((0.5 + 0.75 + 0.0 + 1.0) / 4)
    assert metrics["acc@0.5"] == 0.75 and metrics["acc@0.75"] == 0.5


def test_grouping_by_type_and_split():
    target = [0.0, 0.0, 4.0, 1.0]
    hit, half, miss = [0.0, 0.0, 4.0, 1.0], [0.0, 0.0, 2.0, 1.0], None
    rows = [("spatial", "val", hit), ("spatial", "test", miss), ("attribute", "test", half),
            (None, "test", hit)]  # fmt: skip
    pairs = [(sample(i, target, type_=t, split=s), Prediction(p)) for i, (t, s, p) in
             enumerate(rows)]  # fmt: skip
    metrics = score(pairs).to_dict()
    assert list(metrics["by_type"]) == ["attribute", "spatial", "unknown"]
    assert metrics["by_type"]["spatial"] == {"n": 2, "acc@0.5": 0.5, "acc@0.75": 0.5, "miou": 0.5}
    assert metrics["by_type"]["attribute"] == {"n": 1, "acc@0.5": 1.0, "acc@0.75": 0.0,
                                               "miou": 0.5}  # fmt: skip
    assert metrics["by_type"]["unknown"]["n"] == 1
    assert metrics["by_split"]["test"]["n"] == 3
    assert metrics["by_split"]["test"]["acc@0.5"] == pytest.approx(2 / 3)
    assert metrics["by_split"]["test"]["miou"] == pytest.approx(0.5)
    assert metrics["by_split"]["val"] == {"n": 1, "acc@0.5": 1.0, "acc@0.75": 1.0, "miou": 1.0}


def test_recall_at_k_from_ranked_candidates_on_multi_box_data():
    parts = [[0.0, 0.0, 1.0, 1.0], [10.0, 10.0, 12.0, 12.0]]
    target = sample(1, [0.0, 0.0, 12.0, 12.0], boxes=parts)
    far = [50.0, 50.0, 60.0, 60.0]
    pairs = [
        (target, Prediction(far, candidates=ranked(far, far, parts[1]))),  # hit at rank 3
        (target, Prediction(parts[0], candidates=ranked(parts[0]))),  # hit at rank 1
        (target, Prediction(far, candidates=ranked(*[far] * 6, parts[0]))),  # hit at rank 7
        (target, Prediction(far, candidates=ranked(*[far] * 12))),  # never
        (target, Prediction(None)),  # missing: never
    ]
    metrics = score(pairs).to_dict()
    assert metrics["recall@1"] == pytest.approx(1 / 5)
    assert metrics["recall@5"] == pytest.approx(2 / 5)
    assert metrics["recall@10"] == pytest.approx(3 / 5)
    assert metrics["by_split"]["test"]["recall@5"] == pytest.approx(2 / 5)
    assert list(metrics)[:7] == ["n", "acc@0.5", "acc@0.75", "miou",
                                 "recall@1", "recall@5", "recall@10"]  # fmt: skip


def test_recall_on_single_box_data_and_none_without_candidates():
    single = sample(1, [0.0, 0.0, 1.0, 1.0])
    multi = sample(2, [0.0, 0.0, 3.0, 3.0], boxes=[[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    box, far = [0.0, 0.0, 1.0, 1.0], [50.0, 50.0, 60.0, 60.0]
    second = score([(single, Prediction(far, candidates=ranked(far, box)))]).to_dict()
    assert second["acc@0.5"] == 0.0 and second["recall@1"] == 0.0 and second["recall@5"] == 1.0
    without_candidates = score([(multi, Prediction(box))]).to_dict()
    assert not any(key.startswith("recall") for key in without_candidates)


def test_first_hit_rank():
    targets = [[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 12.0]]
    assert first_hit([], targets) == math.inf
    assert first_hit([[5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 1.0]], targets) == 1.0  # IoU 0.5
    assert first_hit([[0.0, 0.0, 2.0, 0.9], [10.0, 10.0, 12.0, 12.0]], targets) == 1.0
    assert first_hit([[0.0, 0.0, 2.0, 0.9]], targets) == math.inf


def test_size_bins_by_relative_side():
    assert size_fraction([0.0, 0.0, 5.0, 5.0], (100, 100)) == pytest.approx(0.05)
    assert size_bin(size_fraction([0.0, 0.0, 5.0, 5.0], (100, 100))) == "small"
    assert size_bin(size_fraction([0.0, 0.0, 20.0, 20.0], (100, 100))) == "medium"
    assert size_bin(size_fraction([0.0, 0.0, 50.0, 50.0], (100, 100))) == "large"
    assert size_bin(size_fraction([0.0, 0.0, 50.0, 50.0], None)) == "unknown"


def test_size_breakdown_groups_samples():
    pairs = [
        (sample(1, [0.0, 0.0, 5.0, 5.0]), Prediction([0.0, 0.0, 5.0, 5.0], image_size=(100, 100))),
        (sample(2, [0.0, 0.0, 60.0, 60.0]), Prediction(None, image_size=(100, 100))),
        (sample(3, [0.0, 0.0, 60.0, 60.0]), Prediction(None)),
    ]
    by_size = score(pairs).by_size()
    assert list(by_size) == ["small", "large", "unknown"]
    assert by_size["small"]["acc@0.5"] == 1.0 and by_size["large"]["acc@0.5"] == 0.0


def test_group_samples_splits_on_image_change_and_batch_size():
    images = ["a", "a", "a", "b", "a", "a"]
    samples = [sample(i, [0.0, 0.0, 1.0, 1.0], image=name) for i, name in enumerate(images)]
    groups = [[s.id for s in group] for group in group_samples(samples, batch_size=2)]
    assert groups == [["0", "1"], ["2"], ["3"], ["4", "5"]]


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line)
                              for line in lines) + "\n")  # fmt: skip
    return path


def test_read_predictions_accepts_candidates_and_null(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [
        {"id": "a", "box": [0, 0, 1, 1], "score": 0.9,
         "candidates": [{"box": [0, 0, 1, 1], "score": 0.9}, {"box": [1, 1, 2, 2]}]},
        {"id": 7, "box": None},
        "",
    ])  # fmt: skip
    predictions = read_predictions(path)
    assert set(predictions) == {"a", "7"}
    assert predictions["a"].ranked.tolist() == [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]]
    assert predictions["7"].box is None and predictions["7"].candidates is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"id": "a", "box": None}, {"id": "a", "box": [0, 0, 1, 1]}],
         "p.jsonl:2: duplicate id 'a' (first on line 1)"),
        ([{"id": "a", "box": [0, 0, 1, 1]}, "{oops"], "p.jsonl:2: not JSON"),
        ([{"box": [0, 0, 1, 1]}], "p.jsonl:1: missing field 'id'"),
        ([{"id": "a", "box": [2, 0, 1, 1]}], "p.jsonl:1: 'box' must be finite"),
        ([{"id": "a", "box": None, "candidates": [{"score": 1}]}], "p.jsonl:1: 'candidates[0]'"),
    ],
)  # fmt: skip
def test_read_predictions_rejects_bad_lines_naming_them(tmp_path, lines, message):
    path = write_lines(tmp_path / "p.jsonl", lines)
    with pytest.raises(DataFormatError) as info:
        read_predictions(path)
    assert message in str(info.value)
