"""Object proposals from the native grounder's object map: where the things of an image are.

The cross-attention grounder's spatial reasoning keeps, per visual cell and without any
query, an objectness logit and the place of the thing centred there (normalised centre
and log of its larger side; :meth:`SpatialReasoning.object_map`). Read as boxes, with
non-maximum suppression, that map proposes an image's objects: the regions the native
describer captions in dense mode and the alignment model ranks for a phrase.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sceneloc.candidates import Candidates
from sceneloc.errors import SceneLocError
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.processing import normalize, resize, to_pixels

#: Proposals kept per image, at most.
MAX_PROPOSALS = 100
#: Objectness (a probability) a cell needs to propose its thing.
MIN_OBJECTNESS = 0.05
#: Proposals overlapping a better one by more than this IoU are dropped.
NMS_IOU = 0.5
#: The label of every proposal.
LABEL = "object"


def map_boxes(objectness: torch.Tensor, places: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An object map read as boxes: per image and cell, the objectness probability
    ``(images, cells)`` and the box of the thing centred there ``(images, cells, 4)``,
    normalised cx, cy, w, h (a square of its larger side, which is all the map knows of its
    size). ``objectness`` are logits, ``places`` x, y and log size, as
    :func:`~sceneloc.native.reasoning.object_map` gives them."""
    side = places[..., 2].exp()
    boxes = torch.stack([places[..., 0], places[..., 1], side, side], dim=-1)
    return objectness.sigmoid(), boxes


@torch.inference_mode()
def object_boxes(
    model: NativeGroundingModel, pixel_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`map_boxes` of a grounder's object map for ``pixel_values``, the model's
    normalised input (:func:`~sceneloc.native.processing.normalize`)."""
    if not hasattr(model, "reasoning"):
        raise SceneLocError(
            f"a {model.config.fusion} native model has no object map to propose objects from; "
            "use a cross-attention one (such as native-synth)"
        )
    visual, grid = model.image_encoder(pixel_values)
    return map_boxes(*model.reasoning.object_map(model.image_context(visual), grid))


def select(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    *,
    max_proposals: int = MAX_PROPOSALS,
    min_objectness: float = MIN_OBJECTNESS,
    iou_threshold: float = NMS_IOU,
) -> Candidates:
    """One image's proposals from its :func:`map_boxes`: pixel boxes of an image of ``size``
    scored by objectness, best first, after non-maximum suppression."""
    width, height = size
    scores, boxes = scores.float().cpu().numpy(), boxes.float().cpu().numpy()
    keep = np.flatnonzero(scores >= min_objectness)
    pixel_boxes = to_pixels(boxes[keep], width, height)
    found = Candidates.of(pixel_boxes, scores[keep], LABEL).nms(iou_threshold)
    return found[:max_proposals].clipped(width, height)


def propose(model: NativeGroundingModel, image: Image.Image, **settings: int | float) -> Candidates:
    """The objects ``model`` finds in ``image``; ``settings`` are :func:`select`'s."""
    parameter = next(model.parameters())
    pixels = torch.from_numpy(resize(image, model.config.image_size))[None]
    inputs = normalize(pixels.to(parameter.device), model.config).to(parameter.dtype)
    scores, boxes = (t[0] for t in object_boxes(model, inputs))
    return select(scores, boxes, image.size, **settings)
