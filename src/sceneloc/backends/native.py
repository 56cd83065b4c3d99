"""sceneloc's own trainable two-stream model (``sceneloc train``), and the bundled one.

The image is encoded once per ``locate`` call; each query gets one box, scored by the
model's presence head ("is the described thing there at all").
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.native.model import NativeGroundingModel, NativeOutput
from sceneloc.native.processing import normalize, resize, to_pixels, tokenize
from sceneloc.registry import register_backend
from sceneloc.types import Candidate

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

    def __init__(self, model, tokenizer, checkpoint=None) -> None:  # type: ignore[no-untyped-def]
        # TEMPORARY (training branch): the contract NativeBackend(model, tokenizer,
        # checkpoint=None), plus api.load's (checkpoint, device, dtype) call, until the
        # registry branch's version replaces this file.
        if isinstance(model, str):
            checkpoint, device, dtype = model, tokenizer, checkpoint
            super().__init__(checkpoint, device, dtype)
            model = from_pretrained(NativeGroundingModel.from_pretrained, checkpoint)
            tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
            self.model = model.to(device=self.device, dtype=self.dtype).eval()
        else:
            parameter = next(model.parameters())
            super().__init__(checkpoint or "<in memory>", parameter.device, parameter.dtype)
            self.model = model.eval()
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

    def predict(
        self, image: Image.Image, queries: list[str], threshold: float
    ) -> list[list[Candidate]]:
        outputs = self.forward(image, queries)
        scores = self.model.presence_probability(outputs).tolist()
        boxes = outputs.boxes.float().tolist()
        return [
            [Candidate(to_pixels(box, image.width, image.height), score, query)]
            for query, box, score in zip(queries, boxes, scores)
        ]
