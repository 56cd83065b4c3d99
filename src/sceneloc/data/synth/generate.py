"""Write a synthetic dataset: ``images/``, ``annotations.jsonl``, ``scenes.jsonl`` and
``descriptions.jsonl`` (every description of each annotated target, its references for
describing; :mod:`~sceneloc.data.synth.describing`).

Image ``k`` is drawn from its own generator seeded with ``(seed, k)``, so a dataset is a pure
function of its settings: the same seed gives byte-identical files, another seed another
dataset. Images are numbered in split order: the train block first, then val, test and
compositional, the counts being ``--num-images`` divided by the split proportions (largest
remainders round up, ties going to the earlier split).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sceneloc.data.format import Sample, write_samples
from sceneloc.data.synth.domain import DEFAULT_DOMAIN, Domain
from sceneloc.data.synth.options import SynthError, check_options
from sceneloc.data.synth.scene import make_scene
from sceneloc.data.synth.vocab import SPLITS

logger = logging.getLogger(__name__)

#: Default division of ``num_images``: 70 % train, 10 % each val, test and compositional.
DEFAULT_SPLITS: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.1, "compositional": 0.1}
MAX_IMAGES = 10_000_000
#: The references file, beside ``annotations.jsonl``.
DESCRIPTIONS_FILE = "descriptions.jsonl"


def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` as proportions (weights, normalised later)."""
    splits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if name not in SPLITS or name in splits or not weight >= 0:
            raise SynthError(
                f"bad split {part!r}: use NAME=WEIGHT with NAME one of {', '.join(SPLITS)}, "
                "each once, and WEIGHT >= 0"
            )
        splits[name] = weight
    return splits


def split_counts(num_images: int, splits: Mapping[str, float]) -> dict[str, int]:
    """Divide ``num_images`` in proportion to ``splits`` (largest remainder rounding)."""
    total = sum(splits.values())
    if not splits or not total > 0:
        raise SynthError("the split weights must add up to more than 0")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise SynthError(f"unknown split(s) {', '.join(sorted(unknown))}")
    exact = {name: num_images * splits.get(name, 0.0) / total for name in SPLITS}
    counts = {name: int(value) for name, value in exact.items()}
    short = num_images - sum(counts.values())
    for name in sorted(SPLITS, key=lambda n: (counts[n] - exact[n], SPLITS.index(n)))[:short]:
        counts[name] += 1
    return {name: counts[name] for name in SPLITS if counts[name]}


@dataclass(frozen=True)
class SynthStats:
    """What :func:`generate` wrote and how fast."""

    out_dir: Path
    images: dict[str, int]
    samples: dict[str, int]
    types: dict[str, int]
    objects: int
    seconds: float
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    descriptions: int = 0

    @property
    def num_images(self) -> int:
        return sum(self.images.values())

    @property
    def num_samples(self) -> int:
        return sum(self.samples.values())

    @property
    def images_per_minute(self) -> float:
        return 60 * self.num_images / self.seconds if self.seconds > 0 else float("inf")


def generate(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    *,
    size: int = 512,
    min_objects: int = 20,
    max_objects: int = 60,
    queries_per_image: int = 6,
    splits: Mapping[str, float] | str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    domain: Domain = DEFAULT_DOMAIN,
) -> SynthStats:
    """Generate ``num_images`` scenes into ``out_dir``; ``progress(done, total)`` after each.

    Raises :class:`SynthError` (a ``ValueError`` and a ``SceneLocError``) for impossible
    settings, an output folder that already holds a dataset (unless ``overwrite``) or one
    that cannot be written. ``domain`` restricts colours, shapes and query types and sets
    the ground and object scale (the default: the whole vocabulary, as always).
    """
    check_options(size, min_objects, max_objects, queries_per_image, domain.size_base(size))
    if not 1 <= num_images <= MAX_IMAGES:
        raise SynthError(f"the number of images must be 1 to {MAX_IMAGES}, got {num_images}")
    if seed < 0:
        raise SynthError(f"the seed must be 0 or more, got {seed}")
    weights = parse_splits(splits) if isinstance(splits, str) else dict(splits or DEFAULT_SPLITS)
    counts = split_counts(num_images, weights)
    domain.check(size, compositional="compositional" in counts)
    out = Path(out_dir)
    annotations, scenes = out / "annotations.jsonl", out / "scenes.jsonl"
    references = out / DESCRIPTIONS_FILE
    if not overwrite and (annotations.exists() or scenes.exists()):
        raise SynthError(
            f"{out} already holds a dataset; pass --overwrite (overwrite=True) to replace it"
        )
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthError(f"cannot write to {out}: {exc.strerror or exc}") from None

    order = [name for name, n in counts.items() for _ in range(n)]
    width = max(6, len(str(num_images - 1)))
    started = time.perf_counter()
    samples: Counter[str] = Counter()
    types: Counter[str] = Counter()
    objects = described_count = 0
    partial = scenes.with_name(scenes.name + ".partial")
    references_partial = references.with_name(references.name + ".partial")
    logger.info("generating %d images into %s (seed %d): %s", num_images, out, seed, counts)

    def scene_samples() -> Iterator[Sample]:
        """Draw and save each image, record its scene, and hand its samples to the writer."""
        nonlocal objects, described_count
        with (
            partial.open("w", encoding="utf-8") as records,
            references_partial.open("w", encoding="utf-8") as described,
        ):
            for index, split in enumerate(order):
                image_id = f"{index:0{width}d}"
                scene = make_scene(
                    np.random.default_rng([seed, index]),
                    size=size,
                    min_objects=min_objects,
                    max_objects=max_objects,
                    queries_per_image=queries_per_image,
                    split=split,
                    image_id=image_id,
                    image_path=f"images/{image_id}.png",
                    domain=domain,
                )
                scene.image.save(out / scene.image_path, format="PNG", compress_level=1)
                records.write(json.dumps(scene.record()) + "\n")
                references_of_scene = scene.descriptions()
                described.writelines(json.dumps(s.to_dict()) + "\n" for s in references_of_scene)
                described_count += len(references_of_scene)
                samples[split] += len(scene.queries)
                types.update(q.type for q in scene.queries)
                objects += len(scene.objects)
                yield from scene.samples
                if progress is not None:
                    progress(index + 1, num_images)

    try:
        write_samples(annotations, scene_samples())
        os.replace(partial, scenes)
        os.replace(references_partial, references)
    except OSError as exc:
        raise SynthError(f"cannot write to {out}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
        references_partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    stats = SynthStats(
        out_dir=out,
        images=counts,
        samples={name: samples[name] for name in counts},
        types={name: types[name] for name in domain.query_types},
        objects=objects,
        descriptions=described_count,
        seconds=seconds,
        seed=seed,
        settings={
            "size": size,
            "min_objects": min_objects,
            "max_objects": max_objects,
            "queries_per_image": queries_per_image,
            **({} if domain == DEFAULT_DOMAIN else {"domain": asdict(domain)}),
        },
    )
    logger.info(
        "wrote %d images and %d queries in %.1f s (%.0f images/min)",
        stats.num_images,
        stats.num_samples,
        seconds,
        stats.images_per_minute,
    )
    return stats
