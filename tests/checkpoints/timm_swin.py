"""timm's Swin Transformer without timm: random weights under timm's names, and its forward.

timm imports torchvision, which cannot be installed here, so its ``features_only`` Swin is
written out from timm's ``swin_transformer.py`` (``SwinTransformerBlock._attn``,
``WindowAttention``, ``PatchMerging``, ``get_attn_mask``, ``get_relative_position_index``)
in plain torch, step by step as timm takes them, on a state dict with timm's key names as
its ``features_only`` model (``FeatureListNet``) spells them: ``layers_N.blocks.M...``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

Weights = dict[str, torch.Tensor]


def timm_swin_weights(
    embed_dim: int,
    depths: list[int],
    num_heads: list[int],
    window: int,
    patch: int = 4,
    mlp_ratio: int = 4,
    seed: int = 0,
) -> Weights:
    """Random weights of a timm Swin (v1), shaped and named as timm's ``features_only`` model.

    Spread wide enough (position biases included) that a weight read from the wrong place,
    or a window or shift taken differently, changes the features well beyond rounding."""
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int, std: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def linear(name: str, out: int, into: int, bias: bool = True) -> Weights:
        return {f"{name}.weight": random(out, into, std=into**-0.5)} | (
            {f"{name}.bias": random(out)} if bias else {}
        )

    def norm(name: str, width: int) -> Weights:
        return {f"{name}.weight": 1 + random(width), f"{name}.bias": random(width)}

    weights = {
        "patch_embed.proj.weight": random(embed_dim, 3, patch, patch),
        "patch_embed.proj.bias": random(embed_dim),
    } | norm("patch_embed.norm", embed_dim)
    width = embed_dim
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        if stage > 0:  # timm merges patches at the start of every stage but the first
            weights |= norm(f"layers_{stage}.downsample.norm", 4 * width)
            weights |= linear(f"layers_{stage}.downsample.reduction", 2 * width, 4 * width, False)
            width *= 2
        for index in range(depth):
            block = f"layers_{stage}.blocks.{index}"
            weights |= norm(f"{block}.norm1", width) | norm(f"{block}.norm2", width)
            weights |= linear(f"{block}.attn.qkv", 3 * width, width)
            weights[f"{block}.attn.relative_position_bias_table"] = random(
                (2 * window - 1) ** 2, heads, std=1.0
            )
            weights |= linear(f"{block}.attn.proj", width, width)
            weights |= linear(f"{block}.mlp.fc1", mlp_ratio * width, width)
            weights |= linear(f"{block}.mlp.fc2", width, mlp_ratio * width)
    return weights


def timm_swin_features(
    weights: Weights, pixels: torch.Tensor, out_indices: list[int], window: int
) -> list[torch.Tensor]:
    """The feature maps timm's ``features_only`` Swin returns (NHWC, no norm) for the stages
    ``out_indices``, built with ``always_partition=True`` (windows and shifts never shrink)."""
    patch = weights["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(pixels, weights["patch_embed.proj.weight"], weights["patch_embed.proj.bias"],
                 stride=patch).permute(0, 2, 3, 1)  # fmt: skip
    x = _layer_norm(x, weights, "patch_embed.norm")
    features = []
    stage = 0
    while f"layers_{stage}.blocks.0.norm1.weight" in weights:
        if stage > 0:
            x = _patch_merging(x, weights, f"layers_{stage}.downsample")
        index = 0
        while f"layers_{stage}.blocks.{index}.norm1.weight" in weights:
            shift = 0 if index % 2 == 0 else window // 2
            x = _block(x, weights, f"layers_{stage}.blocks.{index}", window, shift)
            index += 1
        if stage in out_indices:
            features.append(x)
        stage += 1
    return features


def _layer_norm(x: torch.Tensor, weights: Weights, name: str) -> torch.Tensor:
    weight = weights[f"{name}.weight"]
    return F.layer_norm(x, weight.shape, weight, weights[f"{name}.bias"], eps=1e-5)


def _linear(x: torch.Tensor, weights: Weights, name: str) -> torch.Tensor:
    return F.linear(x, weights[f"{name}.weight"], weights.get(f"{name}.bias"))


def _patch_merging(x: torch.Tensor, weights: Weights, name: str) -> torch.Tensor:
    batch, height, width, channels = x.shape
    x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
    _, height, width, _ = x.shape
    x = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
    x = x.permute(0, 1, 3, 4, 2, 5).flatten(3)
    return _linear(_layer_norm(x, weights, f"{name}.norm"), weights, f"{name}.reduction")


def _block(x: torch.Tensor, weights: Weights, name: str, window: int, shift: int) -> torch.Tensor:
    """``SwinTransformerBlock.forward``: window attention (shift, pad, attend, crop, shift
    back), then the MLP, each around a residual."""
    _, height, width, channels = x.shape
    y = _layer_norm(x, weights, f"{name}.norm1")
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    pad_h, pad_w = (window - height % window) % window, (window - width % window) % window
    y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
    _, padded_h, padded_w, _ = y.shape
    windows = _window_partition(y, window).view(-1, window * window, channels)
    mask = _attention_mask(padded_h, padded_w, window, shift, x.dtype) if shift else None
    attended = _window_attention(windows, weights, f"{name}.attn", window, mask)
    y = _window_reverse(attended.view(-1, window, window, channels), window, padded_h, padded_w)
    y = y[:, :height, :width, :]
    if shift:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
    x = x + y
    hidden = F.gelu(_linear(_layer_norm(x, weights, f"{name}.norm2"), weights, f"{name}.mlp.fc1"))
    return x + _linear(hidden, weights, f"{name}.mlp.fc2")


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, channels)


def _window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, height, width, channels)


def _attention_mask(
    height: int, width: int, window: int, shift: int, dtype: torch.dtype
) -> torch.Tensor:
    """``get_attn_mask``: the regions a shifted window mixes, labelled on the padded map."""
    image = torch.zeros((1, height, width, 1), dtype=dtype)
    count = 0
    for rows in ((0, -window), (-window, -shift), (-shift, None)):
        for columns in ((0, -window), (-window, -shift), (-shift, None)):
            image[:, rows[0] : rows[1], columns[0] : columns[1], :] = count
            count += 1
    regions = _window_partition(image, window).view(-1, window * window)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


def _window_attention(
    x: torch.Tensor, weights: Weights, name: str, window: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """``WindowAttention.forward`` (its unfused path): fused qkv, scaled scores plus the
    relative position bias and the shift mask, softmax, output projection."""
    windows, tokens, _ = x.shape
    table = weights[f"{name}.relative_position_bias_table"]
    heads = table.shape[1]
    qkv = _linear(x, weights, f"{name}.qkv").reshape(windows, tokens, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    bias = table[_relative_position_index(window).view(-1)].view(tokens, tokens, -1)
    scores = scores + bias.permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        count = mask.shape[0]
        scores = scores.view(-1, count, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
        scores = scores.view(-1, heads, tokens, tokens)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(windows, tokens, -1)
    return _linear(out, weights, f"{name}.proj")
