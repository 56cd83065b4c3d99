"""Event boxes: one box around the several things a query names, assembled from phrase boxes.

On fresh synthetic scenes, each ``group`` query ("the red circle inside the blue square",
"three orange stars in a column") and ``relation`` query ("the triangle left of the blue
square") is answered three ways, and each answer is scored by Acc@0.5 (IoU >= 0.5) against
the box around every object the query names (a group's box; a relation's target and
anchor together):

- **assembled**: :func:`sceneloc.events.locate_events` over a per-phrase grounder (each
  participant phrase asked alone: "the red circle", "the blue square"; the whole query's
  box is one more candidate for the first), the union box of the best-placed combination,
  as ``locate(..., events=True)`` answers on a backend that did not learn event boxes;
- **phrases alone**: the same without the whole query's box;
- **best phrase box**: the highest-scoring box of any of those phrases, alone (what a
  grounder that picks one box per query gives);
- **learnt**: the bundled native model asked the whole query (its learnt group boxes; on
  relations it was trained to box the target alone);
- **events=True (native)**: what ``locate(..., events=True)`` gives on the bundled model,
  which learnt event boxes: its own box where it holds the assembled one, else the union.

Run from the repository root:

    python benchmarks/event_boxes.py [--model native-synth] [--images 100] [--seed 2027]

``--model`` is the per-phrase grounder (a short name or a model directory, for example a
fine-tuned Grounding DINO). ``--domain a`` or ``b`` draws the scenes of the transfer
benchmark's domain instead (``benchmarks/build_transfer_base.py``: its colours, shapes,
ground and small images), for a grounder trained there. Every answer is taken at threshold
0, so accuracy measures boxes, not refusals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import sceneloc
from sceneloc.boxes import iou_matrix, union_box
from sceneloc.events import locate_events, split_event

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_transfer_base import DOMAIN_A, DOMAIN_B, SCENES  # the sibling script

#: The transfer benchmark's domains, drawn with its scene settings but event queries.
DOMAINS = {"a": DOMAIN_A, "b": DOMAIN_B}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="native-synth", help="the per-phrase grounder")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--domain", choices=["full", *DOMAINS], default="full")
    args = parser.parse_args()
    phrases = sceneloc.load(args.model, device=args.device)
    learnt = sceneloc.load("native-synth", device=args.device)

    def assembled(image, texts, query_for_head=True):
        with torch.inference_mode():  # as Grounder.locate calls the backend
            found = locate_events(phrases.backend.predict, image, texts, 0.0, 1,
                                  query_for_head=query_for_head)  # fmt: skip
        return [r.box for r in found]

    ways = {
        "assembled": assembled,
        "phrases alone": lambda image, texts: assembled(image, texts, query_for_head=False),
        "best phrase box": lambda image, texts: [best_phrase_box(phrases, image, t) for t in texts],
        "learnt": lambda image, texts: [r.box for r in learnt.locate(image, texts, 0.0, 1)],
        "events=True (native)": lambda image, texts: [
            r.box for r in learnt.locate(image, texts, 0.0, 1, events=True)
        ],
    }
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {way: [] for way in ways})
    seconds = {way: 0.0 for way in ways}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "scenes"
        subprocess.run([sys.executable, "-m", "sceneloc", "data", "synth", "--out", str(data),
                        "--num-images", str(args.images), "--seed", str(args.seed),
                        "--splits", "test=1", "--query-types", "relation,group",
                        *domain_options(args.domain)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        for line in (data / "scenes.jsonl").read_text().splitlines():
            scene = json.loads(line)
            image = sceneloc.load_image(data / scene["image"]).image
            boxes = {o["id"]: o["box"] for o in scene["objects"]}
            texts = [q["query"] for q in scene["queries"]]
            answers = {}
            for way, answer in ways.items():
                started = time.perf_counter()
                answers[way] = answer(image, texts)
                seconds[way] += time.perf_counter() - started
            for index, query in enumerate(scene["queries"]):
                truth = union_box([boxes[i] for i in query["named"]])
                kind = query["type"] if query["type"] == "relation" else arrangement(query)
                for way in ways:
                    box = answers[way][index]
                    hits[kind][way].append(
                        box is not None and iou_matrix([box], [truth])[0, 0] >= 0.5
                    )
    report(args, hits, seconds)


def domain_options(domain: str) -> list[str]:
    """``sceneloc data synth`` options of a transfer domain (none for the full one)."""
    if domain not in DOMAINS:
        return []
    settings = {k: v for k, v in SCENES.items() if k != "query-types"}
    return [f"--{k}={v}" for k, v in {**settings, **DOMAINS[domain]}.items()]


def best_phrase_box(grounder: sceneloc.Grounder, image, text: str) -> list[float] | None:
    """The highest-scoring box of any of the query's participant phrases."""
    asked = [p.phrase for p in split_event(text).participants]
    found = [r for r in grounder.locate(image, asked, 0.0, 1) if r.found]
    return max(found, key=lambda r: r.score).box if found else None


def arrangement(query: dict) -> str:
    return f"group: {query['spec']['arrangement']}"


def report(args: argparse.Namespace, hits: dict, seconds: dict[str, float]) -> None:
    console = Console(width=120)
    ways = list(seconds)
    table = Table(
        title=f"Acc@0.5 against the box of everything named: phrases by {args.model}, "
        f"learnt by native-synth ({args.images} images, seed {args.seed}, "
        f"domain {args.domain})"
    )
    for column in ("queries", "n", *ways):
        table.add_column(column, justify="left" if column == "queries" else "right")
    kinds = sorted(hits)
    rows = {kind: hits[kind] for kind in kinds}
    for total, among in (
        ("all group", [k for k in kinds if k.startswith("group")]),
        ("all", kinds),
    ):
        rows[total] = {w: [hit for k in among for hit in hits[k][w]] for w in ways}
    for kind, row in rows.items():
        table.add_row(kind, str(len(row["assembled"])), *(f"{np.mean(row[w]):.3f}" for w in ways))
    console.print(table)
    n = len(rows["all"]["assembled"])
    console.print(
        "ms per query: " + ", ".join(f"{w} {1000 * seconds[w] / max(n, 1):.1f}" for w in ways)
    )
    console.print("command: python benchmarks/event_boxes.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
