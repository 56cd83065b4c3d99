"""What the backends that describe by generation share: the log-probability of each token
they wrote, and a caption's score from it."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from transformers import GenerationMixin
from transformers.generation.utils import GenerateOutput


def token_log_probs(model: GenerationMixin, output: GenerateOutput) -> torch.Tensor:
    """The log-probability of each generated token (sequences x generated steps, float32).

    ``output`` is what ``generate(..., output_scores=True, return_dict_in_generate=True)``
    returned. Beam search hands back log-softmaxed scores and the beam each token came
    from; greedy search hands back logits, normalised here. Steps past a sequence's end
    score 0.
    """
    beams = getattr(output, "beam_indices", None)
    return model.compute_transition_scores(
        output.sequences, output.scores, beams, normalize_logits=beams is None
    ).float()


def mean_log_prob(
    tokens: Sequence[int], log_probs: Sequence[float], skipped: Collection[int]
) -> float | None:
    """A caption's length-normalised log-probability: the mean over its generated tokens,
    leaving out ``skipped`` ones (start, end, padding); ``None`` for a caption of no tokens.

    ``log_probs`` belong to the last ``len(log_probs)`` tokens of ``tokens``.
    """
    generated = tokens[len(tokens) - len(log_probs) :]
    kept = [p for t, p in zip(generated, log_probs) if t not in skipped]
    return sum(kept) / len(kept) if kept else None
