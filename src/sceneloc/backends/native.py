"""sceneloc's own trainable two-stream model (``sceneloc train``), and the bundled one.

The image is encoded once per ``locate`` call; each query gets one box, scored by the
model's presence head ("is the described thing there at all").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.candidates import Candidates
from sceneloc.native.model import NativeGroundingModel, NativeOutput
from sceneloc.native.processing import normalize, resize, to_pixels, tokenize
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

if TYPE_CHECKING:
    from typing_extensions import Self

#: The model trained on synthetic dense scenes that ships inside the package.
BUNDLED = Path(__file__).resolve().parents[1] / "native" / "weights" / "native-synth"


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

    @torch.inference_mode()
    def forward(self, image: Image.Image, queries: list[str]) -> NativeOutput:
        """The model's raw outputs for the queries about one image."""
        pixels = torch.from_numpy(resize(image, self.config.image_size))[None].to(self.device)
        text = tokenize(self.tokenizer, queries, self.config)
        return self.model(
            pixel_values=normalize(pixels, self.config).to(self.dtype),
            input_ids=text["input_ids"].to(self.device),
            attention_mask=text["attention_mask"].to(self.device),
            image_index=torch.zeros(len(queries), dtype=torch.long, device=self.device),
        )

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        outputs = self.forward(image, queries)
        scores = self.model.presence_probability(outputs).float().cpu().numpy()
        boxes = to_pixels(outputs.boxes.float().cpu().numpy(), image.width, image.height)
        return [
            Candidates(box[None], score[None], [query])
            for query, box, score in zip(queries, boxes, scores)
        ]
