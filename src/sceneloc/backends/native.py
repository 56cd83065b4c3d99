"""sceneloc's own trainable two-stream model (``sceneloc train``), and the bundled one.

The image is encoded once per ``locate`` call; each query gets one box, scored by the
model's presence head ("is the described thing there at all"), and, from a model with a
referent head, the boxes of its other targets after it ("all the red stars"), each scored
by the lower of the presence score and its own referent probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.boxes import iou_matrix
from sceneloc.candidates import Candidates
from sceneloc.native.model import NativeGroundingModel, NativeOutput
from sceneloc.native.processing import normalize, resize, to_pixels, tokenize
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

if TYPE_CHECKING:
    from typing_extensions import Self

#: The model trained on synthetic dense scenes that ships inside the package.
BUNDLED = Path(__file__).resolve().parents[1] / "native" / "weights" / "native-synth"
#: The referent probability a cell needs to name one more target.
REFERENT_THRESHOLD = 0.5
#: Cells whose boxes overlap more than this (IoU) name the same target.
SAME_TARGET_IOU = 0.5


class NativeModelBackend(Backend):
    """What every native model's backend shares: the model (any ``PreTrainedModel`` class
    of :mod:`sceneloc.native`) and its tokenizer, saved together in one directory."""

    model_class: ClassVar[type[PreTrainedModel]]

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device, dtype: torch.dtype) -> Self:
        model = from_pretrained(cls.model_class.from_pretrained, checkpoint)
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
        return cls(model.to(device=device, dtype=dtype), tokenizer, checkpoint)


@register_backend(
    "native",
    tasks=[Task.LOCATE],
    model_types=("sceneloc-native",),
    capabilities=[
        Capability.PRESENCE_SCORE,
        Capability.IMAGE_ENCODED_ONCE,
        Capability.TRAINABLE,
        Capability.EVENT_BOXES,
        Capability.TARGETS,
        Capability.SAFE_TO_TILE,
    ],
    # The (calibrated) presence probability a referent needs to be reported.
    settings=ModelSettings(default_threshold=0.5),
    models=[
        Model(
            "native-synth",
            str(BUNDLED),
            "bundled with sceneloc, no download: trained on synthetic dense scenes",
        ),
    ],
)
class NativeBackend(NativeModelBackend):
    model_class = NativeGroundingModel
    model: NativeGroundingModel

    #: Tiles encoded together: bounds memory whatever the image's size.
    tile_batch_size = 16

    @property
    def input_side(self) -> int:  # type: ignore[override]
        """The side of the scenes it was trained on where the config says, else its input."""
        return self.config.tile_side or self.config.image_size

    @torch.inference_mode()
    def forward(self, image: Image.Image | list[Image.Image], queries: list[str]) -> NativeOutput:
        """The model's raw outputs for the queries about one image; given several images,
        every query about each, image by image (rows ``image * len(queries) + query``)."""
        images = image if isinstance(image, list) else [image]
        pixels = np.stack([resize(each, self.config.image_size) for each in images])
        text = tokenize(self.tokenizer, queries, self.config)
        rows = len(images) * len(queries)
        return self.model(
            pixel_values=normalize(torch.from_numpy(pixels).to(self.device), self.config).to(
                self.dtype
            ),
            input_ids=text["input_ids"].repeat(len(images), 1).to(self.device),
            attention_mask=text["attention_mask"].repeat(len(images), 1).to(self.device),
            image_index=torch.arange(rows, device=self.device) // len(queries),
        )

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        (found,) = self._answers([image], queries)
        return found

    def predict_tiles(
        self, tiles: list[Image.Image], queries: list[str], threshold: float
    ) -> list[list[Candidates]]:
        """Tiles through the model ``tile_batch_size`` at a time, scored by the presence
        weights fitted on tiles where the config has them."""
        weights = self.config.tile_presence_calibration
        step = self.tile_batch_size
        return [
            found
            for start in range(0, len(tiles), step)
            for found in self._answers(tiles[start : start + step], queries, weights)
        ]

    def _answers(
        self, images: list[Image.Image], queries: list[str], weights: list[float] | None = None
    ) -> list[list[Candidates]]:
        """Per image, each query's one box scored by the model's presence probability, or
        by ``sigmoid(presence features @ weights)`` with other ``weights``."""
        outputs = self.forward(images, queries)
        if weights is None:
            scores = self.model.presence_probability(outputs)
        else:
            features = self.model.presence_features(outputs)
            scores = (features @ torch.tensor(weights, device=features.device)).sigmoid()
        scores = scores.float().cpu().numpy().reshape(len(images), len(queries))
        boxes = outputs.boxes.float().cpu().numpy().reshape(len(images), len(queries), 4)
        best = [
            [
                Candidates(box[None], score[None], [query])
                for query, box, score in zip(queries, to_pixels(image_boxes, *image.size), row)
            ]
            for image, image_boxes, row in zip(images, boxes, scores)
        ]
        if outputs.referent_logits is None:
            return best
        shape = (len(images), len(queries), -1)
        referents = outputs.referent_logits.float().sigmoid().cpu().numpy().reshape(shape)
        cells = outputs.cell_boxes.float().cpu().numpy().reshape(*shape, 4)
        return [
            [
                Candidates.concatenate([first, self._others(first, cell_boxes, named, image)])
                for first, cell_boxes, named in zip(row, image_cells, image_referents)
            ]
            for image, row, image_cells, image_referents in zip(images, best, cells, referents)
        ]

    @staticmethod
    def _others(
        best: Candidates, cells: np.ndarray, probability: np.ndarray, image: Image.Image
    ) -> Candidates:
        """The targets besides the best box: cells the referent head names, one per thing."""
        named = probability >= REFERENT_THRESHOLD
        if not named.any():
            return Candidates.empty()
        found = Candidates.of(
            to_pixels(cells[named], image.width, image.height),
            np.minimum(probability[named], best.scores[0]),
            str(best.labels[0]),
        ).nms(SAME_TARGET_IOU)
        return found[iou_matrix(found.boxes, best.boxes)[:, 0] < SAME_TARGET_IOU]
