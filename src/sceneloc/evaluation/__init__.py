"""Evaluate a model, a predictions file or a chance baseline on a JSON Lines dataset.

>>> import sceneloc
>>> from sceneloc.evaluation import evaluate_model, write_report
>>> result = evaluate_model("refcoco/val.jsonl", sceneloc.load("grounding-dino-tiny"))
>>> result.to_dict()["acc@0.5"]
>>> write_report(result, "report/")

All three sources are predictors feeding one scoring path (:func:`evaluate`), which streams
the samples and keeps only per-sample numbers.
"""

from sceneloc.evaluation.baselines import (
    BASELINES,
    BaselinePredictor,
    evaluate_baseline,
)
from sceneloc.evaluation.metrics import (
    RECALL_KS,
    SIZE_BINS,
    THRESHOLDS,
    EvaluationResult,
    Prediction,
    best_iou,
    first_hit,
    score,
    summarize,
)
from sceneloc.evaluation.report import write_report
from sceneloc.evaluation.runner import (
    DEFAULT_BATCH_SIZE,
    FilePredictor,
    ModelPredictor,
    Predictor,
    evaluate,
    evaluate_model,
    evaluate_predictions,
    group_samples,
    read_predictions,
    scan,
)

__all__ = [
    "BASELINES",
    "DEFAULT_BATCH_SIZE",
    "RECALL_KS",
    "SIZE_BINS",
    "THRESHOLDS",
    "BaselinePredictor",
    "EvaluationResult",
    "FilePredictor",
    "ModelPredictor",
    "Prediction",
    "Predictor",
    "best_iou",
    "evaluate",
    "evaluate_baseline",
    "evaluate_model",
    "evaluate_predictions",
    "first_hit",
    "group_samples",
    "read_predictions",
    "scan",
    "score",
    "summarize",
    "write_report",
]
