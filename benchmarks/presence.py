"""Saying "not there": how often a model keeps present referents and refuses absent ones.

Asks each image of a synthetic test set its own queries (present) and as many queries
whose referent is certainly absent (a colour-shape pair missing from the scene, as
training and calibration make them), at the model's default threshold. Run from the
repository root:

    python benchmarks/presence.py [--model native-synth] [--images 200] [--seed 11]

Prints, by query type, the share of present queries kept (and kept with the right box),
the share of absent queries refused, and the ROC AUC of the score between the two.
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
from sceneloc.data import read_samples
from sceneloc.evaluation.metrics import iou_matrix
from sceneloc.native.dataset import AbsentQueries, SceneAnnotations, group_by_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="native-synth")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    grounder = sceneloc.load(args.model, device="cpu")
    threshold = grounder.backend.default_threshold
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "scenes"
        subprocess.run([sys.executable, "-m", "sceneloc", "data", "synth", "--out", str(data),
                        "--num-images", str(args.images), "--seed", str(args.seed),
                        "--splits", "test=0.5,compositional=0.5"], check=True)  # fmt: skip
        samples = list(read_samples(data / "annotations.jsonl"))
        groups = group_by_image(samples, data)
        absent_queries = AbsentQueries(groups, SceneAnnotations.beside(data / "annotations.jsonl"))
        rng = np.random.default_rng(args.seed)
        kinds = {(sample.image_path(data), sample.query): sample.type for sample in samples}
        present: list[tuple[str, float, bool]] = []  # type, score, right box
        absent: list[float] = []
        for group in groups:
            others = [q for q in (absent_queries.sample(group, rng) for _ in group.queries) if q]
            found = grounder.locate(group.path, group.queries + others, threshold=0.0, top_k=1)
            for result, box in zip(found, group.boxes):
                right = iou_matrix([result.box], [box])[0, 0] >= 0.5
                present.append((kinds[group.path, result.query], result.score, bool(right)))
            absent += [result.score for result in found[len(group.queries) :]]
    refused = np.array(absent) < threshold
    table = Table(title=f"{args.model} at its default threshold {threshold}")
    for column in ("queries", "n", "kept", "kept, right box", "absent refused", "AUC"):
        table.add_column(column)
    for kind in [*sorted({p[0] for p in present}), "all"]:
        rows = [p for p in present if kind in ("all", p[0])]
        scores = np.array([score for _, score, _ in rows])
        kept = scores >= threshold
        right = np.array([r for _, _, r in rows])
        auc = (scores[:, None] > np.array(absent)[None, :]).mean()
        table.add_row(kind, str(len(rows)), f"{kept.mean():.3f}", f"{(kept & right).mean():.3f}",
                      f"{refused.mean():.3f} of {len(absent)}", f"{auc:.3f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
