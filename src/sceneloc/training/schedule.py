"""How far along a run is, and the learning rate that goes with it.

Progress is the larger of the share of steps done and the share of the time budget spent,
so a run cut short by ``max_minutes`` still warms up and decays over the time it has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast

#: Learning-rate schedules after the warm-up: a cosine decay over the whole run, or the peak
#: rate held until the last ``STABLE_DECAY_FRACTION`` of it, then a cosine decay (as in
#: warmup-stable-decay schedules; for short budgets, where a long decay wastes the run).
SCHEDULES = ("cosine", "stable-decay")
STABLE_DECAY_FRACTION = 0.3


def lr_factor(warmup_fraction: float, shape: str) -> Callable[[float], float]:
    """Learning-rate factor for training progress in [0, 1]: linear warm-up, then a cosine
    decay over the rest (``cosine``) or over its last part only (``stable-decay``)."""
    decay_start = 1 - STABLE_DECAY_FRACTION if shape == "stable-decay" else warmup_fraction

    def factor(progress: float) -> float:
        if progress < warmup_fraction:
            return max(progress / warmup_fraction, 1e-3)
        decay = max(0.0, progress - decay_start) / max(1e-8, 1 - decay_start)
        return 0.5 * (1 + math.cos(math.pi * min(decay, 1.0)))

    return factor


class Clock:
    """Seconds of training, the same on every process (the main process's clock decides),
    so all stop at the same step and follow the same learning-rate schedule."""

    def __init__(self, accelerator: Accelerator, already: float = 0.0) -> None:
        self.accelerator = accelerator
        self.start = time.monotonic() - already

    def elapsed(self) -> float:
        seconds = torch.tensor([time.monotonic() - self.start], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            seconds = broadcast(seconds)
        return float(seconds.item())
