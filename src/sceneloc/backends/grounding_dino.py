"""Grounding DINO and MM-Grounding-DINO: open-set detection conditioned on a text prompt.

The image and the text are fused early in the encoder, so the image cannot be encoded
once for all queries. Instead each query becomes one row of a batch (the image is
preprocessed once and repeated); padding is masked by the model, so every row gives what
the query would give alone.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.registry import register_backend
from sceneloc.types import Candidate


def prompt_for(query: str) -> str:
    """The prompt form the model was trained on: lower case, ending with a period."""
    text = query.strip().lower()
    return text if text.endswith(".") else f"{text}."


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

    def __init__(self, checkpoint: str, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(checkpoint, device, dtype)
        self.processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, checkpoint)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))

    def predict(
        self, image: Image.Image, queries: list[str], threshold: float
    ) -> list[list[Candidate]]:
        pixels = self.processor.image_processor(images=image, return_tensors="pt")
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
        inputs = {
            k: v.to(device=self.device, dtype=self.dtype if v.is_floating_point() else None)
            for k, v in inputs.items()
        }
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
            [
                Candidate(box.tolist(), float(score), self._phrase(label) or query)
                for box, score, label in zip(d["boxes"], d["scores"], d["text_labels"])
            ]
            for query, d in zip(queries, detections)
        ]

    def _phrase(self, label: str) -> str:
        """The matched words without special tokens or the prompt's closing period."""
        special = set(self.processor.tokenizer.all_special_tokens)
        return " ".join(w for w in label.split() if w not in special).rstrip(" .")
