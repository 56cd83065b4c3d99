"""sceneloc's own trainable two-stream model (``sceneloc train``), and the bundled one.

The image is encoded once per ``locate`` call; each query gets one box, scored by the
model's presence head ("is the described thing there at all").
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.candidates import Candidates
from sceneloc.native.model import NativeGroundingModel, NativeOutput
from sceneloc.native.processing import normalize, resize, to_pixels, tokenize
from sceneloc.registry import register_backend

#: The model trained on synthetic dense scenes that ships inside the package.
BUNDLED = Path(__file__).resolve().parents[1] / "native" / "weights" / "native-synth"


@register_backend(
    "native",
    model_types=("sceneloc-native",),
    capabilities=("one box per query", "presence score", "image encoded once", "trainable"),
    models={
        "native-synth": (
            str(BUNDLED),
            "bundled with sceneloc, no download: trained on synthetic dense scenes",
        ),
    },
)
class NativeBackend(Backend):
    #: The (calibrated) presence probability a referent needs to be reported.
    default_threshold = 0.5

    def __init__(self, checkpoint: str, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(checkpoint, device, dtype)
        model = from_pretrained(NativeGroundingModel.from_pretrained, checkpoint)
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
        self.use(model, tokenizer)

    @classmethod
    def from_model(
        cls, model: NativeGroundingModel, tokenizer: PreTrainedTokenizerBase, device: torch.device
    ) -> NativeBackend:
        """Wrap a model in memory (validation during training) without saving it first."""
        backend = cls.__new__(cls)
        Backend.__init__(backend, "<in memory>", device, next(model.parameters()).dtype)
        backend.use(model, tokenizer)
        return backend

    def use(self, model: NativeGroundingModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.config = model.config

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
