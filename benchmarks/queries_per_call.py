"""8 queries in one ``locate`` call against 8 calls of one query, per backend, on CPU.

Full-size architectures with random weights (the hub is out of reach here; random weights
cost the same time as trained ones). Run from the repository root:

    python benchmarks/queries_per_call.py [--backends grounding-dino owlv2 ...] [--repeats 1]

Prints a table: seconds for one call with 8 queries, seconds for 8 single-query calls,
and their ratio (how many times faster asking together is).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from checkpoints.clip import build_clip_rerank
from checkpoints.florence2 import build_florence2
from checkpoints.owlv2 import build_owlv2

import sceneloc
from checkpoints.grounding_dino import build_grounding_dino
from conftest import draw_scene

QUERIES = [
    "a vendor selling vegetables",
    "the red umbrella",
    "a man on a bicycle",
    "the woman in a blue coat",
    "a dog lying under the table",
    "the stack of yellow crates",
    "a child holding a balloon",
    "the sign above the door",
]

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "grounding-dino": lambda d: build_grounding_dino(d, full_size=True),
    "mm-grounding-dino": lambda d: build_grounding_dino(d, mm=True, full_size=True),
    "owlv2": lambda d: build_owlv2(d, full_size=True),
    "florence-2": lambda d: build_florence2(d, full_size=True),
    "clip-rerank": lambda d: build_clip_rerank(d, full_size=True),
}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    image: Image.Image = draw_scene(1280, 720)
    table = Table(title=f"8 queries, one 1280x720 image, CPU x{args.threads} threads")
    for column in ("backend", "1 call x 8 queries (s)", "8 calls x 1 query (s)", "ratio"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    console = Console()
    for name in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            grounder = sceneloc.load(str(BUILDERS[name](Path(tmp))), device="cpu")
            grounder.locate(image, QUERIES[0])  # warm-up: first-call allocations and caches
            together = timed(
                lambda g=grounder: g.locate(image, QUERIES, threshold=0.0), args.repeats
            )
            apart = timed(
                lambda g=grounder: [g.locate(image, q, threshold=0.0) for q in QUERIES],
                args.repeats,
            )
        table.add_row(name, f"{together:.2f}", f"{apart:.2f}", f"{apart / together:.2f}x")
        console.print(f"{name}: together {together:.2f}s, apart {apart:.2f}s")
    console.print(table)


if __name__ == "__main__":
    main()
