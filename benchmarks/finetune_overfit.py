"""It fixes what it is shown: fine-tuning a small random model on a few synthetic scenes.

A small randomly initialised model of each family is fine-tuned by ``sceneloc.finetune``
on a handful of queries about large shapes and evaluated on those same queries before and
after (Acc@0.5, as ``sceneloc evaluate`` scores it). Everything is built on disk offline.
Run from the repository root:

    python benchmarks/finetune_overfit.py [--family grounding-dino ...] [--keep DIR]

Prints, per family, Acc@0.5 and mean IoU before and after, and the seconds the run took.

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


def grounding_dino(directory: Path) -> tuple[Path, dict[str, Any]]:
    """A small random Grounding DINO and the options that teach it."""
    from checkpoints.grounding_dino import build_learnable_grounding_dino

    checkpoint = build_learnable_grounding_dino(directory)
    options = dict(epochs=6, repeat=6, batch_size=4, lr=1e-3, backbone_lr=1e-3, grad_clip=1.0,
                   warmup_fraction=0.05, augment=False)  # fmt: skip
    return checkpoint, options


#: Family -> a function that saves its small random checkpoint in a directory and returns
#: it with the options that teach it (``repeat``: passes over the samples per epoch).
FAMILIES: dict[str, Callable[[Path], tuple[Path, dict[str, Any]]]] = {
    "grounding-dino": grounding_dino,
}


def run(family: str, directory: Path) -> dict[str, Any]:
    """Fine-tune ``family``'s small model on the scenes; its figures before and after."""
    import sceneloc

    checkpoint, options = FAMILIES[family](directory / "checkpoint")
    options = dict(options)
    samples = write_scenes(directory / "scenes", **options.pop("scenes", {}))
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for family in args.family:
        with tempfile.TemporaryDirectory() as temporary:
            directory = (args.keep or Path(temporary)) / family
            figures = run(family, directory)
        print(
            f"{family}: Acc@0.5 {figures['before']:.2f} -> {figures['after']:.2f} on "
            f"{figures['queries']} queries (mean IoU {figures['miou_before']:.2f} -> "
            f"{figures['miou_after']:.2f}) in {figures['seconds']:.0f} s"
        )


if __name__ == "__main__":
    main()
