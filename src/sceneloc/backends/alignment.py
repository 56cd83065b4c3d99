"""Propose and rank with the region-phrase alignment model (:mod:`sceneloc.native.alignment`).

The proposer, a native grounder, reads the image's objects off its object map
(:mod:`sceneloc.native.proposals`); the alignment model embeds each proposal once per call,
and each query then costs its word vectors and a product with the regions'. A candidate's
score is the softmax, over the proposals, of the phrase-to-region scores ``sum_t v_i . s_t``:
the probability that this proposal rather than another is the one the query describes.

The proposer is named by the model's ``config.proposer``: a directory (a relative one is
read inside the model's) or, when unset, the bundled ``native-synth``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sceneloc.backends.base import Backend, from_pretrained
from sceneloc.backends.native import BUNDLED
from sceneloc.candidates import Candidates
from sceneloc.native.alignment import AlignmentConfig, AlignmentModel
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.processing import normalize, resize, tokenize
from sceneloc.native.proposals import MAX_PROPOSALS, propose
from sceneloc.registry import Capability, ModelSettings, Task, register_backend


def proposer_path(config: AlignmentConfig, checkpoint: str | Path | None) -> Path:
    """Where the model's proposer is: see the module docstring."""
    if config.proposer is None:
        return BUNDLED
    path = Path(config.proposer)
    return path if path.is_absolute() or checkpoint is None else Path(checkpoint) / path


@register_backend(
    "alignment",
    tasks=[Task.LOCATE],
    model_types=(AlignmentConfig.model_type,),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.IMAGE_ENCODED_ONCE,
        Capability.TRAINABLE,
    ],
    # Scores are shares of one probability over the proposals: every proposal is ranked.
    settings=ModelSettings(default_threshold=0.0),
)
class AlignmentBackend(Backend):
    def __init__(
        self,
        model: AlignmentModel,
        tokenizer: PreTrainedTokenizerBase,
        proposer: NativeGroundingModel,
        checkpoint: str | None = None,
        max_proposals: int = MAX_PROPOSALS,
    ) -> None:
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.proposer = proposer.eval()
        self.max_proposals = max_proposals

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype, **options: int
    ) -> AlignmentBackend:
        model = from_pretrained(AlignmentModel.from_pretrained, checkpoint)
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, checkpoint)
        where = str(proposer_path(model.config, checkpoint))
        proposer = from_pretrained(NativeGroundingModel.from_pretrained, where)
        return cls(
            model.to(device=device, dtype=dtype), tokenizer,
            proposer.to(device=device, dtype=dtype), checkpoint, **options,
        )  # fmt: skip

    @torch.inference_mode()
    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        proposals = propose(self.proposer, image, max_proposals=self.max_proposals)
        if not len(proposals):
            return [Candidates.empty() for _ in queries]
        config = self.model.config
        pixels = torch.from_numpy(resize(image, config.image_size))[None].to(self.device)
        sides = np.array([image.width, image.height] * 2)
        boxes = torch.from_numpy(proposals.boxes / sides)[None].to(self.device, self.dtype)
        regions = self.model.encode_regions(normalize(pixels, config).to(self.dtype), boxes)
        text = tokenize(self.tokenizer, queries, config)
        mask = text["attention_mask"].to(self.device)
        words = self.model.encode_words(text["input_ids"].to(self.device), mask)
        scores = self.model.region_scores(regions[0], words, mask).float().softmax(dim=-1)
        return [Candidates.of(proposals.boxes, s, q) for q, s in zip(queries, scores)]
