"""The native two-stream grounding model: encoders, fusion, box and presence heads, losses.

``cross-attention`` fusion runs a transformer over a learnable box token, the visual tokens
and the text tokens (in the manner of TransVG). Its box head scores every visual token as
the referent's centre and predicts a normalised centre/size there; the box token gives the
presence score ("is it there at all"). Each token's score adds what
:mod:`sceneloc.native.reasoning` reads from the grid: how well the token fits the target's
description, where it lies from the anchor ("left of the blue square") and how many things
of that description come before it ("the second star from the left"). ``concat`` fusion is
the seeds' baseline: pooled image and text vectors concatenated into an MLP that regresses
the box directly.

With ``referent_head``, a last head scores every visual token as the centre of *one of* the
query's targets: "all the red stars" lights up each red star, a description of nothing
lights up none (trained on the synthetic ``multiple`` and ``absent`` queries; the cell and
box terms then take every target as a right answer).

When the training data lists every object of an image (the synthetic scenes'
``scenes.jsonl``), attribute heads also name each object's colour, shape and size at its
centre token: trained on the grounding loss alone, the visual tokens do not learn colour
(the model picks the right shape in the wrong colour); with these dense labels, weighted
well above the grounding terms, they do (the README's training section has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from sceneloc.boxes import cxcywh_to_xyxy, generalized_iou
from sceneloc.native.config import WORD_VECTORS, NativeConfig
from sceneloc.native.encoders import ImageEncoder, TextEncoder, masked_mean, transformer
from sceneloc.native.reasoning import SpatialReasoning, cell_coordinates

#: Loss weights: DETR's balance of L1 and GIoU, the cell and presence terms at 1, and the
#: attribute term at 10 (at 1 the grounding gradients drown it and colour is not learnt).
L1_WEIGHT, GIOU_WEIGHT, CELL_WEIGHT, PRESENCE_WEIGHT, ATTRIBUTE_WEIGHT = 5.0, 2.0, 1.0, 1.0, 10.0
#: The referent head's term: binary cross-entropy summed over a query's cells (a mean over
#: hundreds of cells, nearly all negatives, would leave the few targets no weight).
REFERENT_WEIGHT = 1.0
#: The object map (centres and sizes of things, for counting) learns from every image's cells;
#: the target's and the anchor's maps from what synthetic queries say of the scene's objects.
#: Without the anchor's labels the anchor role does not find the anchor's words and relations
#: stay at chance.
OBJECT_MAP_WEIGHT, TARGET_WEIGHT, ANCHOR_WEIGHT = 1.0, 1.0, 1.0


def _cell_index(x: torch.Tensor, y: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The flat index of the grid cell under each normalised point."""
    height, width = grid
    column = (x * width).long().clamp(0, width - 1)
    row = (y * height).long().clamp(0, height - 1)
    return row * width + column


@dataclass
class NativeOutput(ModelOutput):
    """Per query: ``boxes`` (normalised cx, cy, w, h), ``presence_logits``; for
    ``cross-attention`` also each cell's logit and the target's and anchor's maps over the
    grid, every cell's box and, with the referent head, each cell's logit of being one of the
    targets; ``loss`` in training."""

    loss: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    presence_logits: torch.Tensor | None = None
    cell_logits: torch.Tensor | None = None
    target_map: torch.Tensor | None = None
    anchor_map: torch.Tensor | None = None
    cell_boxes: torch.Tensor | None = None
    referent_logits: torch.Tensor | None = None


