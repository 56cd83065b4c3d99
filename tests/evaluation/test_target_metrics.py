"""gRefCOCO's metrics on hand-computed cases: Precision@(F1=1, IoU>=0.5), N-acc and T-acc."""

import numpy as np
import pytest

from sceneloc.candidates import Candidates
from sceneloc.data import Sample
from sceneloc.evaluation.metrics import Prediction, matched_targets, perfect_f1, score

A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
NEAR_A = [0, 0, 10, 8]  # IoU 0.8 with A
OFF_A = [0, 0, 10, 4]  # IoU 0.4 with A


def targets(*boxes):
    return Candidates(np.array(boxes).reshape(-1, 4), np.ones(len(boxes)), ["q"] * len(boxes))


def test_one_to_one_matching():
    assert matched_targets([NEAR_A, B], [A, B]) == 2
    assert matched_targets([NEAR_A, A], [A, B]) == 1  # two boxes on A match it once
    assert matched_targets([OFF_A], [A]) == 0
    assert matched_targets([], [A]) == 0
    assert perfect_f1([B, NEAR_A], [A, B])
    assert not perfect_f1([A, B, C], [A, B])  # one too many
    assert not perfect_f1([A], [A, B])  # one missed
    assert perfect_f1([], [])  # nothing there, nothing said
    assert not perfect_f1([A], [])


def test_precision_n_acc_and_t_acc():
    samples = [
        Sample("1", "i.png", "all", A, "t", boxes=[A, B], type="multiple"),
        Sample("2", "i.png", "all", A, "t", boxes=[A, B], type="multiple"),
        Sample("3", "i.png", "none", None, "t", boxes=[], type="absent"),
        Sample("4", "i.png", "none", None, "t", boxes=[], type="absent"),
        Sample("5", "i.png", "one", C, "t", type="attribute"),
    ]
    predictions = [
        Prediction(A, 0.9, targets=targets(NEAR_A, B)),  # F1 = 1
        Prediction(A, 0.9, targets=targets(A)),  # half found: found something, F1 < 1
        Prediction(None, None, targets=targets()),  # refused: right
        Prediction(B, 0.7, targets=targets(B)),  # said something: wrong
        Prediction(OFF_A, 0.6),  # no targets given: its box is its one target, and missed
    ]
    metrics = score(zip(samples, predictions)).to_dict()
    assert metrics["n"] == 5
    assert metrics["precision@f1=1"] == pytest.approx(2 / 5)
    assert metrics["n-acc"] == pytest.approx(1 / 2)
    assert metrics["t-acc"] == pytest.approx(3 / 3)
    assert metrics["acc@0.5"] == pytest.approx(2 / 3)  # over the samples with a target
    absent = metrics["by_type"]["absent"]
    assert absent["n"] == 2 and absent["acc@0.5"] is None and absent["t-acc"] is None


def test_single_target_data_reports_as_before():
    metrics = score([(Sample("1", "i.png", "q", A, "t"), Prediction(A, 1.0))]).to_dict()
    assert "precision@f1=1" not in metrics and metrics["acc@0.5"] == 1.0 and metrics["n"] == 1
