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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import full_size
import sceneloc
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

#: backend -> (builder of a full-size random checkpoint, options for ``sceneloc.load``)
BACKENDS: dict[str, tuple[Callable[[Path], Path], dict]] = {
    "grounding-dino": (full_size.grounding_dino, {}),
    "mm-grounding-dino": (full_size.mm_grounding_dino, {}),
    "owlv2": (full_size.owlv2, {}),
    # Random weights never end their answer: cap it at a typical grounding answer's length.
    "florence-2": (full_size.florence2, {"max_new_tokens": 24}),
    "clip-rerank": (full_size.clip_rerank, {}),
    "omdet-turbo": (full_size.omdet_turbo, {}),
    "sam3": (full_size.sam3, {}),
    "sam3-lite": (full_size.sam3_lite, {}),
    # About one fenced box with its label; the CPU's default image budget (512 x 512).
    "qwen3-vl-2b": (full_size.qwen3_vl_2b, {"max_new_tokens": 40}),
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
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
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
            build, options = BACKENDS[name]
            grounder = sceneloc.load(str(build(Path(tmp))), device="cpu", **options)
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
