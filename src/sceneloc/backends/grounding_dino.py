"""Grounding DINO and MM-Grounding-DINO: open-set detection conditioned on a text prompt.

Image and text are fused from the encoder on, so only the image backbone can be shared
between queries: it runs once per ``locate`` call and its features are reused for every
query. The fused part runs on queries in batches (padding is masked by the model, so each
row gives what its query gives alone). Batches help on a GPU; on a CPU one query at a time
is faster (``benchmarks/queries_per_call.py``), so that is the default there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    GroundingDinoProcessor,
    PreTrainedModel,
)

from sceneloc.backends import grounding_dino_compat  # noqa: F401 (single-stage models load)
from sceneloc.backends.base import Backend, from_pretrained, to_model
from sceneloc.candidates import Candidates
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

#: What the model reads as the end of a phrase ("." and "?"); inside a query, a comma.
PHRASE_ENDS = re.compile(r"[.?]")


def prompt_for(query: str) -> str:
    """The prompt form the model was trained on: lower case, ending with a period. A "."
    or "?" inside the query ("the u.s. flag", "which one? the red") would end a phrase and
    make several of one query, so it becomes a comma."""
    text = query.strip().lower().rstrip(".? ")
    return PHRASE_ENDS.sub(",", text) + "."


class SharedBackbone:
    """Makes the image backbone run once per image inside :meth:`shared`.

    Every row of a batch holds the same image, so the first row's features are computed
    once and expanded to any later batch size. The module tree is left alone (a
    ``forward`` is set on the backbone instance only while some thread is sharing), so the
    model's parameter names, and what ``save_pretrained`` writes, stay transformers' own.
    Threads serving the same model each keep their own image's features.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone
        self._local = threading.local()
        self._lock = threading.Lock()
        self._users = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self.backbone.forward = self._forward
            self._users += 1
        self._local.sharing, self._local.cache = True, None
        try:
            yield
        finally:
            self._local.sharing, self._local.cache = False, None
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    del self.backbone.forward

    def _forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple:
        compute = type(self.backbone).forward
        if not getattr(self._local, "sharing", False):  # another thread, not sharing
            return compute(self.backbone, pixel_values, pixel_mask)
        if self._local.cache is None:
            self._local.cache = compute(self.backbone, pixel_values[:1], pixel_mask[:1])
        features, positions = self._local.cache
        batch = pixel_values.shape[0]
        return (
            [(f.expand(batch, *f.shape[1:]), m.expand(batch, *m.shape[1:])) for f, m in features],
            [p.expand(batch, *p.shape[1:]) for p in positions],
        )


@register_backend(
    "grounding-dino",
    tasks=[Task.LOCATE],
    model_types=("grounding-dino", "mm-grounding-dino"),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.PHRASE_LABELS,
        Capability.QUERIES_BATCHED,
        Capability.SAFE_TO_TILE,
    ],
    settings=ModelSettings(default_threshold=0.25),
    models=[
        Model(
            "grounding-dino-tiny",
            "IDEA-Research/grounding-dino-tiny",
            "Grounding DINO Swin-T; fast, strong zero-shot grounding",
        ),
        Model(
            "grounding-dino-base",
            "IDEA-Research/grounding-dino-base",
            "Grounding DINO Swin-B; most accurate original release, trained on RefCOCO too",
        ),
        Model(
            "mm-grounding-dino-tiny",
            "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
            "MM-Grounding-DINO Swin-T (OpenMMLab re-training, better than the original tiny)",
        ),
    ],
)
class GroundingDinoBackend(Backend):
    #: The processor's shortest edge (the longest at most 1333).
    input_side = 800

    #: Tokens scoring above this form a candidate's label (the processor's default).
    text_threshold = 0.25

    def __init__(
        self,
        model: PreTrainedModel,
        processor: GroundingDinoProcessor,
        checkpoint: str | None = None,
        query_batch_size: int | None = None,
    ) -> None:
        """``query_batch_size``: queries per forward pass (default: 1 on CPU, 8 elsewhere)."""
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.processor = processor
        self.backbone = SharedBackbone(model.model.backbone)
        self.max_text_len = int(getattr(model.config, "max_text_len", 256))
        self.query_batch_size = query_batch_size or (1 if self.device.type == "cpu" else 8)

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: Any
    ) -> GroundingDinoBackend:
        """``options`` are those of ``__init__`` (``query_batch_size``)."""
        processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, checkpoint)
        return cls(model.to(device=device, dtype=dtype), processor, checkpoint, **options)

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
