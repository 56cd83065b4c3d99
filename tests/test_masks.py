"""Masks on the wire: COCO run-length encoding, and a tile's masks placed in the whole image."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask

from sceneloc.masks import decode_rle, encode_rle, paste


def shapes() -> np.ndarray:
    """A 5 x 7 mask with a block, a lone pixel and a run across a column boundary."""
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:5] = True
    mask[0, 6] = True
    mask[4, 0] = mask[0, 1] = True
    return mask


def test_rle_round_trip():
    for mask in (shapes(), np.zeros((3, 4), bool), np.ones((3, 4), bool), shapes().T.copy()):
        rle = encode_rle(mask)
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        assert np.array_equal(decode_rle(rle), mask)


def test_rle_is_cocos_column_major_runs_starting_with_zeros():
    # COCO's definition: run lengths down the columns, left to right, the first run zeros.
    mask = np.array([[0, 1], [1, 1], [0, 0]], dtype=bool)  # columns: 0 1 0 | 1 1 0
    uncompressed = {"size": [3, 2], "counts": [1, 1, 1, 2, 1]}
    assert np.array_equal(decode_rle(uncompressed), mask)
    compressed = coco_mask.frPyObjects(uncompressed, 3, 2)
    assert encode_rle(mask)["counts"] == compressed["counts"].decode("ascii")
    as_read = {"size": [3, 2], "counts": encode_rle(mask)["counts"].encode("ascii")}
    assert coco_mask.area(as_read) == mask.sum()


def test_paste_places_a_tiles_masks_and_cuts_what_falls_outside():
    tile = np.ones((2, 3, 4), dtype=bool)
    tile[1, 0, 0] = False
    placed = paste(tile, width=6, height=5, dx=3, dy=1)
    assert placed.shape == (2, 5, 6)
    assert placed[0].sum() == 3 * 3  # a 3 x 4 tile at x = 3 keeps its 3 left columns
    assert placed[0, 1:4, 3:6].all() and not placed[1, 1, 3]
    assert not paste(tile, 6, 5, dx=10, dy=0).any()
    assert paste(tile, 6, 5, dx=-2, dy=-1)[0].sum() == 2 * 2
