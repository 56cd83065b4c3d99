"""Train the bundled ``native-synth`` model and install it into the package.

This is how the shipped weights were made (on the project's 2-core CPU machine):

    python scripts/train_native_synth.py [--minutes 60] [--work runs/native-synth]

It draws 6,000 training scenes (seed 100, every query type: several targets and none too)
and a validation set with another seed (7), trains the ``synthetic-cpu`` preset, copies
``best/`` to ``src/sceneloc/native/weights/native-synth`` and calibrates its presence score
on 300 more scenes (seed 9) with every query type, so that the absent queries it is fitted
on are those of the ``absent`` type (a missing anchor, a size that is not there), not only
made missing pairs. ``--init-from DIR`` fine-tunes a
trained model instead of starting from scratch (the shipped weights were made so, from the
previous bundled model: ``--init-from src/sceneloc/native/weights/native-synth``; the command
the README gives). Then measure it on fresh scenes as the
README shows (``sceneloc data synth --seed 11 ...`` and ``sceneloc evaluate``).

``--calibrate-only`` keeps the installed weights and only calibrates their presence score
again on those scenes.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import sceneloc
from sceneloc.data import read_samples, write_samples
from sceneloc.data.synth import ALL_QUERY_TYPES
from sceneloc.training import train
from sceneloc.training.native import NativeOptions
from sceneloc.training.native.calibration import calibrate_presence
from sceneloc.training.native.task import CALIBRATION_QUERIES

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src/sceneloc/native/weights/native-synth"


def synth(out: Path, images: int, seed: int, splits: str, *extra: str) -> None:
    if not (out / "annotations.jsonl").exists():
        subprocess.run(
            [sys.executable, "-m", "sceneloc", "data", "synth", "--out", str(out),
             "--num-images", str(images), "--seed", str(seed), "--splits", splits, *extra],
            check=True,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--work", type=Path, default=Path("runs/native-synth"))
    parser.add_argument("--calibrate-only", action="store_true")
    parser.add_argument("--init-from", type=Path, help="a trained model to fine-tune")
    parser.add_argument("--images", type=int, default=6000, help="training scenes")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_dir, val_dir = args.work / "train", args.work / "val"
    every_type = ("--query-types", ",".join(ALL_QUERY_TYPES))
    calibration = args.work / "calibration"
    synth(calibration, 300, 9, "test=0.5,compositional=0.5", *every_type)
    if args.calibrate_only:
        calibrate_installed(calibration / "annotations.jsonl")
        return
    synth(val_dir, 300, 7, "test=0.5,compositional=0.5")
    val = val_dir / "test.jsonl"
    samples = read_samples(val_dir / "annotations.jsonl")
    write_samples(val, (sample for sample in samples if sample.split == "test"))
    synth(train_dir, args.images, 100, "train=1", *every_type)
    extra = {"lr": args.lr} if args.lr else {}
    if args.init_from:  # copied first: installing replaces the folder it may name
        start = args.work / "init"
        shutil.rmtree(start, ignore_errors=True)
        shutil.copytree(args.init_from, start)
        extra["init_from"] = str(start)
    options = NativeOptions.build(
        "synthetic-cpu", data=str(train_dir / "annotations.jsonl"), val=str(val),
        out=str(args.work / "run"), epochs=40, max_minutes=args.minutes,
        val_limit=300, **extra,
    )  # fmt: skip
    train(options)
    shutil.rmtree(PACKAGE_WEIGHTS, ignore_errors=True)
    shutil.copytree(args.work / "run" / "best", PACKAGE_WEIGHTS)
    calibrate_installed(calibration / "annotations.jsonl")
    logging.info("installed %s", PACKAGE_WEIGHTS)


def calibrate_installed(val: Path) -> None:
    """Calibrate the installed model's presence score on ``val``; its weights stay as they are."""
    backend = sceneloc.load(str(PACKAGE_WEIGHTS), device="cpu").backend
    calibrate_presence(backend, val, limit=CALIBRATION_QUERIES)
    backend.config.save_pretrained(PACKAGE_WEIGHTS)


if __name__ == "__main__":
    main()
