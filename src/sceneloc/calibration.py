"""Calibrated "not there" for every backend: a model's score mapped to the probability that
the referent is in the image, so that one threshold (0.5) means the same on any model.

A pretrained backend's default threshold is a number from its model card, tuned on other
images; on a user's own, ``found`` says little. :func:`fit_calibration` asks the model the
validation queries (present) and absent ones, chosen as the native model's presence
calibration chooses them (:func:`~sceneloc.training.native.queries.calibration_sampler`):
the data's own no-target queries, or for data with none as many whose referent is certainly
absent (a colour-shape pair missing from a synthetic scene, another image's query
otherwise), and fits Platt scaling,
``p = sigmoid(slope * logit(score) + intercept)``, the two classes weighted equally (the
same weighted logistic regression,
:func:`~sceneloc.training.native.calibration.fit_presence`), so that 0.5 balances the two
kinds of error. A monotone map keeps every query's order of candidates; Platt rather than
isotonic regression because the latter's steps would tie candidates the model told apart.

The fit is saved as ``calibration.json`` (:class:`Calibration`): in a model directory that
:func:`sceneloc.load` then serves calibrated, or beside a hub model (``calibration=FILE``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sceneloc.candidates import Candidates
from sceneloc.errors import CalibrationError, InvalidOptionError
from sceneloc.registry import Capability

if TYPE_CHECKING:
    from sceneloc.api import Grounder
    from sceneloc.backends.base import Backend

logger = logging.getLogger(__name__)

#: The file a calibrated model directory holds, and ``sceneloc calibrate`` writes.
CALIBRATION_FILE = "calibration.json"
REPORT_FILES = ("report.json", "report.md")
FORMAT = "sceneloc-calibration"
VERSION = 1
#: A calibrated score's default threshold: the two kinds of error weigh the same there.
THRESHOLD = 0.5
#: Scores are clipped this far from 0 and 1 before their logit (a backend may give 0).
EPSILON = 1e-6
#: ``fit_calibration``'s methods.
METHODS = ("auto", "platt", "presence")
#: Validation samples used by default: enough for two parameters, quick on a CPU.
DEFAULT_LIMIT = 500


def logit(scores: np.ndarray | float) -> np.ndarray:
    clipped = np.clip(np.asarray(scores, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def sigmoid(values: np.ndarray | float) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(values, dtype=np.float64)))


def platt(scores: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Platt scaling of raw scores: ``sigmoid(slope * logit(score) + intercept)``."""
    return sigmoid(slope * logit(scores) + intercept)


@dataclass(frozen=True)
class Calibration:
    """A fit of one model's score, what it was fitted for and on, and its figures.

    ``method`` ``"platt"``: ``parameters`` ``slope`` and ``intercept`` map each score (the
    file :func:`sceneloc.load` applies). ``"presence"``: a native model's own presence
    calibration refitted (``parameters["presence_calibration"]``, written into its copy's
    ``config.json``: the model then scores calibrated by itself).
    """

    method: str
    parameters: dict[str, Any]
    #: The model as the user named it, and its backend family (a file fits one family).
    model: str
    family: str
    #: The validation samples file and its SHA-256.
    data: str
    data_sha256: str
    #: Present and absent queries asked; refused, kept and ROC AUC before and after.
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def slope(self) -> float:
        return float(self.parameters["slope"])

    @property
    def intercept(self) -> float:
        return float(self.parameters["intercept"])

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated score of each raw score (Platt scaling)."""
        return platt(scores, self.slope, self.intercept)

    def raw_threshold(self, threshold: float) -> float:
        """The raw score whose calibrated score is ``threshold`` (for the backend's own
        filtering; the map rises, so the candidates kept are the same)."""
        if threshold <= 0:
            return 0.0
        if threshold >= 1:
            return 1.0
        return float(sigmoid((logit(threshold) - self.intercept) / self.slope))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        """The Platt scaling saved at ``path``; :class:`CalibrationError` when the file is
        missing, unreadable or not one ``sceneloc calibrate`` wrote."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CalibrationError(
                f"cannot read the calibration file {path}: {exc.strerror or exc}"
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CalibrationError(f"{path} is not a calibration file: not JSON") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CalibrationError(
                f"{path} is not a calibration file written by `sceneloc calibrate`"
            )
        if record.get("version") != VERSION or record.get("method") != "platt":
            raise CalibrationError(
                f"{path}: calibration version {record.get('version')!r}, method "
                f"{record.get('method')!r}; this sceneloc applies version {VERSION}, platt"
            )
        try:
            slope = float(record["parameters"]["slope"])
            intercept = float(record["parameters"]["intercept"])
            names = {name: str(record[name]) for name in ("model", "family", "data",
                                                          "data_sha256")}  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{path}: malformed calibration ({exc!r})") from None
        if not (np.isfinite(slope) and np.isfinite(intercept) and slope > 0):
            raise CalibrationError(f"{path}: the slope must be positive and both parameters finite")
        parameters = {"slope": slope, "intercept": intercept}
        return cls("platt", parameters, figures=dict(record.get("figures") or {}), **names)


