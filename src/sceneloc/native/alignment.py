"""The region-phrase alignment model of Karpathy & Fei-Fei (2015), on the native encoders.

Regions and words are embedded in one space: a region's vector ``v_i`` is the image
encoder's features pooled inside its box (bilinear samples on a grid over the box, as
RoIAlign) together with the box's place and size; a word's vector ``s_t`` is the text
encoder's token for it (in context, as the paper's bidirectional RNN). Image ``k`` and
sentence ``l`` score ``S_kl = sum_t max_i v_i . s_t``: each word finds its best region.
Trained on images with their regions and sentences by the bidirectional max-margin
ranking loss (:func:`ranking_loss`), the words learn the regions they name without ever
being told which one; grounding a phrase then ranks an image's regions by
``sum_t v_i . s_t`` (:meth:`AlignmentModel.region_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from sceneloc.native.config import NativeConfig
from sceneloc.native.encoders import ImageEncoder, TextEncoder, transformer

#: The margin of the ranking loss (the paper's).
MARGIN = 1.0


class AlignmentConfig(NativeConfig):
    """The native encoders' settings (fusion ones unused) and the alignment's own.

    ``region_samples``: the side of the grid of bilinear samples pooled in each box;
    ``region_weight``: the weight in training of :func:`region_ranking_loss` where the data
    says which region a sentence describes (0: the paper's image-sentence loss alone);
    ``proposer``: the native grounder whose object map proposes regions at inference, a
    directory (relative ones are read against the model's own) or ``None`` for the bundled
    ``native-synth``.
    """

    model_type = "sceneloc-alignment"

    def __init__(self, region_samples: int = 4, proposer: str | None = None, **kwargs: Any) -> None:
        self.region_samples = region_samples
        self.proposer = proposer
        super().__init__(**kwargs)


@dataclass
class AlignmentOutput(ModelOutput):
    """Region vectors ``(images, regions, d)``, word vectors ``(sentences, words, d)``, the
    image-sentence scores ``(images, sentences)`` and, in training, the ranking loss."""

    loss: torch.Tensor | None = None
    region_vectors: torch.Tensor | None = None
    word_vectors: torch.Tensor | None = None
    scores: torch.Tensor | None = None


def pool_regions(features: torch.Tensor, boxes: torch.Tensor, samples: int) -> torch.Tensor:
    """The mean of ``samples x samples`` bilinear samples of ``features`` ``(images, d, h, w)``
    inside each box ``(images, regions, 4)`` (normalised x1, y1, x2, y2): ``(images, regions,
    d)``. Sample points sit at the centres of a grid of equal cells over the box."""
    steps = (torch.arange(samples, device=boxes.device, dtype=boxes.dtype) + 0.5) / samples
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = x1[..., None] + (x2 - x1)[..., None] * steps  # (images, regions, samples)
    ys = y1[..., None] + (y2 - y1)[..., None] * steps
    grid = torch.stack(
        [xs[..., None, :].expand(*xs.shape[:-1], samples, samples),
         ys[..., :, None].expand(*ys.shape[:-1], samples, samples)],
        dim=-1,
    ).flatten(2, 3)  # fmt: skip
    sampled = F.grid_sample(features, grid * 2 - 1, align_corners=False)
    return sampled.mean(dim=-1).transpose(1, 2)


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """Each box's corners, width and height (normalised): ``(..., 6)``."""
    sizes = boxes[..., 2:] - boxes[..., :2]
    return torch.cat([boxes, sizes], dim=-1)


def sentence_scores(
    region_vectors: torch.Tensor,
    region_mask: torch.Tensor,
    word_vectors: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """``S_kl = sum_t max_i v_i . s_t`` for every image ``k`` and sentence ``l``:
    ``(images, sentences)``. Padded regions and words take no part."""
    dots = torch.einsum("kid,ltd->klit", region_vectors, word_vectors)
    dots = dots.masked_fill(~region_mask.bool()[:, None, :, None], torch.finfo(dots.dtype).min)
    best = dots.max(dim=2).values  # (images, sentences, words)
    return (best * attention_mask[None].to(best.dtype)).sum(dim=-1)


def ranking_loss(
    scores: torch.Tensor, image_index: torch.Tensor, margin: float = MARGIN
) -> torch.Tensor:
    """The bidirectional max-margin ranking loss over a batch, per sentence ``l`` of image
    ``k``: ``sum_{l'} max(0, S_kl' - S_kl + margin)`` over the sentences ``l'`` of other
    images, plus ``sum_{k'} max(0, S_k'l - S_kl + margin)`` over the other images ``k'``;
    summed over the batch's sentences. ``scores``: ``(images, sentences)``;
    ``image_index``: each sentence's image.

    With one sentence per image this is the paper's ``sum_k [sum_l max(0, S_kl - S_kk + 1)
    + sum_l max(0, S_lk - S_kk + 1)]``, less its terms ``l = k`` (the constant 2 per image),
    so that a perfect ranking costs 0.
    """
    sentences = torch.arange(scores.shape[1], device=scores.device)
    positive = scores[image_index, sentences]  # S_kl of each sentence's own image
    own = image_index[None, :] == torch.arange(scores.shape[0], device=scores.device)[:, None]
    # Rank sentences for an image: image k's score of other images' sentences l'.
    against_sentences = (scores[image_index] - positive[:, None] + margin).clamp(min=0)
    against_sentences = against_sentences.masked_fill(own[image_index], 0.0)
    # Rank images for a sentence: the other images' scores of sentence l.
    against_images = (scores - positive[None, :] + margin).clamp(min=0).masked_fill(own, 0.0)
    return against_sentences.sum() + against_images.sum()


def region_ranking_loss(
    region_scores: torch.Tensor,
    region_mask: torch.Tensor,
    target_region: torch.Tensor,
    margin: float = MARGIN,
) -> torch.Tensor:
    """The same max-margin ranking within each sentence's image, where the data says which
    region a sentence describes: ``sum_i max(0, R_li - R_lr + margin)`` over the other real
    regions ``i`` of sentence ``l``'s image, ``r`` its own; summed over the sentences whose
    ``target_region`` is known (not negative). ``region_scores``, ``region_mask``:
    ``(sentences, regions)``."""
    known = target_region >= 0
    if not known.any():
        return region_scores.sum() * 0.0
    scores, mask, target = region_scores[known], region_mask[known], target_region[known]
    positive = scores.gather(1, target[:, None])
    others = mask.clone()
    others[torch.arange(len(target), device=target.device), target] = False
    return ((scores - positive + margin).clamp(min=0) * others).sum()


class AlignmentModel(PreTrainedModel):
    """Image and text encoders embedding regions and words in one space; see the module
    docstring."""

    config_class = AlignmentConfig
    base_model_prefix = "alignment"
    main_input_name = "pixel_values"

    def __init__(self, config: AlignmentConfig, load_pretrained_encoders: bool = False) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.image_encoder = ImageEncoder(config, load_pretrained_encoders)
        # What is around each region, so a region's vector can say where it lies among others.
        self.image_context = transformer(config, config.image_layers)
        self.text_encoder = TextEncoder(config, load_pretrained_encoders)
        self.geometry = nn.Linear(6, hidden)
        self.region_head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.word_head = nn.Linear(hidden, hidden)
        self.post_init()
        self.freeze()

    def freeze(self) -> None:
        """With ``freeze_image_encoder``, the image side up to the pooled features stays as
        it started (a pretrained backbone, or the proposer's encoder): the ranking loss then
        teaches the words and the region head only, in a fraction of the time (also after
        ``from_pretrained``, which would make every loaded weight trainable again)."""
        if self.config.freeze_image_encoder:
            self.image_encoder.requires_grad_(False)
            self.image_context.requires_grad_(False)

    def train(self, mode: bool = True) -> AlignmentModel:
        """A frozen image side stays in eval mode (no dropout, no batch-norm drift)."""
        super().train(mode)
        if self.config.freeze_image_encoder:
            self.image_encoder.eval()
            self.image_context.eval()
        return self

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> AlignmentModel:
        model = super().from_pretrained(*args, **kwargs)
        model.freeze()
        return model

    def _init_weights(self, module: nn.Module) -> None:
        """Keep PyTorch's default initialisation and the pretrained encoders' weights."""

    def encode_regions(self, pixel_values: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Region vectors ``(images, regions, d)`` of boxes ``(images, regions, 4)``
        (normalised x1, y1, x2, y2) in each image."""
        visual, (height, width) = self.image_encoder(pixel_values)
        visual = self.image_context(visual)
        features = visual.transpose(1, 2).reshape(visual.shape[0], -1, height, width)
        pooled = pool_regions(features, boxes.to(features.dtype), self.config.region_samples)
        place = self.geometry(box_geometry(boxes.to(features.dtype)))
        return self.region_head(torch.cat([pooled, place], dim=-1))

    def encode_words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Word vectors ``(sentences, words, d)``."""
        return self.word_head(self.text_encoder(input_ids, attention_mask))

    def forward(
        self,
        pixel_values: torch.Tensor,
        region_boxes: torch.Tensor,
        region_mask: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
        target_region: torch.Tensor | None = None,
    ) -> AlignmentOutput:
        """Score every sentence (row of ``input_ids``) against every image's regions
        (``region_boxes`` ``(images, regions, 4)``, ``region_mask`` marking the real ones).
        With ``image_index`` (each sentence's image) the output carries the ranking loss;
        with ``target_region`` too (the index of the region each sentence describes in its
        image, -1 where not known), plus ``region_weight`` times :func:`region_ranking_loss`."""
        regions = self.encode_regions(pixel_values, region_boxes)
        words = self.encode_words(input_ids, attention_mask)
        scores = sentence_scores(regions, region_mask, words, attention_mask)
        loss = None
        if image_index is not None:
            loss = ranking_loss(scores, image_index)
            if target_region is not None and self.config.region_weight:
                fits = self.region_scores(regions[image_index], words, attention_mask)
                loss = loss + self.config.region_weight * region_ranking_loss(
                    fits, region_mask[image_index], target_region
                )
        return AlignmentOutput(loss, regions, words, scores)

    @staticmethod
    def region_scores(
        region_vectors: torch.Tensor, word_vectors: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """How well each phrase fits each region, ``sum_t v_i . s_t``: ``(phrases, regions)``
        from the regions ``(regions, d)`` of one image (or ``(phrases, regions, d)``, each
        phrase's own) and the phrases' words."""
        if region_vectors.dim() == 2:
            region_vectors = region_vectors.expand(word_vectors.shape[0], -1, -1)
        dots = torch.einsum("lid,ltd->lit", region_vectors, word_vectors)
        return (dots * attention_mask[:, None, :].to(dots.dtype)).sum(dim=-1)


AutoConfig.register(AlignmentConfig.model_type, AlignmentConfig)
AutoModel.register(AlignmentConfig, AlignmentModel)
