"""It transfers: fine-tune the transfer base model (a small Grounding DINO the project trained on
synthetic domain A, ``benchmarks/build_transfer_base.py``) for a few CPU-minutes on domain B,
which it never saw (other colours, other shapes, a dark ground), and print Acc@0.5 on B's
held-out test scenes before and after.

    python benchmarks/finetune_transfer.py --base /work/runs/transfer/base/run/best \\
        --out /work/runs/transfer/b --minutes 15

Without ``--base`` it builds the base first (``--base-minutes`` of training on domain A). Writes
OUT/data-b (domain B's train, val and test, another seed), OUT/run (the ``sceneloc finetune``
run: report.md holds validation figures before and after) and OUT/transfer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_transfer_base import (  # the sibling script
    DOMAIN_B,
    SCENES,
    add_run_length_options,
    evaluate,
    finetune_command,
    headline,
    make_domain,
    run,
)
from build_transfer_base import main as build_base

#: ``sceneloc finetune`` options on domain B: the new words need the text tower to learn at the
#: full rate; batch 2 (transformers' batched loss is wrong from 3).
TRANSFER_TRAINING = {"lr": 3e-4, "backbone-lr": 3e-4, "batch-size": 2, "seed": 0}
TRANSFER_CONFIG = {"warmup_fraction": 0.03, "grad_clip": 1.0, "val_limit": 45}


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


class LoadSampler(threading.Thread):
    """The 1-minute load average every ``every`` seconds while the fine-tuning runs: how
    busy the machine was (other jobs share the CPU)."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.done = every, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        values = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2),
                "samples": len(self.samples)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="The base checkpoint (default: build it).")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/transfer/b"))
    parser.add_argument("--minutes", type=float, default=15.0, help="Fine-tuning budget.")
    parser.add_argument("--base-minutes", type=float, default=25.0)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=15)
    parser.add_argument("--test-images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2, help="Domain B's data seed.")
    add_run_length_options(parser)
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "run").exists():
        print(f"{out / 'run'} already holds a run; choose another --out", file=sys.stderr)
        return 2
    base = args.base
    if base is None:
        status = build_base(["--out", str(out / "base"), "--minutes", str(args.base_minutes)])
        if status:
            return status
        base = out / "base" / "run" / "best"
    if not (base / "config.json").is_file():
        print(f"no checkpoint in {base}", file=sys.stderr)
        return 2
    commands: list[str] = []
    images = {"train": args.train_images, "val": args.val_images, "test": args.test_images}
    data = make_domain(out / "data-b", DOMAIN_B, args.seed, images, commands)
    before = evaluate(base, data["test"])
    print(f"before, base on domain B's test ({before['n']} queries): {headline(before)}")
    load_before = load_average()
    sampler = LoadSampler()
    sampler.start()
    started = time.perf_counter()
    training = {**TRANSFER_TRAINING, "absent-fraction": args.absent_fraction}
    command = finetune_command(
        base, data, out / "run", args.minutes, training, TRANSFER_CONFIG, args.epochs
    )
    try:
        run(command, commands)
    finally:
        sampler.done.set()
    seconds = time.perf_counter() - started
    load_after = load_average()
    load_during = sampler.summary()
    best = out / "run" / "best"
    after = evaluate(best, data["test"])
    gain = after["acc@0.5"] - before["acc@0.5"]
    print(f"after {args.minutes:g} minutes on domain B's train: {headline(after)}")
    print(f"Acc@0.5 on domain B's test: {before['acc@0.5']:.3f} -> {after['acc@0.5']:.3f} "
          f"(gain {gain:+.3f}); fine-tuning took {seconds / 60:.1f} min "
          f"(load average {load_before} before, {load_after} after; 1-minute load "
          f"during it: mean {load_during['mean']}, max {load_during['max']})")  # fmt: skip
    print(f"report: {out / 'run' / 'report.md'}")
    summary = {
        "base": str(base), "domain_b": DOMAIN_B, "scenes": SCENES, "images": images,
        "seed": args.seed, "minutes": args.minutes, "epochs": args.epochs, "training": training,
        "config": TRANSFER_CONFIG, "commands": commands, "seconds": round(seconds, 1),
        "load_before": load_before, "load_after": load_after, "load_during": load_during,
        "cpu_count": os.cpu_count(), "before": before,
        "after": after, "gain": gain, "report": str(out / "run" / "report.md"),
    }  # fmt: skip
    (out / "transfer.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