class CalibratedBackend:
    """A backend whose candidates carry calibrated scores and whose default threshold is
    0.5; everything else is the wrapped backend's (``uncalibrated``)."""

    def __init__(self, backend: Backend, calibration: Calibration) -> None:
        self.uncalibrated = backend
        self.calibration = calibration
        self.default_threshold = THRESHOLD

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        raw = self.uncalibrated.predict(image, queries, self.calibration.raw_threshold(threshold))
        return self._calibrated(raw)

    def predict_tiles(
        self, tiles: list[Image.Image], queries: list[str], threshold: float, **options: Any
    ) -> list[list[Candidates]]:
        """The tiles' candidates calibrated too (``__getattr__`` would pass them on raw)."""
        raw_threshold = self.calibration.raw_threshold(threshold)
        found = self.uncalibrated.predict_tiles(tiles, queries, raw_threshold, **options)
        return [self._calibrated(tile) for tile in found]

    def _calibrated(self, raw: list[Candidates]) -> list[Candidates]:
        return [replace(found, scores=self.calibration.probability(found.scores)) for found in raw]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.uncalibrated, name)


def calibration_for(
    name_or_path: str, checkpoint: str, family: str, path: str | os.PathLike | None
) -> Calibration | None:
    """The calibration to apply: the file at ``path``, else the model directory's own
    ``calibration.json``, else none. A file fitted for another backend family is refused."""
    if path is None:
        own = Path(checkpoint).expanduser() / CALIBRATION_FILE
        return Calibration.read(own) if own.is_file() else None
    calibration = Calibration.read(path)
    if calibration.family != family:
        raise CalibrationError(
            f"{path} calibrates {calibration.model} (a {calibration.family} model), not "
            f"{name_or_path} (a {family} model)"
        )
    if calibration.model != name_or_path:
        logger.warning("%s was fitted for %s; applying it to %s", path, calibration.model,
                       name_or_path)  # fmt: skip
    return calibration


# --- fitting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryScores:
    """The best score of each present and absent query, and whether each present query's
    best box was the right one (IoU >= 0.5)."""

    present: np.ndarray
    absent: np.ndarray
    right_box: np.ndarray


def query_scores(
    grounder: Grounder, data: str | Path, limit: int | None = DEFAULT_LIMIT, seed: int = 0
) -> QueryScores:
    """Ask each image of ``data`` (its first ``limit`` samples) its own queries and as many
    absent ones (the data's own no-target queries, or as many certainly absent ones made
    for data with none); the best candidate's score of each (0 when there is none)."""
    from sceneloc.boxes import iou_matrix
    from sceneloc.data.format import read_samples
    from sceneloc.data.scenes import scenes_beside
    from sceneloc.training.native.dataset import group_by_image
    from sceneloc.training.native.queries import calibration_sampler, present_and_absent

    data = Path(data)
    groups = group_by_image(islice(read_samples(data), limit), data.parent)
    if not groups:
        raise CalibrationError(f"{data} has no samples to calibrate on")
    scenes = scenes_beside(data)
    absent_queries = calibration_sampler(groups, scenes)
    rng = np.random.default_rng(seed)
    present, absent, right = [], [], []
    for group in groups:
        there, others = present_and_absent(group, absent_queries, rng)
        asked = [query for query, _ in there] + others
        found = grounder.locate(group.path, asked, threshold=0.0, top_k=1)
        scores = [0.0 if result.score is None else result.score for result in found]
        present += scores[: len(there)]
        absent += scores[len(there) :]
        for result, (_, box) in zip(found, there):
            right.append(result.box is not None and iou_matrix([result.box], [box])[0, 0] >= 0.5)
    if not absent:
        raise CalibrationError(
            f"no absent query can be made from {data}: it needs two images or more "
            "(or synthetic scenes beside it)"
        )
    return QueryScores(np.array(present), np.array(absent), np.array(right, dtype=bool))


