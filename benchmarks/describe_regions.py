"""Region captions per second with Florence-2 on CPU: one box per call against 16 boxes of
one image in one call.

Florence-2-base's full-size architecture with random weights (the hub is out of reach here;
random weights cost the same time as trained ones). Random weights never end a caption, so
every caption runs to ``--max-new-tokens`` tokens: the figures are for captions of that
length, with the model card's three beams. Run from the repository root:

    python benchmarks/describe_regions.py [--repeats 5] [--boxes 16] [--max-new-tokens 16]

Prints the median seconds per call and captions per second for 1 box and for ``--boxes``
boxes, and the ratio time(n boxes) / (n x time(1 box)): below 1 the image encoded once per
call and the boxes batched into one ``generate`` pay off.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import full_size
import sceneloc
from conftest import draw_scene
from queries_per_call import timed

WIDTH, HEIGHT = 1280, 720


def grid_boxes(count: int) -> np.ndarray:
    """``count`` boxes of the image, on a grid, each a different region."""
    side = int(np.ceil(np.sqrt(count)))
    width, height = WIDTH / side, HEIGHT / side
    cells = [(i % side, i // side) for i in range(count)]
    return np.array([[x * width, y * height, (x + 1) * width, (y + 1) * height] for x, y in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--boxes", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    image = draw_scene(WIDTH, HEIGHT)
    boxes = grid_boxes(args.boxes)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        describer = sceneloc.load(str(full_size.florence2(Path(tmp))), "describe", device="cpu")

        def describe(regions: np.ndarray) -> None:
            describer.describe(image, regions, max_new_tokens=args.max_new_tokens)

        describe(boxes[:1])  # warm-up: first-call allocations and caches
        one = timed(lambda: describe(boxes[:1]), args.repeats)
        many = timed(lambda: describe(boxes), args.repeats)
    console.print(
        f"Florence-2-base (random weights), one {WIDTH}x{HEIGHT} image, CPU x{args.threads} "
        f"threads, {describer.settings.num_beams} beams, every caption {args.max_new_tokens} "
        f"tokens (random weights never end one), median of {args.repeats}"
    )
    console.print(f"1 box per call: {one:.2f} s, {1 / one:.2f} captions/s")
    console.print(f"{args.boxes} boxes per call: {many:.2f} s, {args.boxes / many:.2f} captions/s")
    console.print(
        f"time({args.boxes} boxes) / ({args.boxes} x time(1 box)) = {many / (args.boxes * one):.2f}"
    )


if __name__ == "__main__":
    main()
