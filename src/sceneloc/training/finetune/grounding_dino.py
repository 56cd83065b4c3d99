"""Fine-tuning Grounding DINO and MM-Grounding-DINO with transformers' matching and loss.

transformers' loss is used term for term (Hungarian matching, sigmoid focal loss over the
query's tokens, L1 + GIoU, the encoder stage's and, as in the native training, every
decoder layer's losses), but computed image by image and averaged, so that a batch learns
what its images would learn one at a time:

- transformers 5.24 offsets the one-hot targets of the images after the first by that
  image's own phrase count, not by the count of the images before it, so from the third
  image on a query is scored against another query's tokens;
- it divides the whole batch's loss by the batch's box count (averaged over processes), so
  an image's weight depends on what else is in its batch; here each image's loss is divided
  by its own box count (at least one), which needs no exchange between processes either;
- its encoder-stage term scores the learned query embeddings against the text and the
  selected proposals' boxes detached, so the layers that propose (``enc_output``,
  ``encoder_output_bbox_embed``) never learn. Here, as in the original Grounding DINO's
  ``interm_outputs``, that term is taken on the selected proposals' own scores and boxes,
  undetached: a model trained from random weights learns where to look, and fine-tuning on
  new words moves the proposals to them.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
from transformers.loss.loss_for_object_detection import _set_aux_loss
from transformers.loss.loss_grounding_dino import (
    GroundingDinoHungarianMatcher,
    GroundingDinoImageLoss,
)

from sceneloc.backends.base import from_pretrained
from sceneloc.backends.grounding_dino import GroundingDinoBackend, prompt_for
from sceneloc.training.finetune.recipe import FinetuneItem, Recipe
from sceneloc.training.options import TrainingError

logger = logging.getLogger(__name__)

#: Weight of the classification term: hard-coded in transformers' loss, as here.
CLASS_WEIGHT = 2.0
#: Heads whose weights are tied across decoder layers: LoRA on them would add one delta per
#: copy to the one shared weight, so they are left out of LoRA.
TIED_HEADS = ("bbox_embed.", "model.decoder.bbox_embed.")


class ImageLoss(GroundingDinoImageLoss):
    """transformers' criterion, given one image at a time (so no phrase offset is applied):
    normalised by that image's own box count (at least one), with no exchange between
    processes."""

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]]) -> dict:
        num_boxes = max(float(sum(len(t["class_labels"]) for t in targets)), 1.0)
        plain = {k: v for k, v in outputs.items() if k != "auxiliary_outputs"}
        losses: dict[str, torch.Tensor] = {}
        indices = self.matcher(plain, targets)
        for name in self.losses:
            losses.update(self.get_loss(name, plain, targets, indices, num_boxes))
        for layer, auxiliary in enumerate(outputs.get("auxiliary_outputs", ())):
            indices = self.matcher(auxiliary, targets)
            for name in self.losses:
                found = self.get_loss(name, auxiliary, targets, indices, num_boxes)
                losses.update({f"{k}_{layer}": v for k, v in found.items()})
        return losses


def image_loss(
    config: Any,
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    label_map: torch.Tensor,
    text_mask: torch.Tensor,
    target: dict[str, torch.Tensor],
    outputs_class: torch.Tensor | None = None,
    outputs_coord: torch.Tensor | None = None,
    encoder_logits: torch.Tensor | None = None,
    encoder_pred_boxes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """transformers' weighted loss of one image (tensors with a batch of one)."""
    matcher = GroundingDinoHungarianMatcher(
        class_cost=config.class_cost, bbox_cost=config.bbox_cost, giou_cost=config.giou_cost
    )
    criterion = ImageLoss(matcher, config.focal_alpha, ["labels", "boxes", "cardinality"])
    shared = {"label_maps": (label_map,), "text_mask": text_mask}
    outputs: dict[str, Any] = {"logits": logits, "pred_boxes": pred_boxes, **shared}
    if config.auxiliary_loss:
        outputs["auxiliary_outputs"] = [
            {**auxiliary, **shared} for auxiliary in _set_aux_loss(outputs_class, outputs_coord)
        ]
    losses = criterion(outputs, [target])
    weights = {
        "loss_ce": CLASS_WEIGHT,
        "loss_bbox": config.bbox_loss_coefficient,
        "loss_giou": config.giou_loss_coefficient,
    }
    if config.two_stage:
        encoder = {"logits": encoder_logits, "pred_boxes": encoder_pred_boxes, **shared}
        losses.update({f"{k}_enc": v for k, v in criterion(encoder, [target]).items()})
        weights.update({f"{k}_enc": v for k, v in list(weights.items())})
    if config.auxiliary_loss:
        base = dict(weights)
        for layer in range(config.decoder_layers - 1):
            weights.update({f"{k}_{layer}": v for k, v in base.items() if not k.endswith("_enc")})
    total = sum(losses[k] * weights[k] for k in losses if k in weights)
    return total, losses


