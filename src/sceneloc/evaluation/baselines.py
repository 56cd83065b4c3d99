"""Chance baselines on the synthetic scenes, so that any model's figure has context.

``random-object`` picks a uniformly random object of the sample's image; ``same-shape``
picks a random object of the referent's shape (the sample's ``category``): what a model
that reads the noun but ignores colour, size and relations would score. Both need the
synthetic dataset's ``scenes.jsonl`` (one line per image, listing every object and its box)
and are deterministic for a seed. They are predictors like any model, scored the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sceneloc.candidates import Candidates
from sceneloc.data.format import Sample
from sceneloc.data.scenes import SCENES_FILE, SceneRecord, Scenes, read_scenes
from sceneloc.errors import DataFormatError, SceneLocError
from sceneloc.evaluation.metrics import EvaluationResult, Prediction
from sceneloc.evaluation.runner import evaluate

logger = logging.getLogger(__name__)

BASELINES = ("random-object", "same-shape")


def find_scene(scenes: Scenes, sample: Sample, root: Path) -> SceneRecord:
    """The scene of the sample's image; a clear error when the scenes file lacks it."""
    scene = scenes.find(sample.image_id, sample.image_path(root))
    if scene is None:
        raise DataFormatError(
            f"sample {sample.id}: its image ({sample.image_id or sample.image}) "
            "is not in the scenes file"
        )
    return scene


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
        return [self.predict(sample, find_scene(self.scenes, sample, root)) for sample in samples]

    def predict(self, sample: Sample, scene: SceneRecord) -> Prediction:
        shapes = [obj.attributes.get("shape", "") for obj in scene.objects]
        boxes = scene.boxes
        order = self.rng.permutation(len(shapes))
        if self.name == "same-shape":
            if sample.category is None and not self._warned:
                logger.info("samples without a category: same-shape picks any object for them")
                self._warned = True
            same = np.array([shapes[i] == sample.category for i in order], dtype=bool)
            order = np.concatenate([order[same], order[~same]])
        candidates = Candidates(boxes[order], np.full(len(order), np.nan), [""] * len(order))
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
        if not Path(scenes).is_file():
            raise DataFormatError(
                f"scenes file not found: {scenes} (the baselines need the synthetic dataset's "
                f"{SCENES_FILE}; give it with --scenes)"
            )
        scenes = read_scenes(scenes)
    options.setdefault("source", f"baseline: {name} (seed {seed})")
    return evaluate(data, BaselinePredictor(name, scenes, seed), **options)
