"""Scoring one prediction against a sample, and summarising many scores.

Only numbers are kept per sample (best IoU, rank of the first good candidate, target size,
how many targets it has and was given), so evaluating a large file needs memory for a few
floats a sample and nothing more.

Data with several targets or none (gRefCOCO, the synthetic ``multiple`` and ``absent``
queries) is also scored as gRefCOCO scores it, on the prediction's ``targets``: predicted and
true boxes are matched one to one at IoU >= 0.5 and a sample counts for
``precision@f1=1`` when every predicted box is matched and every true one found (a sample
with no target: when nothing is predicted); ``n-acc`` is the share of no-target samples
given no target, ``t-acc`` of the others given at least one. Accuracy, mIoU and recall are
over the samples with a target.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from sceneloc.boxes import Box, area, iou_matrix
from sceneloc.candidates import Candidates
from sceneloc.data.format import Sample
from sceneloc.schema import PredictionRecord, result_record

#: IoU thresholds at which accuracy is reported.
THRESHOLDS = (0.5, 0.75)
#: IoU a candidate needs for recall@k.
RECALL_IOU = 0.5
#: The k of recall@k, reported when the source ranks its candidates.
RECALL_KS = (1, 5, 10)
#: Target size bins by sqrt(box area / image area), i.e. the box side relative to the image's.
SIZE_BINS = (("small", 0.1), ("medium", 0.25), ("large", math.inf))
#: IoU a predicted target needs to match a true one (gRefCOCO's Precision@(F1=1, IoU>=0.5)).
TARGET_IOU = 0.5
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """What a model, a predictions file or a baseline answers for one sample.

    ``candidates`` are ranked best first; ``None`` means the source gave no ranking (a
    predictions file without ``candidates``). ``image_size`` is ``(width, height)`` when the
    predictor saw the image, which spares reading it again for the size breakdown.
    """

    box: Box | None
    score: float | None = None
    candidates: Candidates | None = None
    image_size: tuple[int, int] | None = None
    #: Every box the source says the query refers to; ``None``: it said nothing of them.
    targets: Candidates | None = None

    @property
    def ranked(self) -> np.ndarray:
        """The ``(n, 4)`` boxes recall@k looks at: the candidates, else the box alone."""
        if self.candidates is not None:
            return self.candidates.boxes
        return np.asarray([self.box] if self.box is not None else [], dtype=np.float64)

    @property
    def target_boxes(self) -> np.ndarray:
        """The ``(n, 4)`` boxes the prediction says are targets: ``targets``, else the box."""
        if self.targets is not None:
            return self.targets.boxes
        return np.asarray([self.box] if self.box is not None else [], dtype=np.float64)

    def to_record(self, sample: Sample) -> PredictionRecord:
        """The predictions-file line; floats are kept exact so a re-score gives equal numbers."""
        record = result_record(
            sample.query, self.box, self.score, self.candidates, targets=self.targets, exact=True
        )
        return PredictionRecord(id=sample.id, **dict(record))


#: The prediction of a sample the source said nothing about: IoU 0, never correct.
MISSING = Prediction(box=None)


def best_iou(box: Box | None, targets: Sequence[Box]) -> float:
    """The IoU of ``box`` with the target it overlaps best; 0 for no box."""
    if box is None:
        return 0.0
    return float(iou_matrix([box], targets).max())


def first_hit(
    ranked: Sequence[Box] | np.ndarray, targets: Sequence[Box], threshold: float = RECALL_IOU
) -> float:
    """0-based rank of the first box with IoU >= ``threshold`` with any target; inf if none."""
    if len(ranked) == 0:
        return math.inf
    hits = np.flatnonzero(iou_matrix(ranked, targets).max(axis=1) >= threshold)
    return float(hits[0]) if hits.size else math.inf


def matched_targets(
    predicted: Sequence[Box] | np.ndarray, truth: Sequence[Box], threshold: float = TARGET_IOU
) -> int:
    """How many predicted boxes match true ones one to one at IoU >= ``threshold`` (the most
    such pairs there can be)."""
    if len(predicted) == 0 or len(truth) == 0:
        return 0
    hits = iou_matrix(predicted, truth) >= threshold
    rows, columns = linear_sum_assignment(hits, maximize=True)
    return int(hits[rows, columns].sum())


def perfect_f1(predicted: Sequence[Box] | np.ndarray, truth: Sequence[Box]) -> bool:
    """F1 = 1 at IoU >= 0.5: every predicted box matched and every true one found (nothing
    predicted for a sample with no target)."""
    return len(predicted) == len(truth) and matched_targets(predicted, truth) == len(truth)


def target_summary(
    true_counts: np.ndarray, predicted_counts: np.ndarray, perfect: np.ndarray
) -> dict[str, Any]:
    """``precision@f1=1``, ``n-acc`` and ``t-acc`` of some samples (``None`` where none count)."""
    none = true_counts == 0

    def share(values: np.ndarray) -> float | None:
        return float(np.mean(values)) if values.size else None

    return {
        "precision@f1=1": share(perfect),
        "n-acc": share(predicted_counts[none] == 0),
        "t-acc": share(predicted_counts[~none] > 0),
    }


def size_fraction(box: Box | None, image_size: tuple[int, int] | None) -> float:
    """sqrt(box area / image area): the target's side relative to the image's; nan if unknown."""
    if box is None or not image_size or image_size[0] <= 0 or image_size[1] <= 0:
        return math.nan
    return math.sqrt(float(area(box)) / (image_size[0] * image_size[1]))


def size_bin(fraction: float) -> str:
    """The :data:`SIZE_BINS` name of a size fraction (``unknown`` for nan)."""
    if math.isnan(fraction):
        return UNKNOWN
    return next(name for name, upper in SIZE_BINS if fraction < upper)


def summarize(ious: np.ndarray, hit_ranks: np.ndarray | None = None) -> dict[str, Any]:
    """``n``, accuracy at each threshold, mean IoU and (given ranks) recall@k of some samples."""
    ious = np.asarray(ious, dtype=np.float64)
    n = int(ious.size)
    summary: dict[str, Any] = {"n": n}
    for threshold in THRESHOLDS:
        summary[f"acc@{threshold}"] = float(np.mean(ious >= threshold)) if n else None
    summary["miou"] = float(np.mean(ious)) if n else None
    if hit_ranks is not None:
        hit_ranks = np.asarray(hit_ranks, dtype=np.float64)
        for k in RECALL_KS:
            summary[f"recall@{k}"] = float(np.mean(hit_ranks < k)) if n else None
    return summary


@dataclass
class EvaluationResult:
    """Per-sample numbers of one evaluation and the summaries computed from them.

    ``to_dict()`` is the JSON that ``sceneloc evaluate --json`` prints.
    """

    source: str = ""
    ious: list[float] = field(default_factory=list)
    hit_ranks: list[float] = field(default_factory=list)
    size_fractions: list[float] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    has_candidates: bool = False
    seconds: float = 0.0
    true_counts: list[int] = field(default_factory=list)
    predicted_counts: list[int] = field(default_factory=list)
    perfect: list[bool] = field(default_factory=list)

    def add(self, sample: Sample, prediction: Prediction) -> None:
        """Score one sample and keep only its numbers (IoU and rank nan without a target)."""
        targets = sample.targets
        found = prediction.target_boxes
        self.true_counts.append(len(targets))
        self.predicted_counts.append(len(found))
        self.perfect.append(perfect_f1(found, targets))
        if not targets:
            self.ious.append(math.nan)
            self.hit_ranks.append(math.nan)
        else:
            self.ious.append(best_iou(prediction.box, targets))
            self.hit_ranks.append(first_hit(prediction.ranked, targets))
        self.size_fractions.append(size_fraction(sample.box, prediction.image_size))
        self.types.append(sys.intern(sample.type or UNKNOWN))  # one string per distinct name
        self.splits.append(sys.intern(sample.split))
        self.has_candidates = self.has_candidates or prediction.candidates is not None

    @property
    def n(self) -> int:
        return len(self.ious)

    @property
    def has_recall(self) -> bool:
        """Recall@k is reported when the source ranked its candidates: how often the right
        region is among a propose-and-rank model's first k, whatever the model's top box."""
        return self.has_candidates

    @property
    def has_target_sets(self) -> bool:
        """Whether some sample has several targets or none: the target metrics are shown."""
        return any(count != 1 for count in self.true_counts)

    def summary(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        """``n`` (every sample), accuracy, mIoU and recall@k over those with a target, and
        with :attr:`has_target_sets` the target metrics."""
        ious = np.asarray(self.ious, dtype=np.float64)
        ranks = np.asarray(self.hit_ranks, dtype=np.float64) if self.has_recall else None
        if mask is None:
            mask = np.ones(len(ious), dtype=bool)
        with_target = mask & ~np.isnan(ious)
        summary = summarize(ious[with_target], None if ranks is None else ranks[with_target])
        summary["n"] = int(mask.sum())
        if self.has_target_sets:
            summary.update(
                target_summary(
                    np.asarray(self.true_counts)[mask],
                    np.asarray(self.predicted_counts)[mask],
                    np.asarray(self.perfect, dtype=bool)[mask],
                )
            )
        return summary

    def by(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The summary of each group of samples sharing a key, keys sorted."""
        keys = np.asarray(list(keys), dtype=object)
        return {str(key): self.summary(keys == key) for key in sorted(set(keys.tolist()))}

    def by_type(self) -> dict[str, dict[str, Any]]:
        return self.by(self.types)

    def by_split(self) -> dict[str, dict[str, Any]]:
        return self.by(self.splits)

    def by_size(self) -> dict[str, dict[str, Any]]:
        """Groups by target size bin, smallest first (``unknown`` last, if any)."""
        groups = self.by(size_bin(f) for f in self.size_fractions)
        order = [name for name, _ in SIZE_BINS] + [UNKNOWN]
        return {name: groups[name] for name in order if name in groups}

    @property
    def seconds_per_sample(self) -> float | None:
        return self.seconds / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        """The metrics JSON: overall, ``by_type``, ``by_split`` and ``seconds_per_sample``."""
        return {
            **self.summary(),
            "by_type": self.by_type(),
            "by_split": self.by_split(),
            "seconds_per_sample": self.seconds_per_sample,
        }


def score(pairs: Iterable[tuple[Sample, Prediction]], source: str = "") -> EvaluationResult:
    """Score ``(sample, prediction)`` pairs: the one scoring path of every evaluation."""
    result = EvaluationResult(source=source)
    for sample, prediction in pairs:
        result.add(sample, prediction)
    return result
