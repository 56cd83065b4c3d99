"""Tiling on huge scenes: accuracy by query type with ``--tiles auto`` against ``off``.

Draws synthetic 4096 x 4096 scenes whose objects have the pixel sizes of 512 px scenes
(``--object-size-base 512``), 400 to 800 of them, with a seed no training used, and
evaluates a model on them untiled and tiled (``sceneloc.evaluation.evaluate_model``, top
box of each query, Acc@0.5). Run from the repository root:

    python benchmarks/tiling_huge.py [--model native-synth] [--images 8] [--seed 4096]

Prints Acc@0.5 and mean IoU by query type for each setting, the seconds per image, and
the time of the tiled run as a ratio to the untiled one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

import sceneloc
from sceneloc.data.synth import generate, make_domain
from sceneloc.evaluation import evaluate_model

TYPES = ("attribute", "relation", "ordinal", "group")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="native-synth")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=4096)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--object-size-base", type=int, default=512)
    parser.add_argument("--min-objects", type=int, default=400)
    parser.add_argument("--max-objects", type=int, default=800)
    parser.add_argument("--tiles", default="auto", help="the tiled setting (auto or a size)")
    parser.add_argument("--tile-overlap", type=float, default=0.2)
    parser.add_argument("--work", type=Path, default=Path("runs/tiling-huge"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    data = args.work / f"scenes-{args.size}-{args.seed}-{args.images}"
    if not (data / "annotations.jsonl").exists():
        domain = make_domain(object_size_base=args.object_size_base)
        generate(data, args.images, args.seed, size=args.size, min_objects=args.min_objects,
                 max_objects=args.max_objects, domain=domain)  # fmt: skip
    grounder = sceneloc.load(args.model, device=args.device)
    results = {}
    for tiles in ("off", args.tiles):
        options = {"tiles": tiles, "tile_overlap": args.tile_overlap}
        results[tiles] = evaluate_model(
            data / "annotations.jsonl", grounder, locate_options=options
        )

    table = Table(title=f"{args.model} on {args.images} {args.size} px scenes (seed {args.seed})")
    table.add_column("tiles")
    for kind in TYPES:
        table.add_column(f"{kind} Acc@0.5 (n)", justify="right")
    table.add_column("all", justify="right")
    table.add_column("s / image", justify="right")
    for tiles, result in results.items():
        by_type = result.by_type()
        cells = [
            f"{by_type[kind]['acc@0.5']:.3f} ({by_type[kind]['n']})" if kind in by_type else "-"
            for kind in TYPES
        ]
        seconds = result.seconds / args.images
        table.add_row(str(tiles), *cells, f"{result.summary()['acc@0.5']:.3f}", f"{seconds:.1f}")
    console = Console()
    console.print(table)
    ratio = results[args.tiles].seconds / results["off"].seconds
    console.print(f"time tiled / untiled: {ratio:.1f}x")


if __name__ == "__main__":
    main()
