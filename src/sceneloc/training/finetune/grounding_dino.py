"""Fine-tuning Grounding DINO and MM-Grounding-DINO with transformers' matching and loss."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

from sceneloc.backends.base import from_pretrained
from sceneloc.backends.grounding_dino import GroundingDinoBackend, prompt_for
from sceneloc.training.finetune.recipe import FinetuneItem, Recipe


class GroundingDinoRecipe(Recipe):
    family = "grounding-dino"
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "backbone_lr": 1e-5, "grad_clip": 0.1}
    lora_targets = ("sampling_offsets", "attention_weights", "value_proj", "output_proj",
                    "fc1", "fc2")  # fmt: skip
    unused_parameters = True

    def load(self, checkpoint: str) -> nn.Module:
        self.processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, checkpoint)
        self.max_text_len = int(getattr(model.config, "max_text_len", 256))
        return model

    def towers(self) -> dict[str, tuple[str, ...]]:
        return {"vision": ("model.backbone.",), "text": ("model.text_backbone.",)}

    def collate(self, items: list[FinetuneItem]) -> dict[str, Any]:
        annotations = [
            {"image_id": index, "annotations": [
                {"bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 0,
                 "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                for x1, y1, x2, y2 in item.boxes.tolist()]}
            for index, item in enumerate(items)
        ]  # fmt: skip
        pixels = self.processor.image_processor(
            images=[item.image for item in items], annotations=annotations, return_tensors="pt"
        )
        text = self.processor.tokenizer(
            [prompt_for(item.query) for item in items], padding=True, truncation=True,
            max_length=self.max_text_len, return_token_type_ids=True, return_tensors="pt",
        )  # fmt: skip
        labels = [{"class_labels": label["class_labels"], "boxes": label["boxes"]}
                  for label in pixels["labels"]]  # fmt: skip
        return {"pixel_values": pixels["pixel_values"], "pixel_mask": pixels["pixel_mask"],
                **text, "labels": labels}  # fmt: skip

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(**batch).loss

    def prepare_for_lora(self, model: nn.Module) -> None:
        """peft asks for the input embeddings, which transformers' class does not name:
        they are the text backbone's."""
        model.model.get_input_embeddings = model.model.text_backbone.get_input_embeddings

    def backend(self, model: nn.Module) -> GroundingDinoBackend:
        return GroundingDinoBackend(model, self.processor)
