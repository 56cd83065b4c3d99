"""timm's Swin weights, converted, make transformers' SwinBackbone compute timm's features.

The reference is timm's computation written out from its source (``checkpoints.timm_swin``),
since timm itself cannot be installed here; both run in float64, so a misplaced weight or a
window taken differently shows far above rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from transformers import SwinBackbone

from checkpoints.timm_swin import timm_swin_features, timm_swin_weights
from sceneloc.backends import timm_swin

SWIN = dict(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window=7)
OUT_INDICES = [1, 2, 3]


def converted(weights: dict[str, torch.Tensor], like_timm: bool = True) -> SwinBackbone:
    """transformers' Swin backbone holding timm's weights, its output norms random."""
    backbone = SwinBackbone(timm_swin.swin_config(weights, OUT_INDICES, image_size=96))
    missing, unexpected = backbone.load_state_dict(timm_swin.swin_weights(weights), strict=False)
    assert not unexpected
    # Only its output norms, which timm's features lack.
    assert all(key.startswith("hidden_states_norms.") for key in missing)
    torch.manual_seed(0)
    for norm in backbone.hidden_states_norms.values():
        torch.nn.init.normal_(norm.weight, 1.0, 0.3)
        torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    if like_timm:
        timm_swin.compute_like_timm(backbone)
    return backbone.eval().double()


def timm_features_normalised(
    backbone: SwinBackbone, weights: dict[str, torch.Tensor], pixels: torch.Tensor
) -> list[torch.Tensor]:
    """timm's feature maps through the backbone's output norms, as NCHW."""
    features = timm_swin_features(weights, pixels, OUT_INDICES, SWIN["window"])
    norms = [backbone.hidden_states_norms[stage] for stage in backbone.out_features]
    return [
        F.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
        for x, norm in zip(features, norms)
    ]


def backbone_features(backbone: SwinBackbone, pixels: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(backbone(pixels).feature_maps)


@pytest.mark.parametrize("side", [96, 100, 224])
def test_converted_swin_computes_timms_features(side):
    """96 px gives sides 24, 12, 6, 3 (none whole windows of 7, two smaller than one), 100 px
    odd sides to merge (25, 13, 7, 4), 224 px whole windows throughout."""
    weights = {k: v.double() for k, v in timm_swin_weights(**SWIN).items()}
    backbone = converted(weights)
    pixels = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1)).double()
    got = backbone_features(backbone, pixels)
    want = timm_features_normalised(backbone, weights, pixels)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0)


def test_transformers_own_order_differs_where_sides_are_not_whole_windows():
    """Why every layer gets timm's order of shift and pad: transformers' own matches timm at
    224 px, whose sides are whole windows at every stage, and not at 96 px."""
    weights = {k: v.double() for k, v in timm_swin_weights(**SWIN).items()}
    backbone = converted(weights, like_timm=False)
    generator = torch.Generator().manual_seed(1)
    for side, same in ((224, True), (96, False)):
        pixels = torch.randn(1, 3, side, side, generator=generator).double()
        got = backbone_features(backbone, pixels)
        want = timm_features_normalised(backbone, weights, pixels)
        assert all(torch.allclose(g, w, atol=1e-10, rtol=0) for g, w in zip(got, want)) is same


def test_swin_t_architecture_is_read_from_its_weights():
    """Swin-T's weights, as in the released OmDet-Turbo checkpoint, give Swin-T's
    configuration, returning the stages timm's out_indices [1, 2, 3] name."""
    weights = timm_swin_weights(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                window=7)  # fmt: skip
    config = timm_swin.swin_config(weights, OUT_INDICES, image_size=640)
    assert (config.embed_dim, config.depths, config.num_heads) == (96, [2, 2, 6, 2], [3, 6, 12, 24])
    assert (config.window_size, config.patch_size, config.mlp_ratio) == (7, 4, 4.0)
    assert config.out_features == ["stage2", "stage3", "stage4"]
    assert SwinBackbone(config).channels == [192, 384, 768]
