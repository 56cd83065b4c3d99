"""Instance masks, the one copy: COCO run-length encoding and placing a tile's masks.

A mask is an ``H x W`` bool array the size of the image its box refers to; a query's masks
are stacked ``n x H x W``. On the wire a mask is COCO's compressed run-length encoding
(``{"size": [h, w], "counts": "..."}``), the form COCO results files, pycocotools and most
segmentation tools read, written by pycocotools itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """One ``H x W`` mask as COCO compressed RLE, ``counts`` as text so it goes into JSON."""
    encoded = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The ``H x W`` bool mask of a COCO RLE, compressed (text or bytes) or not (a list)."""
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed: run lengths, column by column, zeros first
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str):
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


def paste(masks: np.ndarray, width: int, height: int, dx: int, dy: int) -> np.ndarray:
    """``n x h x w`` masks placed at ``(dx, dy)`` in ``n x height x width`` empty ones.

    What falls outside the larger image is cut off: a tile's masks into the whole image.
    """
    placed = np.zeros((len(masks), height, width), dtype=bool)
    tile_height, tile_width = masks.shape[1:]
    x1, y1 = max(dx, 0), max(dy, 0)
    x2, y2 = min(dx + tile_width, width), min(dy + tile_height, height)
    if x1 < x2 and y1 < y2:
        placed[:, y1:y2, x1:x2] = masks[:, y1 - dy : y2 - dy, x1 - dx : x2 - dx]
    return placed
