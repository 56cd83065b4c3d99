"""Fit a native model's presence score on tiles, for ``locate(..., tiles=...)``.

Fitted on whole scenes, the presence score is sure of itself in almost every tile of a
huge scene: a tile always holds something like the referent, and a relation's anchor may
lie outside it. This draws synthetic scenes larger than the ones the model was trained on
(objects at the trained scale, ``--object-size-base``), cuts them into tiles as
``sceneloc.tiling`` does, and fits the presence weights to tell the tiles whose answer is
the referent (IoU >= 0.5) from all the others. The weights and the tile side go into the
model's ``config.json`` (``tile_presence_calibration``, ``tile_side``). For the bundled
model, after any retraining, one command:

    python scripts/calibrate_native_tiles.py

(``--model DIR`` for another native model; the scenes are drawn once into ``--work``.)
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sceneloc.api import load_backend
from sceneloc.backends.native import BUNDLED
from sceneloc.boxes import iou_matrix
from sceneloc.data import read_samples
from sceneloc.data.synth import generate, make_domain
from sceneloc.native.processing import to_pixels
from sceneloc.tiling import tile_windows
from sceneloc.training.native.calibration import fit_presence
from sceneloc.training.native.dataset import group_by_image

logger = logging.getLogger("calibrate_native_tiles")


def draw_scenes(out: Path, args: argparse.Namespace) -> Path:
    """The calibration scenes (drawn once): ``annotations.jsonl`` in ``out``."""
    annotations = out / "annotations.jsonl"
    if not annotations.exists():
        domain = make_domain(object_size_base=args.tile_side)
        generate(out, args.images, args.seed, size=args.size, min_objects=args.min_objects,
                 max_objects=args.max_objects, domain=domain)  # fmt: skip
    return annotations


def tile_features(backend, image: Image.Image, queries, targets, side: int, overlap: float):
    """Presence features of every (tile, query), and whether the tile's answer is the target."""
    windows = tile_windows(*image.size, side, overlap)
    features, right = [], []
    for start in range(0, len(windows), backend.tile_batch_size):
        chunk = windows[start : start + backend.tile_batch_size]
        tiles = [image.crop(tuple(window)) for window in chunk.tolist()]
        outputs = backend.forward(tiles, queries)
        features.append(backend.model.presence_features(outputs).cpu())
        boxes = outputs.boxes.float().cpu().numpy().reshape(len(tiles), len(queries), 4)
        for (x1, y1, x2, y2), tile_boxes in zip(chunk, boxes):
            moved = to_pixels(tile_boxes, x2 - x1, y2 - y1) + np.array([x1, y1, x1, y1])
            right.append(np.diag(iou_matrix(moved, targets)) >= 0.5)
    return torch.cat(features), torch.from_numpy(np.concatenate(right))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUNDLED, help="a native model directory")
    parser.add_argument("--work", type=Path, default=Path("runs/native-tiles"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=2048, help="a seed no training used")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile-side", type=int, default=512, help="the trained scenes' side")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--min-objects", type=int, default=100)
    parser.add_argument("--max-objects", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    annotations = draw_scenes(args.work / "scenes", args)
    backend = load_backend(str(args.model), device="cpu", dtype="float32")
    present, absent = [], []
    for group in group_by_image(read_samples(annotations), annotations.parent):
        image = Image.open(group.path).convert("RGB")
        features, right = tile_features(
            backend, image, group.queries, np.asarray(group.boxes), args.tile_side, args.overlap
        )
        present.append(features[right])
        absent.append(features[~right])
    calibration = fit_presence(torch.cat(present), torch.cat(absent))
    logger.info(
        "tile presence: %d (tile, query) pairs, %.3f of right answers kept and %.3f of wrong "
        "ones refused at 0.5; weights %s",
        calibration.queries, calibration.present_kept, calibration.absent_refused,
        calibration.weights,
    )  # fmt: skip
    path = args.model / "config.json"
    config = json.loads(path.read_text())
    config["tile_side"] = args.tile_side
    config["tile_presence_calibration"] = calibration.weights
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    logger.info("written to %s", path)


if __name__ == "__main__":
    main()