def per_image_loss(
    logits: torch.Tensor,
    labels: list[dict[str, torch.Tensor]],
    device: torch.device,
    pred_boxes: torch.Tensor,
    config: Any,
    label_maps: tuple[torch.Tensor, ...],
    text_mask: torch.Tensor,
    outputs_class: torch.Tensor | None = None,
    outputs_coord: torch.Tensor | None = None,
    encoder_logits: torch.Tensor | None = None,
    encoder_pred_boxes: torch.Tensor | None = None,
    proposals: EncoderProposals | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list | None]:
    """The mean over the batch of each image's own loss; takes and returns what
    transformers' ``GroundingDinoForObjectDetectionLoss`` does (the model's
    ``loss_function``), so the model's ``forward`` computes it. With ``proposals`` the
    encoder stage's term is on the proposals' own scores and boxes."""
    if proposals is not None and config.two_stage:
        encoder_logits, encoder_pred_boxes = proposals.selected(config.num_queries)
    totals, parts = [], []
    for i, target in enumerate(labels):
        one = slice(i, i + 1)
        total, losses = image_loss(
            config, logits[one], pred_boxes[one], label_maps[i], text_mask[one], target,
            None if outputs_class is None else outputs_class[:, one],
            None if outputs_coord is None else outputs_coord[:, one],
            None if encoder_logits is None else encoder_logits[one],
            None if encoder_pred_boxes is None else encoder_pred_boxes[one],
        )  # fmt: skip
        totals.append(total)
        parts.append(losses)
    loss_dict = {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]}
    auxiliary = _set_aux_loss(outputs_class, outputs_coord) if config.auxiliary_loss else None
    return torch.stack(totals).mean(), loss_dict, auxiliary


class EncoderProposals:
    """The encoder stage's per-pixel scores and boxes of the model's last forward (a hook on
    its base model, which computes them and returns them undetached), and the ones it
    selected as the decoder's queries."""

    def __init__(self, model: nn.Module) -> None:
        self.outputs: Any = None
        model.model.register_forward_hook(self._catch)

    def _catch(self, module: nn.Module, args: Any, outputs: Any) -> None:
        self.outputs = outputs

    def selected(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The top ``count`` proposals' token logits and boxes, picked as the model picks
        them (by their best token's score)."""
        outputs, self.outputs = self.outputs, None
        scores, coordinates = outputs.enc_outputs_class, outputs.enc_outputs_coord_logits
        top = scores.max(-1).values.topk(count, dim=1).indices.unsqueeze(-1)
        logits = scores.gather(1, top.expand(-1, -1, scores.shape[-1]))
        return logits, coordinates.gather(1, top.expand(-1, -1, 4)).sigmoid()


def lora_targets_of(model: nn.Module, towers: tuple[str, ...]) -> tuple[str, ...]:
    """The full names of the linear layers LoRA adapts: every one of the fusion encoder, the
    decoder and the encoder stage, none of the pretrained towers (they learn at
    ``backbone_lr`` or stay frozen) nor of the tied box heads."""
    return tuple(
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith(towers + TIED_HEADS)
    )


class GroundingDinoRecipe(Recipe):
    """Grounding DINO and MM-Grounding-DINO (one model class, one loss)."""

    family = "grounding-dino"
    #: Open-GroundingDino's fine-tuning recipe (MMDetection's: 2e-4, towers at a tenth).
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-4, "backbone_lr": 1e-5, "grad_clip": 0.1, "weight_decay": 1e-4,
    }  # fmt: skip
    #: Swin's last norm is never read, and a single-stage model's encoder-stage layers are
    #: never used: DDP is told (``find_unused_parameters``).
    unused_parameters = True

    def load(self, checkpoint: str) -> nn.Module:
        """The checkpoint, with sceneloc's per-image loss and the decoder layers' losses on;
        hub kernels stay off (``use_kernels=False``: transformers fetches the deformable
        attention's kernel from the hub only when asked to, and an offline run cannot)."""
        self.processor = from_pretrained(AutoProcessor.from_pretrained, checkpoint)
        model = from_pretrained(
            AutoModelForZeroShotObjectDetection.from_pretrained, checkpoint, use_kernels=False
        )
        if getattr(model, "use_kernels", False):
            raise TrainingError(f"{checkpoint}: hub kernels must stay off to fine-tune offline")
        if not hasattr(model.config, "focal_alpha"):
            raise TrainingError(f"{checkpoint} is not a Grounding DINO checkpoint")
        self.max_text_len = int(getattr(model.config, "max_text_len", 256))
        # The native training supervises every decoder layer; transformers' default does not
        # (saved in the config, read only by the loss).
        model.config.auxiliary_loss = True
        model.loss_function = functools.partial(per_image_loss, proposals=EncoderProposals(model))
        self.lora_targets = lora_targets_of(model, sum(self.towers().values(), ()))
        return model

    def towers(self) -> dict[str, tuple[str, ...]]:
        return {"vision": ("model.backbone.",), "text": ("model.text_backbone.",)}

    def collate(self, items: list[FinetuneItem]) -> dict[str, Any]:
        """Pixels padded to the batch's largest image, each query alone as one phrase,
        boxes as the image processor normalises them (an absent referent: no boxes)."""
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