def roc_auc(present: np.ndarray, absent: np.ndarray) -> float:
    """The chance that a present query outscores an absent one (ties count half), counted
    by binary search in the sorted absent scores rather than over every pair."""
    ordered = np.sort(absent)
    below = np.searchsorted(ordered, present, side="left")
    tied = np.searchsorted(ordered, present, side="right") - below
    return float((below + tied / 2).sum() / (len(present) * len(absent)))


def rates(scores: QueryScores, threshold: float) -> dict[str, float]:
    """Absent queries refused, present ones kept (and kept with the right box) at
    ``threshold``, and the score's ROC AUC."""
    kept = scores.present >= threshold
    return {
        "threshold": round(float(threshold), 6),
        "absent_refused": round(float((scores.absent < threshold).mean()), 4),
        "present_kept": round(float(kept.mean()), 4),
        "present_kept_right_box": round(float((kept & scores.right_box).mean()), 4),
        "roc_auc": round(roc_auc(scores.present, scores.absent), 4),
    }


def fit_calibration(
    grounder: Grounder,
    data: str | Path,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = 0,
    method: str = "auto",
) -> Calibration:
    """Fit ``grounder``'s score on ``data`` (a calibration it was loaded with is set aside).

    ``method``: ``"platt"`` for any backend; ``"presence"`` refits a native model's own
    presence calibration (two inputs, where its one score cannot tell a plain description
    present from absent), and the grounder then scores with it; ``"auto"``: presence where
    the family has one (:attr:`~sceneloc.registry.Capability.PRESENCE_SCORE`), else platt.
    The figures compare the default threshold before with 0.5 after, on the same queries.
    """
    from sceneloc.api import Grounder
    from sceneloc.training.finetune.report import file_hash

    backend = grounder.backend
    if isinstance(backend, CalibratedBackend):
        backend = backend.uncalibrated
        grounder = Grounder(backend, grounder.name, grounder.settings)
    own = Capability.PRESENCE_SCORE in backend.family.capabilities
    if method == "auto":
        method = "presence" if own else "platt"
    if method not in METHODS or (method == "presence" and not own):
        raise InvalidOptionError(
            f"calibration method {method!r} for a {backend.family.name} model: use auto, platt"
            + (" or presence" if own else "")
        )
    scores = query_scores(grounder, data, limit, seed)
    before = rates(scores, backend.default_threshold)
    if method == "platt":
        parameters = platt_scaling(scores, grounder.name, data, before["roc_auc"])
        after = QueryScores(platt(scores.present, **parameters),
                            platt(scores.absent, **parameters), scores.right_box)  # fmt: skip
    else:
        from sceneloc.training.native.calibration import calibrate_presence

        fitted = calibrate_presence(backend, data, limit, seed)  # type: ignore[arg-type]
        assert fitted is not None  # query_scores made absent queries from the same data
        parameters = {"presence_calibration": fitted.weights}
        after = query_scores(grounder, data, limit, seed)
    figures = {"queries": {"present": len(scores.present), "absent": len(scores.absent)},
               "before": before, "after": rates(after, THRESHOLD)}  # fmt: skip
    return Calibration(method, parameters, grounder.name, backend.family.name, str(data),
                       file_hash(data), figures)  # fmt: skip


