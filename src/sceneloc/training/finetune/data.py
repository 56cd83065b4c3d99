"""A fine-tuning run's samples: checked before the first step, served as items.

Every image is opened and every box checked against its image in :func:`read_training_samples`,
so a bad file fails in seconds, not an hour in. The dataset yields one
:class:`~sceneloc.training.finetune.recipe.FinetuneItem` per sample, plus queries whose
referent is absent (no target boxes: the model learns to say "not there"), and flips an
image left-right only when its query says nothing of left and right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sceneloc.data.format import Sample, read_samples
from sceneloc.data.scenes import Scenes, scenes_beside
from sceneloc.errors import SceneLocError
from sceneloc.images import load_image
from sceneloc.training.finetune.recipe import FinetuneItem
from sceneloc.training.native.dataset import (
    SIDE_WORDS,
    AbsentSampler,
    ImageGroup,
    group_by_image,
)
from sceneloc.training.native.queries import absent_sampler_for
from sceneloc.training.options import TrainingError

#: How far (pixels) a box may reach past its image's edge before it is refused (rounding).
EDGE_TOLERANCE = 1.0


@dataclass
class TrainingSamples:
    """The checked samples of a file, grouped by image, and the file's scenes if any."""

    samples: list[Sample]
    groups: list[ImageGroup]
    scenes: Scenes | None


def read_training_samples(path: str | Path) -> TrainingSamples:
    """Read and check a samples file: images readable, boxes inside them; raises
    :class:`TrainingError` naming the file and the first bad sample."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"data file not found: {path}")
    try:
        samples = list(read_samples(path))
    except SceneLocError as exc:
        raise TrainingError(str(exc)) from None
    if not samples:
        raise TrainingError(f"{path} holds no usable samples")
    sizes: dict[Path, tuple[int, int]] = {}
    for sample in samples:
        image = sample.image_path(path.parent)
        if image not in sizes:
            try:
                sizes[image] = load_image(image).image.size
            except SceneLocError as exc:
                raise TrainingError(f"{path}: sample {sample.id}: {exc}") from None
        width, height = sizes[image]
        for box in sample.targets:
            x1, y1, x2, y2 = box
            low, high_x, high_y = -EDGE_TOLERANCE, width + EDGE_TOLERANCE, height + EDGE_TOLERANCE
            inside = x1 >= low and y1 >= low and x2 <= high_x and y2 <= high_y
            if not inside or x2 <= x1 or y2 <= y1:
                raise TrainingError(
                    f"{path}: sample {sample.id}: box {list(box)} is not inside its "
                    f"{width} x {height} image"
                )
    return TrainingSamples(samples, group_by_image(samples, path.parent), scenes_beside(path))


class FinetuneDataset:
    """One item per sample, then ``absent_fraction`` as many absent queries; the random
    choices (flips, absent queries) follow the seed and the epoch."""

    def __init__(
        self, data: TrainingSamples, root: Path, *, seed: int, augment: bool,
        absent_fraction: float,
    ) -> None:  # fmt: skip
        self.data = data
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self.paths = [sample.image_path(root) for sample in data.samples]
        self.group_of = {group.path: group for group in data.groups}
        self.absent: AbsentSampler | None = None
        count = round(absent_fraction * len(data.samples))
        if count:
            self.absent = absent_sampler_for(data.groups, data.scenes)
        rng = np.random.default_rng(seed)
        #: Entries past the samples are absent queries, each on the image of a random sample.
        self.absent_on = rng.integers(len(data.samples), size=count).tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.samples) + len(self.absent_on)

    def __getitem__(self, index: int) -> FinetuneItem:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        samples = self.data.samples
        on = index if index < len(samples) else self.absent_on[index - len(samples)]
        sample, path = samples[on], self.paths[on]
        query, boxes = sample.query, np.asarray(sample.targets, dtype=np.float32)
        if index >= len(samples):
            absent = self.absent.sample(self.group_of[path], rng) if self.absent else None
            if absent is not None:  # else (no absent query to be had) the sample itself
                query, boxes = absent, np.zeros((0, 4), dtype=np.float32)
        image = load_image(path).image
        if self.augment and not SIDE_WORDS.search(query) and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            boxes = boxes.copy()
            boxes[:, [0, 2]] = image.width - boxes[:, [2, 0]]
        return FinetuneItem(image, query, boxes)
