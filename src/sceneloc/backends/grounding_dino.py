"""Grounding DINO and MM-Grounding-DINO: open-set detection conditioned on a text prompt.

Image and text are fused from the encoder on, so only the image backbone can be shared
between queries: it runs once per ``locate`` call and its features are reused for every
query. The fused part runs on queries in batches (padding is masked by the model, so each
row gives what its query gives alone). Batches help on a GPU; on a CPU, measured in
``benchmarks/queries_per_call.py``, one query at a time is faster, so that is the default
there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from PIL import Image
from torch import nn
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

from sceneloc.backends.base import Backend, from_pretrained, to_model
from sceneloc.candidates import Candidates
from sceneloc.registry import register_backend


def prompt_for(query: str) -> str:
    """The prompt form the model was trained on: lower case, ending with a period."""
    text = query.strip().lower()
    return text if text.endswith(".") else f"{text}."


class SharedBackbone(nn.Module):
    """Wraps the image backbone so that, inside :meth:`shared`, it runs once per image.

    Every row of a batch holds the same image, so the first row's features are computed
    once and expanded to any later batch size.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.position_embedding = backbone.position_embedding  # the model reads it directly
        self._cache: tuple | None = None
        self._sharing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        self._sharing, self._cache = True, None
        try:
            yield
        finally:
            self._sharing, self._cache = False, None

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple:
        if not self._sharing:
            return self.backbone(pixel_values, pixel_mask)
        if self._cache is None:
            self._cache = self.backbone(pixel_values[:1], pixel_mask[:1])
        features, positions = self._cache
        batch = pixel_values.shape[0]
        return (
            [(f.expand(batch, *f.shape[1:]), m.expand(batch, *m.shape[1:])) for f, m in features],
            [p.expand(batch, *p.shape[1:]) for p in positions],
        )


@register_backend(
    "grounding-dino",
    model_types=("grounding-dino", "mm-grounding-dino"),
    capabilities=("boxes with scores", "phrase labels", "queries batched"),
    models={
        "grounding-dino-tiny": (
            "IDEA-Research/grounding-dino-tiny",
            "Grounding DINO Swin-T; fast, strong zero-shot grounding",
        ),
        "grounding-dino-base": (
            "IDEA-Research/grounding-dino-base",
            "Grounding DINO Swin-B; most accurate original release, trained on RefCOCO too",
        ),
        "mm-grounding-dino-tiny": (
            "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
            "MM-Grounding-DINO Swin-T (OpenMMLab re-training, better than the original tiny)",
        ),
    },
)
class GroundingDinoBackend(Backend):
    default_threshold = 0.25
    #: Tokens scoring above this form a candidate's label (the processor's default).
    text_threshold = 0.25

    def __init__(
        self,
        checkpoint: str,
        device: torch.device,
        dtype: torch.dtype,
        query_batch_size: int | None = None,
    ) -> None:
        """``query_batch_size``: queries per forward pass (default: 1 on CPU, 8 elsewhere)."""
        super().__init__(checkpoint, device, dtype)
        self.processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, checkpoint)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.backbone = SharedBackbone(self.model.model.backbone)
        self.model.model.backbone = self.backbone
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))
        self.query_batch_size = query_batch_size or (1 if device.type == "cpu" else 8)

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        pixels = self.processor.image_processor(images=image, return_tensors="pt")
        step = self.query_batch_size
        with self.backbone.shared():
            return [
                found
                for start in range(0, len(queries), step)
                for found in self._predict_batch(
                    image, pixels, queries[start : start + step], threshold
                )
            ]

    def _predict_batch(
        self, image: Image.Image, pixels: dict, queries: list[str], threshold: float
    ) -> list[Candidates]:
        text = self.processor.tokenizer(
            [prompt_for(q) for q in queries],
            padding=True,
            truncation=True,
            max_length=self.max_text_len,
            return_token_type_ids=True,
            return_tensors="pt",
        )
        batch = len(queries)
        inputs = {
            "pixel_values": pixels["pixel_values"].expand(batch, -1, -1, -1),
            "pixel_mask": pixels["pixel_mask"].expand(batch, -1, -1),
            **text,
        }
        inputs = to_model(inputs, self.device, self.dtype)
        outputs = self.model(**inputs)
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        detections = self.processor.post_process_grounded_object_detection(
            outputs,
            input_ids=inputs["input_ids"],
            threshold=threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(image.height, image.width)] * batch,
        )
        return [
            Candidates(
                d["boxes"].cpu().numpy(),
                d["scores"].cpu().numpy(),
                [self._phrase(label) or query for label in d["text_labels"]],
            )
            for query, d in zip(queries, detections)
        ]

    def _phrase(self, label: str) -> str:
        """The matched words without special tokens or the prompt's closing period."""
        special = set(self.processor.tokenizer.all_special_tokens)
        return " ".join(w for w in label.split() if w not in special).rstrip(" .")