def platt_scaling(
    scores: QueryScores, model: str, data: str | Path, auc: float
) -> dict[str, float]:
    """``slope`` and ``intercept`` of the logistic regression on the score's logit, the
    present and absent queries weighing half each."""
    import torch

    from sceneloc.training.native.calibration import fit_presence

    features = [torch.tensor(np.stack([logit(s), np.ones_like(s)], axis=1))
                for s in (scores.present, scores.absent)]  # fmt: skip
    slope, intercept = fit_presence(*features).weights
    if slope <= 0:
        raise CalibrationError(
            f"{model}'s score does not rise when the referent is there (ROC AUC {auc:.3f} on "
            f"{data}): there is nothing to calibrate"
        )
    return {"slope": slope, "intercept": intercept}


# --- writing ----------------------------------------------------------------------------------


def write_calibrated(calibration: Calibration, checkpoint: str, out: str | Path) -> Path | None:
    """Write ``out``: a copy of the model directory ``checkpoint`` (its files hard-linked
    where the file system allows) with ``calibration.json`` (platt) or the refitted weights
    in its ``config.json`` (presence); for a hub model, the calibration file alone; and the
    report. Returns the calibration file's path (``None``: the model carries its own)."""
    out = Path(out)
    source = Path(checkpoint).expanduser()
    check_out(checkpoint, out)
    if calibration.method == "presence" and not source.is_dir():
        raise CalibrationError(f"{checkpoint} is not a local model directory to write weights to")
    out.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for entry in source.iterdir():
            if entry.name in (CALIBRATION_FILE, *REPORT_FILES):
                continue
            target = out / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if entry.is_dir():
                shutil.copytree(entry, target, copy_function=link_or_copy)
            else:
                link_or_copy(entry, target)
    write_report(calibration, out)
    if calibration.method == "presence":
        # A new file, not the hard link's shared one: the source model keeps its weights.
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        config["presence_calibration"] = calibration.parameters["presence_calibration"]
        (out / "config.json").unlink()
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (out / CALIBRATION_FILE).unlink(missing_ok=True)
        return None
    path = out / CALIBRATION_FILE
    calibration.save(path)
    return path


def check_out(checkpoint: str, out: Path) -> None:
    """Refuse, before any fitting, a folder that holds something else or is the model."""
    if out.exists() and any(out.iterdir()) and not (out / REPORT_FILES[0]).is_file():
        raise CalibrationError(f"{out} already holds other files: give a new or empty folder")
    source = Path(checkpoint).expanduser()
    if source.is_dir() and source.resolve() == out.resolve():
        raise CalibrationError(f"--out {out} is the model directory itself: give another folder")


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """A hard link (no second copy of the weights on disk), a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_report(calibration: Calibration, out: Path) -> None:
    """``report.json`` (the calibration file's content) and ``report.md`` (its table)."""
    (out / "report.json").write_text(
        json.dumps(calibration.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    queries = calibration.figures["queries"]
    lines = [
        f"# Calibration of {calibration.model} ({calibration.family})",
        "",
        f"{describe(calibration)}, fitted on {calibration.data} "
        f"(SHA-256 {calibration.data_sha256[:12]}): {queries['present']} present queries, "
        f"{queries['absent']} absent.",
        "",
        "| score | threshold | absent refused | present kept | kept, right box | ROC AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("before", "after"):
        row = calibration.figures[name]
        lines.append(
            f"| {name} | {row['threshold']:g} | {row['absent_refused']:.3f} | "
            f"{row['present_kept']:.3f} | {row['present_kept_right_box']:.3f} | "
            f"{row['roc_auc']:.3f} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def describe(calibration: Calibration) -> str:
    """The fitted map in words, for the report and the command's output."""
    if calibration.method == "platt":
        return (f"Platt scaling: p = sigmoid({calibration.slope:.4g} * logit(score) "
                f"{calibration.intercept:+.4g})")  # fmt: skip
    weights = calibration.parameters["presence_calibration"]
    return f"the native presence score refitted: presence_calibration {weights}"
