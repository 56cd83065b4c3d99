"""Calibrated "not there": after ``sceneloc calibrate``, how many absent queries a model
refuses and how many present ones it keeps, on fresh synthetic scenes it was not fitted on.

Without ``--model`` the model is a copy of the bundled ``native-synth`` with its presence
calibration removed (``presence_calibration`` set back to ``[1, 0, 0]`` in the copy's
``config.json``): the presence head alone, which refuses no absent query at 0.5. Each
``--method`` is fitted by ``sceneloc calibrate`` on validation scenes of one seed and
measured on test scenes of another: each image's own queries (present) and as many whose
referent is certainly absent (a colour-shape pair of the domain missing from the scene, as
the calibration makes them), before (the model's default threshold) and after (0.5).

    python benchmarks/calibrate.py --out /work/runs/calibrate/native
    python benchmarks/calibrate.py --model /work/runs/transfer/b/run/best --domain b \\
        --out /work/runs/calibrate/transfer-b

``--domain a`` or ``b``: the scenes of the transfer benchmark's domains
(``benchmarks/build_transfer_base.py``); ``full`` (the default): the generator's whole
vocabulary and every query type. Prints the figures and the commands; writes
OUT/calibrate.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sceneloc as library
from build_transfer_base import DOMAIN_A, DOMAIN_B, make_domain, run, sceneloc  # the sibling
from sceneloc.calibration import query_scores, rates
from sceneloc.registry import Capability, resolve

#: The fresh scenes: the seeds of no training run (native-synth's README figures use 11).
VAL_SEED, TEST_SEED = 31, 11
DOMAINS = {"a": DOMAIN_A, "b": DOMAIN_B}
#: The target: both at least this, after calibration.
TARGET = 0.90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model to calibrate (default: native-synth uncalibrated).")
    parser.add_argument("--domain", choices=["full", *DOMAINS], default="full")
    parser.add_argument("--method", action="append", choices=["platt", "presence"],
                        help="Repeat for several (default: both for a native model, else "
                        "platt).")  # fmt: skip
    parser.add_argument("--val-images", type=int, default=60)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    model = args.model or str(uncalibrated_native(out / "native-synth-uncalibrated"))
    val = make_scenes(out / "val", args.domain, VAL_SEED, "val", args.val_images, commands)
    test = make_scenes(out / "test", args.domain, TEST_SEED, "test", args.test_images, commands)
    family = resolve(model).family
    methods = args.method or (
        ["platt", "presence"] if Capability.PRESENCE_SCORE in family.capabilities else ["platt"]
    )
    before = measure(model, test)
    rows: dict[str, Any] = {"before": before}
    for method in methods:
        calibrated = out / f"calibrated-{method}"
        run(sceneloc("calibrate", "--model", model, "--data", str(val), "--out", str(calibrated),
                     "--method", method, "--device", "cpu"), commands)  # fmt: skip
        rows[method] = measure(str(calibrated), test)
    print(f"\n{model} on {args.test_images} fresh scenes ({test}), domain {args.domain}:")
    print("| score | threshold | absent refused | present kept | kept, right box | ROC AUC |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['threshold']:g} | {row['absent_refused']:.3f} | "
              f"{row['present_kept']:.3f} | {row['present_kept_right_box']:.3f} | "
              f"{row['roc_auc']:.3f} |")  # fmt: skip
    for method in methods:
        row = rows[method]
        met = row["absent_refused"] >= TARGET and row["present_kept"] >= TARGET
        print(f"{method}: target (refused and kept >= {TARGET}) {'met' if met else 'NOT met'}")
    summary = {"model": model, "domain": args.domain, "val": str(val), "test": str(test),
               "figures": rows, "commands": commands}  # fmt: skip
    (out / "calibrate.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print("commands:", *commands, sep="\n  ")
    return 0


def uncalibrated_native(copy: Path) -> Path:
    """The bundled model's files with ``presence_calibration`` back to ``[1, 0, 0]``."""
    source = Path(resolve("native-synth").checkpoint)
    copy.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        (copy / entry.name).write_bytes(entry.read_bytes())
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    config["presence_calibration"] = [1.0, 0.0, 0.0]
    (copy / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    print(f"{copy}: native-synth with presence_calibration [1.0, 0.0, 0.0]", flush=True)
    return copy


def make_scenes(
    out: Path, domain: str, seed: int, split: str, images: int, commands: list[str]
) -> Path:
    """A samples file of fresh scenes (``scenes.jsonl`` beside it, for the absent queries)."""
    if domain in DOMAINS:
        return make_domain(out, DOMAINS[domain], seed, {split: images}, commands)[split]
    splits = "val=1" if split == "val" else "test=0.5,compositional=0.5"
    run(sceneloc("data", "synth", "--out", str(out), "-n", str(images), "--seed", str(seed),
                 "--splits", splits, "--overwrite"), commands)  # fmt: skip
    return out / "annotations.jsonl"


def measure(model: str, data: Path) -> dict[str, float]:
    """Refused, kept and ROC AUC of ``model`` on ``data`` at its default threshold."""
    grounder = library.load(model, device="cpu")
    scores = query_scores(grounder, data, limit=None, seed=TEST_SEED)
    return rates(scores, grounder.backend.default_threshold)


if __name__ == "__main__":
    sys.exit(main())
