"""The seeds' command line, kept working: it maps onto ``sceneloc`` commands.

    python main.py --mode infer --image street.jpg --query "a vendor selling vegetables" \\
        --ckpt native-synth
    python main.py --mode train --dataset_dir data/ --split train --year 2014

``--mode train`` reads the refer layout under ``--dataset_dir``
(``<dataset>/refs(<split_by>).p`` and ``<dataset>/instances.json``, COCO images in
``train<year>/`` or ``images/train<year>/``), converts it with
``sceneloc data prepare refcoco`` and trains with ``sceneloc train``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sceneloc.cli import app


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("infer", "train"), required=True)
    parser.add_argument("--image", help="infer: the image")
    parser.add_argument("--query", action="append", help="infer: what to find (repeatable)")
    parser.add_argument("--ckpt", default="native-synth", help="infer: model dir or name")
    parser.add_argument("--dataset_dir", help="train: folder with the refer layout")
    parser.add_argument("--dataset", default="refcoco", help="train: refcoco, refcoco+, refcocog")
    parser.add_argument("--split_by", default="unc", help="train: unc, umd or google")
    parser.add_argument("--split", default="train", help="train: the split to train on")
    parser.add_argument("--year", default="2014", help="train: COCO images year")
    parser.add_argument("--preset", default="resnet50-bert", help="train: sceneloc train preset")
    parser.add_argument("--epochs", default=None, help="train: epochs")
    parser.add_argument("--out", default="runs/main", help="train: output folder")
    return parser.parse_args(argv)


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The ``sceneloc`` command lines that do what the seeds' options asked for."""
    if args.mode == "infer":
        if not args.image or not args.query:
            raise UsageError("--mode infer needs --image and --query")
        queries = [part for query in args.query for part in ("-q", query)]
        return [["locate", args.image, *queries, "--model", args.ckpt]]
    if not args.dataset_dir:
        raise UsageError("--mode train needs --dataset_dir")
    root = Path(args.dataset_dir)
    folder = f"train{args.year}"
    images = next(
        (p for p in (root / folder, root / "images" / folder) if p.is_dir()), root / folder
    )
    data = Path(args.out) / f"{args.dataset}-{args.split}.jsonl"
    train = ["train", "--data", str(data), "--out", args.out, "--preset", args.preset]
    return [
        ["data", "prepare", "refcoco", "--refer-root", str(root), "--images", str(images),
         "--dataset", args.dataset, "--split-by", args.split_by, "--split", args.split,
         "--out", str(data)],
        train + (["--epochs", str(args.epochs)] if args.epochs else []),
    ]  # fmt: skip


class UsageError(Exception):
    """Options the seeds' command line needs but did not get."""


def main(argv: list[str] | None = None) -> int:
    try:
        planned = commands(parse(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for command in planned:
        try:
            app(command, prog_name="sceneloc")
        except SystemExit as exit_:
            if exit_.code:
                return int(exit_.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
