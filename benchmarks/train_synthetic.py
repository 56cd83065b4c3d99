"""The learning benchmark: ``sceneloc train --preset synthetic-cpu`` from scratch on CPU.

Makes a train set (3,000 synthetic images, seed 0) and, with another seed (7), 450 images
split into val (picks the best checkpoint), test and compositional; trains for a time
budget, then evaluates the best checkpoint on test + compositional (`sceneloc evaluate`).
``--task describe`` trains the region describer instead and evaluates its captions of the
test regions (exact, BLEU, CIDEr-D, and the round trip through ``native-synth``).
Run from the repository root:

    python benchmarks/train_synthetic.py [--task locate|describe] [--minutes 15] [--work DIR]

Prints the learning curve (``metrics.csv``) and the evaluation by split and query type.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sceneloc.data import read_samples, write_samples


def sceneloc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sceneloc", *args], check=True)


def split_files(annotations: Path) -> tuple[Path, Path]:
    """``val.jsonl`` (chooses the best checkpoint) and ``test.jsonl`` (test + compositional)."""
    val, test = annotations.with_name("val.jsonl"), annotations.with_name("test.jsonl")
    write_samples(val, (s for s in read_samples(annotations) if s.split == "val"))
    write_samples(test, (s for s in read_samples(annotations) if s.split != "val"))
    return val, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("locate", "describe"), default="locate")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--work", type=Path, default=Path("runs/learning"))
    args = parser.parse_args()
    train_dir, test_dir, run = args.work / "train", args.work / "test", args.work / "run"
    if not (train_dir / "annotations.jsonl").exists():
        sceneloc("data", "synth", "--out", str(train_dir), "--num-images",
                 str(args.train_images), "--seed", "0", "--splits", "train=1")  # fmt: skip
    if not (test_dir / "annotations.jsonl").exists():
        sceneloc("data", "synth", "--out", str(test_dir), "--num-images", "450", "--seed", "7",
                 "--splits", "val=0.34,test=0.33,compositional=0.33")  # fmt: skip
    val, test = split_files(test_dir / "annotations.jsonl")
    shutil.rmtree(run, ignore_errors=True)  # a fresh run each time; the data is kept
    sceneloc("train", "--task", args.task, "--preset", "synthetic-cpu",
             "--data", str(train_dir / "annotations.jsonl"), "--val", str(val),
             "--out", str(run), "--epochs", "100", "--max-minutes", str(args.minutes))  # fmt: skip
    console = Console()
    curve = Table(title="learning curve (validation: the val split)")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    columns = [c for c in rows[0] if c != "lr"]
    for column in columns:
        curve.add_column(column, justify="right")
    for row in rows:
        curve.add_row(*(row[c] if c in ("epoch", "step", "seconds") else f"{float(row[c]):.3f}"
                        for c in columns))  # fmt: skip
    console.print(curve)
    if args.task == "locate":
        sceneloc("evaluate", "--data", str(test), "--model", str(run / "best"))
        return
    for split in ("test", "compositional"):
        sceneloc("evaluate", "--task", "describe", "--data", str(test_dir / "descriptions.jsonl"),
                 "--split", split, "--model", str(run / "best"), "--listener", "native-synth",
                 "--no-meteor")  # fmt: skip


if __name__ == "__main__":
    main()