class NativeGroundingModel(PreTrainedModel):
    """Image encoder + text encoder + fusion + heads; see the module docstring."""

    config_class = NativeConfig
    base_model_prefix = "native"
    main_input_name = "pixel_values"

    def __init__(self, config: NativeConfig, load_pretrained_encoders: bool = False) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.image_encoder = ImageEncoder(config, load_pretrained_encoders)
        self.text_encoder = TextEncoder(config, load_pretrained_encoders)
        if config.fusion == "cross-attention":
            self.box_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
            self.modality = nn.Parameter(torch.randn(2, hidden) * 0.02)
            # Image-only context, run once per image: what is around each object.
            self.image_context = transformer(config, config.image_layers)
            # Per query: the pooled text scales and shifts every visual token (FiLM), then
            # the transformer relates the tokens (for "left of", "second from", "inside").
            self.film = nn.Linear(hidden, 2 * hidden)
            self.fusion = transformer(config, config.fusion_layers)
            self.cell_head = nn.Linear(hidden, 1)
            # Direct text-to-token matches (as OWL-ViT's class head, a short path for the
            # gradient that teaches the image features colours and shapes quickly), relations
            # and orderings as operations on the grid.
            self.reasoning = SpatialReasoning(config)
            self.box_head = nn.Sequential(
                nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 4)
            )
            self.presence_head = nn.Linear(hidden, 1)
            if config.referent_head:
                self.referent_head = nn.Linear(hidden, 1)
        else:
            self.mlp = nn.Sequential(
                nn.Linear(2 * hidden, 2 * hidden), nn.GELU(), nn.Dropout(config.dropout),
                nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 5),
            )  # fmt: skip
        # Dense auxiliary targets: every object's attributes named at its centre token,
        # many labels per image where queries give a handful.
        self.attribute_heads = nn.ModuleDict(
            {
                name: nn.Linear(hidden, len(values))
                for name, values in (config.object_attributes or {}).items()
            }
        )
        self.post_init()
        self.freeze()

    def freeze(self) -> None:
        """Stop gradients where the config says so (also after ``from_pretrained``, which
        would otherwise make every loaded weight trainable again)."""
        config = self.config
        if config.text_encoder == WORD_VECTORS:
            self.text_encoder.embed.weight.requires_grad_(False)  # the baseline's fixed input
        if config.freeze_image_encoder:
            self.image_encoder.body.requires_grad_(False)
        if config.freeze_text_encoder and hasattr(self.text_encoder, "model"):
            self.text_encoder.model.requires_grad_(False)

    def train(self, mode: bool = True) -> NativeGroundingModel:
        """Frozen encoders stay in eval mode, so their batch-norm statistics do not drift."""
        super().train(mode)
        if self.config.freeze_image_encoder:
            self.image_encoder.body.eval()
        if self.config.freeze_text_encoder and hasattr(self.text_encoder, "model"):
            self.text_encoder.model.eval()
        return self

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> NativeGroundingModel:
        model = super().from_pretrained(*args, **kwargs)
        model.freeze()
        return model

    def _init_weights(self, module: nn.Module) -> None:
        """Keep PyTorch's default initialisation and the pretrained encoders' weights."""

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
        object_boxes: torch.Tensor | None = None,
        object_labels: torch.Tensor | None = None,
        target_fits: torch.Tensor | None = None,
        anchor_centers: torch.Tensor | None = None,
        target_boxes: torch.Tensor | None = None,
    ) -> NativeOutput:
        """Ground each query (row of ``input_ids``) in image ``image_index[q]``.

        Each image is encoded once however many queries refer to it. With ``boxes``
        (normalised cx, cy, w, h) and ``present`` (1 when the referent is in the image),
        the output carries the training loss; ``object_boxes`` ``(images, m, 4)`` (every object
        of the image) and ``object_labels`` ``(images, m, attributes)`` add the object losses,
        ``target_fits`` ``(queries, m)`` (1/0: the object fits the referent's description;
        -1: not known) and ``anchor_centers`` ``(queries, 2)`` (negative: none) losses on the
        target's and the anchor's maps. ``target_boxes`` ``(queries, k, 4)`` (rows of -1 past a
        query's last target; none for an absent one) gives every target: each is a right
        answer, and the referent head learns them all.
        """
        visual, grid = self.image_encoder(pixel_values)
        if self.config.fusion == "cross-attention":
            visual = self.image_context(visual)
        object_loss = None
        if object_labels is not None and object_boxes is not None and self.attribute_heads:
            object_loss = self._object_loss(visual, grid, object_boxes, object_labels)
        if image_index is None:
            image_index = torch.arange(input_ids.shape[0], device=input_ids.device)
        text = self.text_encoder(input_ids, attention_mask)
        if self.config.fusion == "cross-attention":
            output = self._cross_attention(
                visual, image_index, grid, text, attention_mask, boxes, present, target_boxes
            )
        else:
            output = self._concat(visual[image_index], text, attention_mask, boxes, present)
        if output.loss is not None and object_loss is not None:
            output.loss = output.loss + object_loss
        if output.loss is not None and output.target_map is not None:
            output.loss = output.loss + self._query_label_loss(
                output, grid, image_index, object_boxes, target_fits, anchor_centers
            )
        return output

    def presence_features(self, outputs: NativeOutput) -> torch.Tensor:
        """``(queries, 3)``: the presence logit, the best cell's logit (0 for ``concat``) and 1,
        the inputs of the calibrated presence score."""
        presence = outputs.presence_logits.float()
        best_cell = (
            outputs.cell_logits.float().max(dim=1).values
            if outputs.cell_logits is not None
            else torch.zeros_like(presence)
        )
        return torch.stack([presence, best_cell, torch.ones_like(presence)], dim=1)

    def presence_probability(self, outputs: NativeOutput) -> torch.Tensor:
        """The probability that each query's referent is in the image. The presence head
        alone is not enough: trained on few absent queries it scores absent things high, while
        the best cell's logit tells them apart for plain descriptions; the weights come from
        the validation data (:mod:`sceneloc.training.native.calibration`)."""
        features = self.presence_features(outputs)
        weights = torch.tensor(self.config.presence_calibration, device=features.device)
        return (features @ weights).sigmoid()

    def _object_loss(
        self,
        visual: torch.Tensor,
        grid: tuple[int, int],
        objects: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-entropy of each attribute head at the token under each object's centre, and
        the object map's loss (it counts things for orderings) on images listing objects."""
        cells = _cell_index(objects[..., 0], objects[..., 1], grid)
        tokens = visual.gather(1, cells.unsqueeze(-1).expand(-1, -1, visual.shape[-1]))
        losses = [
            F.cross_entropy(head(tokens).flatten(0, 1), labels[..., i].flatten())
            for i, head in enumerate(self.attribute_heads.values())
            if (labels[..., i] >= 0).any()
        ]
        loss = ATTRIBUTE_WEIGHT * torch.stack(losses).mean() if losses else visual.sum() * 0.0
        valid = (labels >= 0).any(dim=-1)
        listed = valid.any(dim=1)
        if self.config.fusion == "cross-attention" and listed.any():
            object_map_loss = self.reasoning.object_loss(
                visual[listed], grid, cells[listed], objects[listed], valid[listed]
            )
            loss = loss + OBJECT_MAP_WEIGHT * object_map_loss
        return loss

    def _cross_attention(
        self,
        image_visual: torch.Tensor,
        image_index: torch.Tensor,
        grid: tuple[int, int],
        text: torch.Tensor,
        attention_mask: torch.Tensor,
        boxes: torch.Tensor | None,
        present: torch.Tensor | None,
        target_boxes: torch.Tensor | None = None,
    ) -> NativeOutput:
        visual = image_visual[image_index]
        queries, cells, _ = visual.shape
        pooled = masked_mean(text, attention_mask)
        scale, shift = self.film(pooled).unsqueeze(1).chunk(2, dim=-1)
        tokens = torch.cat(
            [
                self.box_token.expand(queries, -1, -1),
                visual * (1 + scale) + shift + self.modality[0],
                text + self.modality[1],
            ],
            dim=1,
        )
        keep = torch.ones(queries, 1 + cells, dtype=torch.bool, device=text.device)
        padding = ~torch.cat([keep, attention_mask.bool()], dim=1)
        fused = self.fusion(tokens, src_key_padding_mask=padding)
        presence_logits = self.presence_head(fused[:, 0]).squeeze(-1)
        cell_boxes = self._cell_boxes(self.box_head(fused[:, 1 : 1 + cells]), grid)
        reasoned, target_map, anchor_map = self.reasoning(
            image_visual, image_index, grid, text, attention_mask
        )
        cell_tokens = fused[:, 1 : 1 + cells]
        cell_logits = self.cell_head(cell_tokens).squeeze(-1) + reasoned
        referent_logits = None
        if self.config.referent_head:
            # the cell's standing among the query's cells, corrected to an absolute "is one"
            referent_logits = self.referent_head(cell_tokens).squeeze(-1) + cell_logits
        rows = torch.arange(queries, device=text.device)
        best = cell_boxes[rows, cell_logits.argmax(dim=1)]
        loss = None
        if boxes is not None and present is not None:
            if target_boxes is None:
                target_boxes = boxes[:, None].masked_fill(present[:, None, None] <= 0.5, -1.0)
            loss = self._grounding_loss(
                cell_boxes, cell_logits, referent_logits, target_boxes, grid
            ) + PRESENCE_WEIGHT * F.binary_cross_entropy_with_logits(
                presence_logits, present.float()
            )
        return NativeOutput(
            loss, best, presence_logits, cell_logits, target_map, anchor_map, cell_boxes,
            referent_logits,
        )  # fmt: skip

    def _grounding_loss(
        self,
        cell_boxes: torch.Tensor,
        cell_logits: torch.Tensor,
        referent_logits: torch.Tensor | None,
        target_boxes: torch.Tensor,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        """Box terms at every target's cell, the cell term on all targets together (the
        probability of picking one of them), the referent head's on every cell."""
        valid = target_boxes[..., 0] >= 0  # (queries, k)
        target_cells = _cell_index(target_boxes[..., 0], target_boxes[..., 1], grid)
        target_cells = target_cells.masked_fill(~valid, 0)
        query, slot = valid.nonzero(as_tuple=True)
        loss = self._box_loss(
            cell_boxes[query, target_cells[query, slot]],
            target_boxes[query, slot],
            torch.ones_like(query, dtype=torch.bool),
        )
        is_target = torch.zeros_like(cell_logits, dtype=torch.bool)
        is_target[query, target_cells[query, slot]] = True
        positive = valid.any(dim=1)
        if positive.any():
            log_probs = cell_logits[positive].log_softmax(dim=1)
            picked = log_probs.masked_fill(~is_target[positive], float("-inf")).logsumexp(dim=1)
            loss = loss - CELL_WEIGHT * picked.mean()
        if referent_logits is not None:
            referent_loss = F.binary_cross_entropy_with_logits(
                referent_logits, is_target.float(), reduction="sum"
            )
            loss = loss + REFERENT_WEIGHT * referent_loss / len(referent_logits)
        return loss

    @staticmethod
    def _query_label_loss(
        output: NativeOutput,
        grid: tuple[int, int],
        image_index: torch.Tensor,
        object_boxes: torch.Tensor | None,
        target_fits: torch.Tensor | None,
        anchor_centers: torch.Tensor | None,
    ) -> torch.Tensor:
        """Binary cross-entropy of the target's map at each object's centre against whether
        it fits the description; cross-entropy of the anchor's map at the anchor's centre."""
        loss = output.target_map.sum() * 0.0
        if target_fits is not None and object_boxes is not None and (target_fits >= 0).any():
            cells = _cell_index(object_boxes[..., 0], object_boxes[..., 1], grid)[image_index]
            logits = output.target_map.gather(1, cells[:, : target_fits.shape[1]])
            known = target_fits >= 0
            loss = loss + TARGET_WEIGHT * F.binary_cross_entropy_with_logits(
                logits[known], target_fits[known]
            )
        if anchor_centers is not None and (anchor_centers[:, 0] >= 0).any():
            known = anchor_centers[:, 0] >= 0
            cells = _cell_index(anchor_centers[known, 0], anchor_centers[known, 1], grid)
            loss = loss + ANCHOR_WEIGHT * F.cross_entropy(output.anchor_map[known], cells)
        return loss

    @staticmethod
    def _cell_boxes(raw: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Each cell's box: a centre near the cell (up to half a cell outside) and a size."""
        height, width = grid
        column, row = cell_coordinates(grid, raw.device)
        cx = (column + 2 * raw[..., 0].sigmoid() - 0.5) / width
        cy = (row + 2 * raw[..., 1].sigmoid() - 0.5) / height
        return torch.stack([cx, cy, raw[..., 2].sigmoid(), raw[..., 3].sigmoid()], dim=-1)

    def _concat(
        self,
        visual: torch.Tensor,
        text: torch.Tensor,
        attention_mask: torch.Tensor,
        boxes: torch.Tensor | None,
        present: torch.Tensor | None,
    ) -> NativeOutput:
        pooled_text = masked_mean(text, attention_mask)
        out = self.mlp(torch.cat([visual.mean(dim=1), pooled_text], dim=-1))
        predicted, presence_logits = out[:, :4].sigmoid(), out[:, 4]
        loss = None
        if boxes is not None and present is not None:
            loss = self._box_loss(predicted, boxes, present > 0.5)
            loss = loss + PRESENCE_WEIGHT * F.binary_cross_entropy_with_logits(
                presence_logits, present.float()
            )
        return NativeOutput(loss, predicted, presence_logits)

    @staticmethod
    def _box_loss(
        predicted: torch.Tensor, target: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """L1 on normalised cx, cy, w, h plus (1 - GIoU), over queries whose referent exists."""
        if not positive.any():
            return predicted.sum() * 0.0
        predicted, target = predicted[positive], target[positive]
        l1 = F.l1_loss(predicted, target)
        giou = generalized_iou(cxcywh_to_xyxy(predicted), cxcywh_to_xyxy(target))
        return L1_WEIGHT * l1 + GIOU_WEIGHT * (1 - giou).mean()


AutoConfig.register(NativeConfig.model_type, NativeConfig)
AutoModel.register(NativeConfig, NativeGroundingModel)
