"""Several targets or none: gRefCOCO's metrics of a model on fresh synthetic scenes.

Draws synthetic test scenes with every query type, the opt-in ``multiple`` ("all the red
stars", "the two circles on the left") and ``absent`` (a missing colour-shape pair, a
present target placed relative to a missing anchor, a relation that holds of nothing)
among them, and evaluates the model at its default threshold, as ``sceneloc evaluate``
does. Run from the repository root:

    python benchmarks/multi_target.py [--model native-synth] [--images 200] [--seed 12]

Prints, by query type and overall: Precision@(F1=1, IoU>=0.5) on the model's targets,
N-acc (no-target queries refused), T-acc (target queries not refused) and Acc@0.5 of the
best box (a refusal counts as a miss); then the figures the targets are set on: N-acc,
Precision@F1=1, T-acc and Acc@0.5 over the single-target queries.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import sceneloc
from sceneloc.data.synth import ALL_QUERY_TYPES, QUERY_TYPES
from sceneloc.evaluation import evaluate_model

COLUMNS = ("n", "precision@f1=1", "n-acc", "t-acc", "acc@0.5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="native-synth")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    grounder = sceneloc.load(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "scenes"
        subprocess.run([sys.executable, "-m", "sceneloc", "data", "synth", "--out", str(data),
                        "--num-images", str(args.images), "--seed", str(args.seed),
                        "--splits", "test=0.5,compositional=0.5",
                        "--query-types", ",".join(ALL_QUERY_TYPES)], check=True)  # fmt: skip
        result = evaluate_model(data / "annotations.jsonl", grounder, threshold=None)
    metrics = result.to_dict()
    threshold = grounder.backend.default_threshold
    table = Table(title=f"{args.model} at its default threshold {threshold} (seed {args.seed})")
    for column in ("type", *COLUMNS):
        table.add_column(column, justify="left" if column == "type" else "right")
    for name, row in [*metrics["by_type"].items(), ("all", metrics)]:
        table.add_row(name, *(_cell(row[c]) for c in COLUMNS))
    Console().print(table)
    single = np.isin(np.asarray(result.types), QUERY_TYPES)
    print(
        f"N-acc {metrics['n-acc']:.3f}, Precision@F1=1 {metrics['precision@f1=1']:.3f}, "
        f"T-acc {metrics['t-acc']:.3f}, Acc@0.5 on single-target queries "
        f"{result.summary(single)['acc@0.5']:.3f} ({int(single.sum())} of {result.n} queries)"
    )


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
