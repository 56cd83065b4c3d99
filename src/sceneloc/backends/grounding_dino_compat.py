"""Single-stage Grounding DINO checkpoints (``two_stage=False``) load in transformers 5.24.

Its weight initialisation treats the learned reference points of a single-stage model as a
linear layer (``reference_points.bias``) and raises ``AttributeError`` whenever it runs on the
model, which ``from_pretrained`` does, so no single-stage checkpoint can be built or loaded.
:func:`patch` initialises the rest of the module as transformers does and the points'
weights alone; two-stage models (every published checkpoint) are untouched.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.models.grounding_dino import modeling_grounding_dino

_PATCHED = "_sceneloc_single_stage_init"


def patch() -> None:
    """Install the fixed initialisation once (idempotent)."""
    model_class = modeling_grounding_dino.GroundingDinoPreTrainedModel
    original = model_class._init_weights
    if getattr(original, _PATCHED, False):
        return

    def init_weights(self: Any, module: nn.Module) -> None:
        points = getattr(module, "reference_points", None)
        if not isinstance(points, nn.Embedding):
            return original(self, module)
        del module.reference_points  # everything else as transformers does it, then the points
        try:
            original(self, module)
        finally:
            module.reference_points = points
        nn.init.xavier_uniform_(points.weight, gain=1.0)

    setattr(init_weights, _PATCHED, True)
    model_class._init_weights = init_weights


patch()
