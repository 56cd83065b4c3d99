"""The learning benchmark: ``sceneloc train --preset synthetic-cpu`` from scratch on CPU.

Makes a train set (3,000 synthetic images, seed 0) and a test set with another seed
(300 images: test and compositional splits), trains for a time budget, then evaluates
the best checkpoint with ``sceneloc evaluate``. Run from the repository root:

    python benchmarks/train_synthetic.py [--minutes 15] [--work runs/learning]

Prints the learning curve (``metrics.csv``) and Acc@0.5 by split and query type.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def sceneloc(*args: str, capture: bool = False) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sceneloc", *args], check=True, text=True,
        stdout=subprocess.PIPE if capture else None,
    )  # fmt: skip
    return done.stdout or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--work", type=Path, default=Path("runs/learning"))
    args = parser.parse_args()
    train_dir, test_dir, run = args.work / "train", args.work / "test", args.work / "run"
    if not (train_dir / "annotations.jsonl").exists():
        sceneloc("data", "synth", "--out", str(train_dir), "--num-images",
                 str(args.train_images), "--seed", "0", "--splits", "train=1")  # fmt: skip
    if not (test_dir / "annotations.jsonl").exists():
        sceneloc("data", "synth", "--out", str(test_dir), "--num-images", "300", "--seed", "7",
                 "--splits", "test=0.5,compositional=0.5")  # fmt: skip
    sceneloc("train", "--preset", "synthetic-cpu", "--data", str(train_dir / "annotations.jsonl"),
             "--val", str(test_dir / "annotations.jsonl"), "--out", str(run),
             "--epochs", "100", "--max-minutes", str(args.minutes))  # fmt: skip
    data = str(test_dir / "annotations.jsonl")
    evaluation = sceneloc("evaluate", "--data", data, "--model", str(run / "best"), "--json",
                          capture=True)  # fmt: skip
    metrics = json.loads(evaluation)
    console = Console()
    curve = Table(title="learning curve (validation = the test set, 2,000 queries at most)")
    for column in ("epoch", "step", "seconds", "train_loss", "val_acc"):
        curve.add_column(column, justify="right")
    for row in csv.DictReader((run / "metrics.csv").open()):
        loss, accuracy = float(row["train_loss"]), float(row["val_acc"])
        curve.add_row(row["epoch"], row["step"], row["seconds"], f"{loss:.3f}", f"{accuracy:.3f}")
    console.print(curve)
    table = Table(title=f"best checkpoint: Acc@0.5 {metrics['acc@0.5']:.3f} (n={metrics['n']})")
    for column in ("group", "n", "acc@0.5", "miou"):
        table.add_column(column, justify="right")
    for kind in ("by_split", "by_type"):
        for name, values in metrics[kind].items():
            table.add_row(name, str(values["n"]), f"{values['acc@0.5']:.3f}",
                          f"{values['miou']:.3f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
