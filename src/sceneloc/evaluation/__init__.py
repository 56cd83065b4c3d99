"""Evaluate a model, a predictions file or a chance baseline on a JSON Lines dataset.

>>> import sceneloc
>>> from sceneloc.evaluation import evaluate_model, write_report
>>> result = evaluate_model("refcoco/val.jsonl", sceneloc.load("grounding-dino-tiny"))
>>> result.to_dict()["acc@0.5"]
>>> write_report(result, "report/")

All three sources are predictors feeding one scoring path (:func:`evaluate`), which streams
the samples and keeps only per-sample numbers. Describers are scored on the data's reference
regions by :func:`evaluate_describer` (BLEU, CIDEr-D, METEOR, exact, roundtrip@0.5).
"""

from sceneloc.evaluation.baselines import (
    BASELINES,
    BaselinePredictor,
    evaluate_baseline,
)
from sceneloc.evaluation.captions import CaptionScorer, caption_scores, tokenize
from sceneloc.evaluation.describing import (
    DescribeResult,
    Region,
    RegionCaption,
    evaluate_describer,
    read_caption_predictions,
    read_regions,
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
from sceneloc.evaluation.report import write_describe_report, write_report
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
    "CaptionScorer",
    "DescribeResult",
    "EvaluationResult",
    "FilePredictor",
    "ModelPredictor",
    "Prediction",
    "Predictor",
    "Region",
    "RegionCaption",
    "best_iou",
    "caption_scores",
    "evaluate",
    "evaluate_baseline",
    "evaluate_describer",
    "evaluate_model",
    "evaluate_predictions",
    "first_hit",
    "group_samples",
    "read_caption_predictions",
    "read_predictions",
    "read_regions",
    "scan",
    "score",
    "summarize",
    "tokenize",
    "write_describe_report",
    "write_report",
]
