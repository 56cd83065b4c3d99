"""The native region describer: an image encoder, a region encoder and a GRU decoder.

A region is described by what sets it apart, so the model sees both the box and the whole
image. The image is encoded once (the grounder's CNN, :class:`ImageEncoder`, and an
image-context transformer); every box then gets its own tokens: features sampled on a grid
inside the box (``grid_sample``, RoI-align style) and a summary token, which attend over the
image's tokens with each token's place *relative to the box* added (what lies left of it,
above it, inside it). The GRU decoder (Show, Attend and Tell) attends at every step over the
region's tokens, and is trained with teacher forcing and cross-entropy. (Attending over all
the image's tokens at every step as well costs most of the training time for no gain: the
region's tokens have already read the image.)

When the data lists every object (the synthetic scenes' ``scenes.jsonl``), attribute heads
name each object's colour, shape and size at its centre token and an object map says where
things are and how large (as in the grounder, :mod:`sceneloc.native.model` and
:mod:`sceneloc.native.reasoning`): a caption loss alone teaches colour slowly. With them,
each region also gets *comparisons*: how many other things share its attributes (all of
them, or all but one), anywhere and to each side of it, larger and smaller. Whether "the red
star" is enough or "the leftmost red star" is needed is exactly such a count; attention
alone learns it slowly, as the grounder's transformer learnt relations and orderings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from sceneloc.errors import SceneLocError
from sceneloc.native.config import BUILTIN_CNN
from sceneloc.native.encoders import ImageEncoder, transformer
from sceneloc.native.model import ATTRIBUTE_WEIGHT, OBJECT_MAP_WEIGHT, _cell_index
from sceneloc.native.reasoning import cell_coordinates, object_map, object_map_head, object_map_loss

#: Special token ids of the describer's word-level vocabulary (``[PAD]``, ``[UNK]`` come
#: from :func:`sceneloc.native.text.word_tokenizer`; the decoder adds these two after them).
PAD_ID, BOS_TOKEN, EOS_TOKEN = 0, "[BOS]", "[EOS]"
#: Relative-place features of an image token seen from a box (see ``_relative_places``).
PLACE_FEATURES = 7
#: Comparisons are counted anywhere, left, right, above, below, larger and smaller; the
#: softness of "left of the region's centre" (normalised image units) and of "larger" (log
#: size).
DIRECTIONS, PLACE_SOFTNESS, SIZE_SOFTNESS = 7, 0.02, 0.1


class DescriberConfig(PretrainedConfig):
    """Everything needed to rebuild a native describer."""

    model_type = "sceneloc-native-describer"

    def __init__(
        self,
        image_encoder: str = BUILTIN_CNN,
        image_size: int = 256,
        hidden_size: int = 128,
        image_layers: int = 2,
        region_layers: int = 2,
        attention_heads: int = 4,
        cnn_channels: tuple[int, ...] | list[int] = (32, 64, 96, 128),
        region_grid: int = 3,
        vocab_size: int = 0,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        pad_token_id: int = PAD_ID,
        max_caption_length: int = 24,
        image_mean: tuple[float, ...] | list[float] = (0.485, 0.456, 0.406),
        image_std: tuple[float, ...] | list[float] = (0.229, 0.224, 0.225),
        dropout: float = 0.1,
        backbone_config: dict[str, Any] | None = None,
        object_attributes: dict[str, list[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_encoder = image_encoder
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.image_layers = image_layers
        self.region_layers = region_layers
        self.attention_heads = attention_heads
        self.cnn_channels = list(cnn_channels)
        # Features are sampled at region_grid x region_grid points inside each box.
        self.region_grid = region_grid
        self.vocab_size = vocab_size
        self.max_caption_length = max_caption_length
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.dropout = dropout
        self.backbone_config = backbone_config
        # Attributes (name -> values) named at each object's centre in training (synthetic
        # scenes); unused at inference.
        self.object_attributes = object_attributes
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )


@dataclass
class DescriberOutput(ModelOutput):
    """``loss`` in training; ``logits`` ``(regions, length, vocab)`` of teacher forcing."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class RegionMemory:
    """What the decoder reads for each region: its tokens ``(regions, tokens, hidden)``, the
    first a summary, the others the grid inside the box, each having attended over the
    whole image seen from the box."""

    tokens: torch.Tensor

    def repeat(self, times: int) -> RegionMemory:
        """Each region's memory ``times`` over in a row (one per beam)."""
        return RegionMemory(self.tokens.repeat_interleave(times, dim=0))


