"""Image and text encoders of the native model; each returns tokens of ``hidden_size``.

The image side is the small built-in CNN or any transformers backbone (``AutoBackbone``,
e.g. ``microsoft/resnet-50``); the text side is a small transformer trained from scratch,
static word vectors (GloVe format), or any transformers encoder (e.g. ``bert-base-uncased``).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from transformers import AutoBackbone, AutoConfig, AutoModel

from sceneloc.native.config import BUILTIN_CNN, BUILTIN_TEXT, WORD_VECTORS, NativeConfig


def sinusoidal_2d(height: int, width: int, size: int, device: torch.device) -> torch.Tensor:
    """``(height * width, size)`` fixed 2-D position codes, so any grid size works."""
    quarter = size // 4
    frequencies = torch.exp(
        torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(1e4) / quarter)
    )
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] * frequencies
    xs = torch.arange(width, device=device, dtype=torch.float32)[:, None] * frequencies
    y_codes = torch.cat([ys.sin(), ys.cos()], dim=1)[:, None, :].expand(height, width, -1)
    x_codes = torch.cat([xs.sin(), xs.cos()], dim=1)[None, :, :].expand(height, width, -1)
    codes = torch.cat([y_codes, x_codes], dim=2).reshape(height * width, -1)
    return nn.functional.pad(codes, (0, size - codes.shape[1]))


def transformer(config: NativeConfig, layers: int) -> nn.TransformerEncoder:
    """A pre-norm transformer encoder of the model's width."""
    layer = nn.TransformerEncoderLayer(
        config.hidden_size, config.attention_heads, 4 * config.hidden_size, config.dropout,
        activation="gelu", batch_first=True, norm_first=True,
    )  # fmt: skip
    return nn.TransformerEncoder(
        layer, layers, norm=nn.LayerNorm(config.hidden_size), enable_nested_tensor=False
    )


def masked_mean(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's real (unpadded) tokens."""
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class ConvStage(nn.Sequential):
    """Halve the resolution, then refine: two 3x3 convolutions with group norm."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__(
            nn.Conv2d(inputs, outputs, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(8, outputs),
            nn.GELU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.GroupNorm(8, outputs),
            nn.GELU(),
        )


class BuiltinCNN(nn.Module):
    """A small CNN (stride 16) that learns in minutes on a CPU; for synthetic or small data."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        widths = [3, *channels]
        self.stages = nn.Sequential(*(ConvStage(a, b) for a, b in itertools.pairwise(widths)))
        self.channels = channels[-1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.stages(pixels)


class PretrainedBackbone(nn.Module):
    """The last feature map of a transformers backbone (ResNet, ConvNeXt, Swin, ...)."""

    def __init__(self, config: NativeConfig, pretrained: bool) -> None:
        super().__init__()
        if pretrained:
            self.backbone = AutoBackbone.from_pretrained(config.image_encoder)
            config.backbone_config = self.backbone.config.to_dict()
        else:
            backbone_config = AutoConfig.for_model(**config.backbone_config)
            self.backbone = AutoBackbone.from_config(backbone_config)
        self.channels = self.backbone.channels[-1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixels).feature_maps[-1]


class ImageEncoder(nn.Module):
    """Pixels to visual tokens with 2-D position codes: ``(batch, h * w, hidden)``, ``(h, w)``."""

    def __init__(self, config: NativeConfig, pretrained: bool) -> None:
        super().__init__()
        if config.image_encoder == BUILTIN_CNN:
            self.body: nn.Module = BuiltinCNN(config.cnn_channels)
        else:
            self.body = PretrainedBackbone(config, pretrained)
        self.project = nn.Conv2d(self.body.channels, config.hidden_size, 1)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        features = self.project(self.body(pixels))
        _batch, size, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        return tokens + sinusoidal_2d(height, width, size, tokens.device), (height, width)


class TextEncoder(nn.Module):
    """Token ids to text tokens ``(queries, length, hidden)``."""

    def __init__(self, config: NativeConfig, pretrained: bool) -> None:
        super().__init__()
        self.kind = config.text_encoder
        hidden = config.hidden_size
        if self.kind == BUILTIN_TEXT:
            self.embed = nn.Embedding(config.vocab_size, hidden, padding_idx=0)
            self.positions = nn.Embedding(config.max_text_length, hidden)
            self.encoder = transformer(config, config.text_layers)
            self.project: nn.Module = nn.Identity()  # the encoder ends in a layer norm
        elif self.kind == WORD_VECTORS:
            self.embed = nn.Embedding(config.vocab_size, config.word_vector_size, padding_idx=0)
            self.project = nn.Linear(config.word_vector_size, hidden)
        else:
            if pretrained:
                self.model = AutoModel.from_pretrained(config.text_encoder)
                config.text_config = self.model.config.to_dict()
            else:
                self.model = AutoModel.from_config(AutoConfig.for_model(**config.text_config))
            self.project = nn.Linear(self.model.config.hidden_size, hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.kind == BUILTIN_TEXT:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            tokens = self.embed(input_ids) + self.positions(positions)
            return self.project(self.encoder(tokens, src_key_padding_mask=attention_mask == 0))
        if self.kind == WORD_VECTORS:
            return self.project(self.embed(input_ids))
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.project(hidden)
