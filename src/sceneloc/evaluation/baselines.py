"""Chance baselines on the synthetic scenes, so that any model's figure has context.

``random-object`` picks a uniformly random object of the sample's image; ``same-shape``
picks a random object of the referent's shape (the sample's ``category``): what a model
that reads the noun but ignores colour, size and relations would score. Both need the
synthetic dataset's ``scenes.jsonl`` (one line per image, listing every object and its box)
and are deterministic for a seed. They are predictors like any model, scored the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sceneloc.candidates import Candidates
from sceneloc.data.format import Sample, parse_box, read_jsonl, report_bad
from sceneloc.errors import DataFormatError, SceneLocError
from sceneloc.evaluation.metrics import EvaluationResult, Prediction
from sceneloc.evaluation.runner import evaluate

logger = logging.getLogger(__name__)

BASELINES = ("random-object", "same-shape")
SCENES_FILE = "scenes.jsonl"


@dataclass(frozen=True)
class Scene:
    """The objects of one synthetic image: their shapes and boxes (``(k, 4)`` array)."""

    width: int
    height: int
    shapes: tuple[str, ...]
    boxes: np.ndarray


@dataclass
class Scenes:
    """Scenes by ``image_id`` and by resolved image path (for samples without an id)."""

    by_id: dict[str, Scene]
    by_path: dict[str, Scene]

    def find(self, sample: Sample, root: Path) -> Scene:
        if sample.image_id is not None and str(sample.image_id) in self.by_id:
            return self.by_id[str(sample.image_id)]
        scene = self.by_path.get(_key(sample.image_path(root)))
        if scene is None:
            raise DataFormatError(
                f"sample {sample.id}: its image ({sample.image_id or sample.image}) "
                "is not in the scenes file"
            )
        return scene


def _key(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _parse_scene(record: Any) -> tuple[Scene, str | None, str]:
    if not isinstance(record, dict):
        raise ValueError("a scene must be a JSON object")
    for name in ("image", "width", "height", "objects"):
        if name not in record:
            raise ValueError(f"missing field {name!r}")
    width, height = record["width"], record["height"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise ValueError("'width' and 'height' must be positive integers")
    if not isinstance(record["objects"], list):
        raise ValueError("'objects' must be a list")
    shapes, boxes = [], []
    for index, item in enumerate(record["objects"]):
        if not isinstance(item, dict) or "box" not in item:
            raise ValueError(f"object {index} must be an object with a 'box'")
        shapes.append(str(item.get("shape", "")))
        boxes.append(parse_box(item["box"], f"objects[{index}].box"))
    scene = Scene(width, height, tuple(shapes), np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    image_id = record.get("image_id")
    return scene, None if image_id is None else str(image_id), str(record["image"])


def read_scenes(path: str | Path) -> Scenes:
    """Read a synthetic ``scenes.jsonl``; a malformed line raises :class:`DataFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(
            f"scenes file not found: {path} (the baselines need the synthetic dataset's "
            f"{SCENES_FILE}; give it with --scenes)"
        )
    scenes = Scenes({}, {})
    for number, record in read_jsonl(path):
        try:
            scene, image_id, image = _parse_scene(record)
        except ValueError as exc:
            report_bad(path, number, str(exc), skip_bad=False)
            continue
        if image_id is not None:
            scenes.by_id[image_id] = scene
        image_path = Path(image)
        scenes.by_path[_key(image_path if image_path.is_absolute() else path.parent / image)] = (
            scene
        )
    return scenes


def check_baseline(name: str) -> str:
    """The name, if it is a baseline's; a clear error otherwise."""
    if name not in BASELINES:
        raise SceneLocError(f"unknown baseline {name!r} (use {' or '.join(BASELINES)})")
    return name


class BaselinePredictor:
    """Random picks among a scene's objects; the rest of the objects, shuffled, rank after.

    Draws come from one seeded generator in sample order, so a seed gives the same picks
    whatever the batch size, and ``--limit N`` gives the first N picks of the full run.
    """

    def __init__(self, name: str, scenes: Scenes, seed: int = 0):
        self.name = check_baseline(name)
        self.scenes = scenes
        self.rng = np.random.default_rng(seed)
        self._warned = False

    def __call__(self, samples: Sequence[Sample], root: Path) -> list[Prediction]:
        return [self.predict(sample, self.scenes.find(sample, root)) for sample in samples]

    def predict(self, sample: Sample, scene: Scene) -> Prediction:
        order = self.rng.permutation(len(scene.shapes))
        if self.name == "same-shape":
            if sample.category is None and not self._warned:
                logger.info("samples without a category: same-shape picks any object for them")
                self._warned = True
            same = np.array([scene.shapes[i] == sample.category for i in order], dtype=bool)
            order = np.concatenate([order[same], order[~same]])
        candidates = Candidates(scene.boxes[order], np.full(len(order), np.nan), [""] * len(order))
        best = candidates[0].box if len(candidates) else None
        return Prediction(best, None, candidates, (scene.width, scene.height))


def evaluate_baseline(
    data: str | Path | Iterable[Sample],
    name: str,
    scenes: str | Path | Scenes | None = None,
    seed: int = 0,
    **options: Any,
) -> EvaluationResult:
    """Evaluate a baseline; ``scenes`` defaults to ``scenes.jsonl`` beside the data file."""
    check_baseline(name)
    if scenes is None:
        if not isinstance(data, str | Path):
            raise SceneLocError("give the scenes file when the data is not a file")
        scenes = Path(data).parent / SCENES_FILE
    if not isinstance(scenes, Scenes):
        scenes = read_scenes(scenes)
    options.setdefault("source", f"baseline: {name} (seed {seed})")
    return evaluate(data, BaselinePredictor(name, scenes, seed), **options)