@dataclass(frozen=True)
class GeneratedCaption:
    """Token ids (without ``[EOS]``) and the mean log-probability of the generated tokens
    (the ``[EOS]`` included: it is a choice of the model, to stop)."""

    token_ids: list[int]
    score: float


def _relative_places(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(regions, cells, 7)``: each cell centre's offset from the box centre in image units
    and in box sides, its distance outside the box along x and y, and 1 when inside."""
    column, row = cell_coordinates(grid, boxes.device)
    x = ((column + 0.5) / grid[1])[None]
    y = ((row + 0.5) / grid[0])[None]
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    width, height = (x2 - x1).clamp(min=1e-3), (y2 - y1).clamp(min=1e-3)
    outside_x = (x1 - x).clamp(min=0) - (x - x2).clamp(min=0)
    outside_y = (y1 - y).clamp(min=0) - (y - y2).clamp(min=0)
    inside = ((outside_x == 0) & (outside_y == 0)).float()
    dx, dy = x - cx, y - cy
    features = [dx, dy, dx / width, dy / height, outside_x, outside_y, inside]
    return torch.stack(features, dim=-1)


class NativeDescriberModel(PreTrainedModel):
    """Image encoder + region encoder + attending GRU decoder; see the module docstring."""

    config_class = DescriberConfig
    base_model_prefix = "describer"
    main_input_name = "pixel_values"

    def __init__(self, config: DescriberConfig, load_pretrained_encoders: bool = False) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.image_encoder = ImageEncoder(config, load_pretrained_encoders)
        self.image_context = transformer(config, config.image_layers)
        self.place = nn.Sequential(
            nn.Linear(PLACE_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        # The box's own place and shape, added to its summary token.
        self.geometry = nn.Sequential(nn.Linear(4, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.summary_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.grid_positions = nn.Parameter(torch.randn(1, config.region_grid**2, hidden) * 0.02)
        layer = nn.TransformerDecoderLayer(
            hidden, config.attention_heads, 4 * hidden, config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )  # fmt: skip
        self.region_encoder = nn.TransformerDecoder(
            layer, config.region_layers, norm=nn.LayerNorm(hidden)
        )
        self.embed = nn.Embedding(config.vocab_size, hidden, padding_idx=PAD_ID)
        self.initial_state = nn.Linear(hidden, hidden)
        self.attention_query = nn.Linear(hidden, hidden)
        self.gru = nn.GRUCell(2 * hidden, hidden)
        self.output = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, config.vocab_size)
        )
        self.attribute_heads = nn.ModuleDict(
            {
                name: nn.Linear(hidden, len(values))
                for name, values in (config.object_attributes or {}).items()
            }
        )
        if self.attribute_heads:
            self.objects = object_map_head(hidden)
            # One count per set of attributes shared (all, all but one) and direction.
            kinds = 1 + len(self.attribute_heads)
            self.compare = nn.Sequential(
                nn.Linear(kinds * DIRECTIONS, hidden), nn.GELU(), nn.Linear(hidden, hidden)
            )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Keep PyTorch's default initialisation."""

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(images, cells, hidden)`` context tokens and the grid; once per image."""
        tokens, grid = self.image_encoder(pixel_values)
        return self.image_context(tokens), grid

    def object_map(
        self, image_tokens: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image and cell, the objectness logit and the place (x, y, log size) of the
        thing centred there; only a describer trained on listed objects has one."""
        if not self.attribute_heads:
            raise SceneLocError(
                "this describer was trained without listed objects (no scenes.jsonl), so it "
                "has no object map to find regions with: pass boxes"
            )
        return object_map(self.objects, image_tokens, grid)

    def encode_regions(
        self,
        image_tokens: torch.Tensor,
        grid: tuple[int, int],
        boxes: torch.Tensor,
        image_index: torch.Tensor,
    ) -> RegionMemory:
        """The decoder's memory for each region: ``boxes`` ``(regions, 4)`` normalised
        ``x1, y1, x2, y2`` in image ``image_index[r]``."""
        regions, side = boxes.shape[0], self.config.region_grid
        feature_map = image_tokens.transpose(1, 2).reshape(image_tokens.shape[0], -1, *grid)
        steps = (torch.arange(side, device=boxes.device, dtype=boxes.dtype) + 0.5) / side
        xs = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])
        ys = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
        points = torch.stack(
            [xs[:, None, :].expand(-1, side, -1), ys[:, :, None].expand(-1, -1, side)], dim=-1
        )
        sampled = F.grid_sample(
            feature_map[image_index], points * 2 - 1, align_corners=False
        )  # (regions, hidden, side, side)
        inside = sampled.flatten(2).transpose(1, 2) + self.grid_positions
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        shape = torch.stack([cx, cy, boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], -1)
        summary = self.summary_token.expand(regions, -1, -1) + self.geometry(shape)[:, None]
        if self.attribute_heads:
            counts = self._comparisons(image_tokens, grid, boxes, image_index)
            summary = summary + self.compare(counts)[:, None]
        seen_from_box = image_tokens[image_index] + self.place(_relative_places(boxes, grid))
        return RegionMemory(self.region_encoder(torch.cat([summary, inside], dim=1), seen_from_box))

    def _comparisons(
        self,
        image_tokens: torch.Tensor,
        grid: tuple[int, int],
        boxes: torch.Tensor,
        image_index: torch.Tensor,
    ) -> torch.Tensor:
        """``(regions, (1 + attributes) * 7)``: log(1 + how many things) whose centre lies
        outside the box share the region's attributes, all of them or all but one, counted
        anywhere, left of, right of, above, below the box's centre, larger and smaller.

        Read from the attribute heads and the object map, which learn from their own labels
        (no gradient flows back through the counts)."""
        with torch.no_grad():
            objectness, places = self.object_map(image_tokens, grid)
            side = boxes[:, 2:] - boxes[:, :2]
            centre = torch.stack(
                [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=-1
            )
            feature_map = image_tokens.transpose(1, 2).reshape(image_tokens.shape[0], -1, *grid)
            own_token = F.grid_sample(
                feature_map[image_index], (centre * 2 - 1)[:, None, None], align_corners=False
            )[:, :, 0, 0]
            agreements = torch.stack(
                [
                    torch.einsum(
                        "rcv,rv->rc",
                        head(image_tokens).softmax(-1)[image_index],
                        head(own_token).softmax(-1),
                    )
                    for head in self.attribute_heads.values()
                ],
                dim=-1,
            )  # (regions, cells, attributes)
            shared = [agreements.prod(-1)] + [
                agreements[..., [a for a in range(agreements.shape[-1]) if a != left_out]].prod(-1)
                for left_out in range(agreements.shape[-1])
            ]
            x, y, log_size = places[image_index].unbind(-1)
            inside = (
                (x >= boxes[:, 0:1])
                & (x <= boxes[:, 2:3])
                & (y >= boxes[:, 1:2])
                & (y <= boxes[:, 3:4])
            )
            things = objectness[image_index].sigmoid() * (~inside).float()
            own_size = side.amax(-1, keepdim=True).clamp(min=1e-4).log()
            dx, dy = (x - centre[:, 0:1]) / PLACE_SOFTNESS, (y - centre[:, 1:2]) / PLACE_SOFTNESS
            larger = (log_size - own_size) / SIZE_SOFTNESS
            directions = torch.stack(
                [torch.ones_like(dx), (-dx).sigmoid(), dx.sigmoid(), (-dy).sigmoid(),
                 dy.sigmoid(), larger.sigmoid(), (-larger).sigmoid()],
                dim=-1,
            )  # fmt: skip
            counts = [torch.einsum("rc,rcd->rd", things * same, directions) for same in shared]
            return torch.cat(counts, dim=-1).log1p()

    def _step(
        self, memory: RegionMemory, token_ids: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step: attend with the previous state, update the GRU, give logits."""
        context = self._attend(memory, state)
        state = self.gru(torch.cat([self.embed(token_ids), context], dim=-1), state)
        return self.output(torch.cat([state, self._attend(memory, state)], dim=-1)), state

    def _attend(self, memory: RegionMemory, state: torch.Tensor) -> torch.Tensor:
        query = self.attention_query(state)[:, None]
        return F.scaled_dot_product_attention(query, memory.tokens, memory.tokens)[:, 0]

    def _initial_state(self, memory: RegionMemory) -> torch.Tensor:
        return torch.tanh(self.initial_state(memory.tokens[:, 0]))

    def forward(
        self,
        pixel_values: torch.Tensor,
        boxes: torch.Tensor,
        image_index: torch.Tensor,
        caption_ids: torch.Tensor | None = None,
        object_boxes: torch.Tensor | None = None,
        object_labels: torch.Tensor | None = None,
    ) -> DescriberOutput:
        """Teacher-forced logits for ``caption_ids`` ``(regions, length)`` (``[BOS]``
        first, ``[EOS]`` last, padded with 0) of the regions ``boxes`` (normalised
        ``x1, y1, x2, y2``) in images ``image_index``; the loss is the cross-entropy of
        every next word. ``object_boxes`` ``(images, m, 4)`` (normalised cx, cy, w, h) and
        ``object_labels`` ``(images, m, attributes)`` add the attribute heads' loss."""
        image_tokens, grid = self.encode_image(pixel_values)
        memory = self.encode_regions(image_tokens, grid, boxes, image_index)
        if caption_ids is None:
            return DescriberOutput()
        logits = self.teacher_forced_logits(memory, caption_ids[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1), caption_ids[:, 1:].flatten(), ignore_index=PAD_ID
        )
        if object_boxes is not None and object_labels is not None and self.attribute_heads:
            loss = loss + self._object_loss(image_tokens, grid, object_boxes, object_labels)
        return DescriberOutput(loss, logits)

    def teacher_forced_logits(self, memory: RegionMemory, inputs: torch.Tensor) -> torch.Tensor:
        """``(regions, length, vocab)``: the logits of each next word given the true ones."""
        state = self._initial_state(memory)
        logits = []
        for position in range(inputs.shape[1]):
            step_logits, state = self._step(memory, inputs[:, position], state)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def _object_loss(
        self,
        image_tokens: torch.Tensor,
        grid: tuple[int, int],
        objects: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-entropy of each attribute head at the token under each object's centre,
        and the object map's loss."""
        cells = _cell_index(objects[..., 0], objects[..., 1], grid)
        tokens = image_tokens.gather(1, cells.unsqueeze(-1).expand(-1, -1, image_tokens.shape[-1]))
        losses = [
            F.cross_entropy(head(tokens).flatten(0, 1), labels[..., i].flatten())
            for i, head in enumerate(self.attribute_heads.values())
            if (labels[..., i] >= 0).any()
        ]
        if not losses:
            return tokens.sum() * 0.0
        valid = (labels >= 0).any(dim=-1)
        places = object_map_loss(self.objects, image_tokens, grid, cells, objects, valid)
        return ATTRIBUTE_WEIGHT * torch.stack(losses).mean() + OBJECT_MAP_WEIGHT * places

    @torch.no_grad()
    def generate_captions(
        self, memory: RegionMemory, *, num_beams: int = 1, max_new_tokens: int = 24
    ) -> list[GeneratedCaption]:
        """Beam search (``num_beams=1``: greedy) for each region of ``memory``.

        Beams grow by their summed log-probability; a beam that has said ``[EOS]`` stays as
        it is. Of the final beams, the one with the best mean log-probability per token wins.
        """
        regions, beams = memory.tokens.shape[0], num_beams
        memory = memory.repeat(beams)
        state = self._initial_state(memory)
        device = memory.tokens.device
        tokens = torch.full((regions * beams,), self.config.bos_token_id, device=device)
        sums = torch.full((regions, beams), float("-inf"), device=device)
        sums[:, 0] = 0.0  # all beams start equal: keep one, or the first step repeats it
        lengths = torch.zeros(regions, beams, dtype=torch.long, device=device)
        finished = torch.zeros(regions, beams, dtype=torch.bool, device=device)
        history = torch.zeros(regions, beams, 0, dtype=torch.long, device=device)
        for _ in range(max_new_tokens):
            logits, state = self._step(memory, tokens, state)
            log_probs = logits.float().log_softmax(dim=-1).view(regions, beams, -1)
            # A finished beam can only add padding, at no cost.
            frozen = torch.full_like(log_probs, float("-inf"))
            frozen[..., PAD_ID] = 0.0
            log_probs = torch.where(finished[..., None], frozen, log_probs)
            vocab = log_probs.shape[-1]
            candidates = (sums[..., None] + log_probs).view(regions, -1)
            sums, chosen = candidates.topk(beams, dim=-1)
            origin, word = chosen // vocab, chosen % vocab
            rows = torch.arange(regions, device=device)[:, None]
            was_finished = finished[rows, origin]
            lengths = lengths[rows, origin] + (~was_finished).long()
            finished = was_finished | (word == self.config.eos_token_id)
            history = torch.cat([history[rows, origin], word[..., None]], dim=-1)
            flat_origin = (rows * beams + origin).flatten()
            state, tokens = state[flat_origin], word.flatten()
            if finished.all():
                break
        means = sums / lengths.clamp(min=1)
        best = means.argmax(dim=-1)
        results = []
        for region in range(regions):
            beam = int(best[region])
            ids = history[region, beam, : int(lengths[region, beam])].tolist()
            if ids and ids[-1] == self.config.eos_token_id:
                ids = ids[:-1]
            results.append(GeneratedCaption(ids, float(means[region, beam])))
        return results


AutoConfig.register(DescriberConfig.model_type, DescriberConfig)
AutoModel.register(DescriberConfig, NativeDescriberModel)
