"""Saying "not there": how often a model keeps present referents and refuses absent ones.

Asks each image of a synthetic test set its own queries (present) and queries whose
referent is certainly absent, at the model's default threshold: as many plain ones (a
colour-shape pair missing from the scene, as training and calibration make them), and each
relation query again with its target swapped for a missing pair ("the red star above the
small circle" where there is no red star). Run from the repository root:

    python benchmarks/presence.py [--model native-synth] [--images 200] [--seed 11]

Prints, by query type, the share of present queries kept (and kept with the right box) and
the ROC AUC of the score against the plain absent queries; then the share of each kind of
absent query refused, and its mean score.
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
from sceneloc.boxes import iou_matrix
from sceneloc.data import read_samples, read_scenes
from sceneloc.data.synth import Desc, RelationQuery, parse_query, render_query, with_target
from sceneloc.training.native.dataset import ImageGroup, group_by_image
from sceneloc.training.native.queries import MissingPairs


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
        absent_queries = MissingPairs(groups, read_scenes(data / "scenes.jsonl"))
        rng = np.random.default_rng(args.seed)
        kinds = {(sample.image_path(data), sample.query): sample.type for sample in samples}
        present: list[tuple[str, float, bool]] = []  # type, score, right box
        absent: dict[str, list[float]] = {"plain": [], "relation, target swapped": []}
        for group in groups:
            plain = [q for q in (absent_queries.sample(group, rng) for _ in group.queries) if q]
            swapped = swapped_relations(group, absent_queries, rng)
            asked = group.queries + plain + swapped
            found = grounder.locate(group.path, asked, threshold=0.0, top_k=1)
            for result, box in zip(found, group.boxes):
                right = iou_matrix([result.box], [box])[0, 0] >= 0.5
                present.append((kinds[group.path, result.query], result.score, bool(right)))
            scores = [result.score for result in found[len(group.queries) :]]
            absent["plain"] += scores[: len(plain)]
            absent["relation, target swapped"] += scores[len(plain) :]
    console = Console()
    table = Table(title=f"{args.model} at its default threshold {threshold}: present queries")
    for column in ("queries", "n", "kept", "kept, right box", "AUC against plain absent"):
        table.add_column(column)
    plain_scores = np.array(absent["plain"])
    for kind in [*sorted({p[0] for p in present}), "all"]:
        rows = [p for p in present if kind in ("all", p[0])]
        scores = np.array([score for _, score, _ in rows])
        kept = scores >= threshold
        right = np.array([r for _, _, r in rows])
        auc = (scores[:, None] > plain_scores[None, :]).mean()
        table.add_row(kind, str(len(rows)), f"{kept.mean():.3f}", f"{(kept & right).mean():.3f}",
                      f"{auc:.3f}")  # fmt: skip
    console.print(table)
    refused = Table(title="absent queries")
    for column in ("kind", "n", "refused", "mean score"):
        refused.add_column(column)
    for kind, scores in absent.items():
        refused.add_row(kind, str(len(scores)), f"{(np.array(scores) < threshold).mean():.3f}",
                        f"{np.mean(scores):.3f}")  # fmt: skip
    console.print(refused)


def swapped_relations(
    group: ImageGroup, absent_queries: MissingPairs, rng: np.random.Generator
) -> list[str]:
    """Each relation query of the image with its target replaced by a colour-shape pair the
    scene lacks: nothing can match it, whatever the relation."""
    lacking = absent_queries.missing_pairs(group) or []
    swapped = []
    for query in group.queries:
        spec = parse_query(query)
        if isinstance(spec, RelationQuery) and lacking:
            color, shape = lacking[rng.integers(len(lacking))]
            swapped.append(render_query(with_target(spec, Desc(shape=shape, color=color))))
    return swapped


if __name__ == "__main__":
    main()
