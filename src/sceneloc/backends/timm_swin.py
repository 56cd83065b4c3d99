"""timm's Swin Transformer weights run by transformers' own Swin backbone.

timm imports torchvision, which must not be a requirement here (its registry wheels need a
torch build of their own), so a checkpoint whose backbone is timm's Swin gets transformers'
``SwinBackbone`` instead, its weights renamed and re-laid out at load time:

* timm's fused ``attn.qkv`` projection is split into ``q_proj``, ``k_proj``, ``v_proj``
  (its output rows are query, key, value in that order, each head after head);
* timm puts each patch merging at the start of stages 1..3 (``layers_N.downsample``),
  transformers at the end of stages 0..2, so ``downsample`` moves one stage down;
* the other names differ only in spelling (``norm1`` is ``layernorm_before``, ...);
  both index the relative position bias table and merge 2 x 2 patches in the same order.

The architecture (widths, depths, heads, window, patch, MLP ratio) is read from the weights,
so any timm Swin (v1) converts. One computation differs: where a feature map's side is not a
multiple of the window, timm shifts the windows before padding the map and transformers pads
before shifting, so :func:`compute_like_timm` gives every layer timm's order.
"""

from __future__ import annotations

import math
import re

import torch
from transformers import SwinBackbone, SwinConfig
from transformers.models.swin.modeling_swin import SwinLayer, window_partition, window_reverse

#: timm's names (as its ``features_only`` model spells them) -> transformers' ``SwinBackbone``'s.
_RENAMES = [
    (r"^patch_embed\.proj\.", "swin.embeddings.patch_embeddings.projection."),
    (r"^patch_embed\.norm\.", "swin.embeddings.norm."),
    (r"^layers_(\d+)\.downsample\.", lambda m: f"swin.encoder.layers.{int(m[1]) - 1}.downsample."),
    (r"^layers_(\d+)\.blocks\.", r"swin.encoder.layers.\1.blocks."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.attn\.proj\.", ".attention.o_proj."),
    (r"\.attn\.relative_position_bias_table$",
     ".attention.relative_position_bias.relative_position_bias_table"),
]  # fmt: skip
_FUSED_QKV = re.compile(r"\.attn\.qkv\.(weight|bias)$")


def swin_config(
    weights: dict[str, torch.Tensor], out_indices: list[int], image_size: int
) -> SwinConfig:
    """transformers' configuration of the timm Swin whose weights these are (timm's names),
    returning the stages timm's ``out_indices`` name."""
    projection = weights["patch_embed.proj.weight"]  # (width, channels, patch, patch)
    depths = _stage_depths(weights)
    tables = [
        weights[f"layers_{i}.blocks.0.attn.relative_position_bias_table"]
        for i in range(len(depths))
    ]
    width = projection.shape[0]
    return SwinConfig(
        image_size=image_size,
        patch_size=projection.shape[-1],
        num_channels=projection.shape[1],
        embed_dim=width,
        depths=depths,
        num_heads=[table.shape[1] for table in tables],
        window_size=(math.isqrt(tables[0].shape[0]) + 1) // 2,  # the table is (2w - 1)^2 long
        mlp_ratio=weights["layers_0.blocks.0.mlp.fc1.weight"].shape[0] / width,
        qkv_bias="layers_0.blocks.0.attn.qkv.bias" in weights,
        out_features=[f"stage{index + 1}" for index in out_indices],  # stage0 is the stem
    )


def swin_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's Swin weights under ``SwinBackbone``'s names and layouts (its output norms,
    ``hidden_states_norms``, are not among them: timm's features have none), and the final
    norm ``SwinBackbone`` has but never applies, at its initial values."""
    width = weights["patch_embed.proj.weight"].shape[0] * 2 ** (len(_stage_depths(weights)) - 1)
    converted = {
        "swin.layernorm.weight": torch.ones(width),
        "swin.layernorm.bias": torch.zeros(width),
    }
    for key, tensor in weights.items():
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        fused = _FUSED_QKV.search(key)
        if fused:
            start, kind = key[: fused.start()], fused[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3)):
                converted[f"{start}.attention.{name}.{kind}"] = part
        else:
            converted[key] = tensor
    return converted


def _stage_depths(weights: dict[str, torch.Tensor]) -> list[int]:
    depths: list[int] = []
    while f"layers_{len(depths)}.blocks.0.norm1.weight" in weights:
        block = re.compile(rf"layers_{len(depths)}\.blocks\.\d+\.norm1\.weight")
        depths.append(sum(1 for key in weights if block.fullmatch(key)))
    return depths


class TimmOrderSwinLayer(SwinLayer):
    """transformers' Swin layer with timm's order of shift and pad: timm rolls the map by
    half a window, pads it to whole windows, and crops before rolling back; transformers
    pads first. The windows, the padding inside them and so the outputs differ wherever a
    side is not a multiple of the window (at every stage of a 640 px input)."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        input_dimensions: tuple[int, int],
        always_partition: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not always_partition:
            self.set_shift_and_window_size(input_dimensions)
        height, width = input_dimensions
        batch_size, _, channels = hidden_states.size()
        shortcut = hidden_states

        hidden_states = self.layernorm_before(hidden_states).view(
            batch_size, height, width, channels
        )
        hidden_states, _ = self.maybe_pad(self.cyclic_shift(hidden_states), height, width)
        _, height_pad, width_pad, _ = hidden_states.shape
        windows = window_partition(hidden_states, self.window_size)
        windows = windows.view(-1, self.window_size * self.window_size, channels)
        attn_mask = self.get_attn_mask(
            height_pad, width_pad, dtype=hidden_states.dtype, device=hidden_states.device
        )
        attention_output, attn_weights = self.attention(windows, attn_mask, **kwargs)
        attention_output = self.dropout(attention_output)

        attention_windows = attention_output.view(-1, self.window_size, self.window_size, channels)
        attention_windows = window_reverse(
            attention_windows, self.window_size, height_pad, width_pad
        )
        attention_windows = self.cyclic_shift(attention_windows[:, :height, :width], reverse=True)
        attention_windows = attention_windows.reshape(batch_size, height * width, channels)
        hidden_states = shortcut + self.drop_path(attention_windows)

        residual = hidden_states
        hidden_states = self.mlp(self.layernorm_after(hidden_states))
        return self.dropout(hidden_states) + residual, attn_weights


def compute_like_timm(backbone: SwinBackbone) -> None:
    """Give every layer of ``backbone`` timm's order of shift and pad; its modules and
    weights stay transformers' own."""
    for stage in backbone.swin.encoder.layers:
        for layer in stage.blocks:
            layer.__class__ = TimmOrderSwinLayer
