"""It fixes what it is shown: fine-tuning a small random model on a few synthetic scenes.

A small randomly initialised model of each family is fine-tuned by ``sceneloc.finetune``
on a handful of queries about large shapes and evaluated on those same queries before and
after (Acc@0.5, as ``sceneloc evaluate`` scores it). Everything is built on disk offline.
Run from the repository root:

    python benchmarks/finetune_overfit.py [--family grounding-dino ...] [--keep DIR]

``--seed`` and ``--data-seed`` change the model's initialisation and the scenes. Prints, per
family, Acc@0.5 and mean IoU before and after, and the seconds the run took.

A family is one entry of ``FAMILIES``: a function that saves a small random checkpoint in
a directory and returns it with the ``sceneloc.finetune`` options that teach it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: The shapes' colours and how the queries name them.
COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210),
           "yellow": (230, 200, 40)}  # fmt: skip
#: Two large shapes per scene, each the referent of one query.
SCENES = 6
SIZE = 128


def write_scenes(directory: Path, scenes: int = SCENES, shapes: int = 2, seed: int = 0) -> Path:
    """Scenes of ``shapes`` large shapes of different colours (squares and circles, each
    two fifths of the image's side or more), one query per shape; returns the samples file."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    names = list(COLOURS)
    for index in range(scenes):
        image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(90, 150, 3)))
        draw = ImageDraw.Draw(image)
        colours = rng.choice(len(names), size=shapes, replace=False)
        slots = rng.permutation(shapes)  # which shape sits in which vertical band
        width = SIZE // shapes
        for shape, (colour, slot) in enumerate(zip(colours, slots)):
            side = int(rng.integers(46, min(width, 72) - 3))
            x1 = int(slot * width + rng.integers(2, width - side))
            y1 = int(rng.integers(4, SIZE - side - 4))
            box = [x1, y1, x1 + side, y1 + side]
            name, kind = names[colour], ("square", "circle")[(index + shape) % 2]
            (draw.rectangle if kind == "square" else draw.ellipse)(box, fill=COLOURS[name])
            rows.append({"id": f"{index}-{shape}", "image": f"scene{index}.png",
                         "query": f"the {name} {kind}", "box": box, "split": "train"})  # fmt: skip
        image.save(directory / f"scene{index}.png")
    path = directory / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def repeat_samples(path: Path, times: int) -> Path:
    """The samples file with every sample listed ``times`` times: one epoch is then
    ``times`` passes, so the validation after each epoch costs less of the run."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out = path.with_name(f"repeated{times}.jsonl")
    out.write_text("".join(json.dumps({**row, "id": f"{row['id']}-{k}"}) + "\n"
                           for k in range(times) for row in rows))  # fmt: skip
    return out


def grounding_dino(directory: Path, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """A small random single-stage Grounding DINO (learned queries: transformers' two-stage
    proposals are chosen by layers that never get a gradient, so a random two-stage model
    keeps random proposals and lands anywhere from 0.4 to 0.9 by the seed) and the options
    that teach it: the peak rate until the last part of the run (``stable-decay``)."""
    from checkpoints.grounding_dino import build_learnable_grounding_dino

    checkpoint = build_learnable_grounding_dino(directory, seed=seed, two_stage=False)
    options = dict(epochs=28, repeat=6, batch_size=4, lr=1e-3, backbone_lr=1e-3, grad_clip=1.0,
                   augment=False, lr_schedule="stable-decay", warmup_fraction=0.05,
                   scenes={"scenes": 10, "shapes": 1})  # fmt: skip
    return checkpoint, options


def florence_2(directory: Path, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """A small random Florence-2 (DaViT + two-layer BART, d_model 64, 64 px input) and the
    options that teach it: every weight learns (a random vision tower has nothing to keep;
    the recipe freezes it by default), at a learning rate for a random model."""
    from checkpoints.florence2 import build_florence2_trainable

    queries = [f"the {name} {kind}" for name in COLOURS for kind in ("square", "circle")]
    checkpoint = build_florence2_trainable(directory, queries, seed=seed, layers=2)
    options = dict(epochs=4, repeat=40, batch_size=8, lr=1e-3, freeze="none", augment=False,
                   lr_schedule="stable-decay", warmup_fraction=0.1)  # fmt: skip
    return checkpoint, options


#: Family -> a function that saves its small random checkpoint (initialised from a seed) in a
#: directory and returns it with the options that teach it (``repeat``: passes over the
#: samples per epoch).
FAMILIES: dict[str, Callable[[Path, int], tuple[Path, dict[str, Any]]]] = {
    "grounding-dino": grounding_dino,
    "florence-2": florence_2,
}


def run(family: str, directory: Path, seed: int = 0, data_seed: int = 0) -> dict[str, Any]:
    """Fine-tune ``family``'s small model on the scenes; its figures before and after.
    ``seed`` initialises the model and orders the training; ``data_seed`` draws the scenes."""
    import sceneloc

    checkpoint, options = FAMILIES[family](directory / "checkpoint", seed)
    options = dict(options, seed=seed)
    samples = write_scenes(directory / "scenes", **options.pop("scenes", {}), seed=data_seed)
    train = repeat_samples(samples, options.pop("repeat", 1))
    start = time.perf_counter()
    result = sceneloc.finetune(str(checkpoint), train, directory / "run", val=samples, **options)
    return {
        "family": family,
        "queries": len(samples.read_text().splitlines()),
        "before": result.before["acc@0.5"],
        "after": result.after["acc@0.5"],
        "miou_before": result.before["miou"],
        "miou_after": result.after["miou"],
        "seconds": time.perf_counter() - start,
        "result": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--keep", type=Path, help="build and run here (kept), not in a temp dir")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and order")
    parser.add_argument("--data-seed", type=int, default=0, help="the scenes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for family in args.family:
        with tempfile.TemporaryDirectory() as temporary:
            directory = (args.keep or Path(temporary)) / family
            figures = run(family, directory, args.seed, args.data_seed)
        print(
            f"{family}: Acc@0.5 {figures['before']:.2f} -> {figures['after']:.2f} on "
            f"{figures['queries']} queries (mean IoU {figures['miou_before']:.2f} -> "
            f"{figures['miou_after']:.2f}) in {figures['seconds']:.0f} s"
        )


if __name__ == "__main__":
    main()
