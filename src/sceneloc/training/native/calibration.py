"""Calibrate the native model's presence score, so that it can say "not there".

Trained on few absent queries, the presence head alone scores absent queries well above
0.5 (README, "Saying not there"), so at 0.5 it would refuse almost none. The best cell's
logit tells plain descriptions apart (present things have a cell that matches well) but not
relations, whose logits run on another scale. A logistic regression on both (Platt scaling
with two inputs), fitted on the validation queries (present) and absent ones (the data's
own no-target queries, or, for data with none, as many certainly absent ones made as for
training: :func:`~sceneloc.training.native.queries.calibration_sampler`), with the two
classes weighted equally, gives a score whose 0.5 balances the two kinds of
error. Its weights go in the model's config (``presence_calibration``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from sceneloc.data.format import read_samples
from sceneloc.data.scenes import scenes_beside
from sceneloc.images import load_image
from sceneloc.training.native.dataset import group_by_image
from sceneloc.training.native.queries import calibration_sampler, present_and_absent

if TYPE_CHECKING:
    from sceneloc.backends.native import NativeBackend

logger = logging.getLogger(__name__)

#: L2 penalty on the weights: keeps the fit finite when the classes separate perfectly.
PENALTY = 1e-3


@dataclass(frozen=True)
class PresenceCalibration:
    """The fitted weights and what they do on the calibration queries at 0.5."""

    weights: list[float]
    present_kept: float
    absent_refused: float
    queries: int


def fit_presence(present: torch.Tensor, absent: torch.Tensor) -> PresenceCalibration:
    """Weights ``w`` such that ``sigmoid(features @ w)`` tells ``present`` rows ``(n, k)`` from
    ``absent`` rows ``(m, k)`` (the last column is the constant 1), each class weighing half."""
    if not len(present) or not len(absent):
        raise ValueError("calibration needs both present and absent queries")
    features = torch.cat([present, absent]).double()
    labels = torch.cat([torch.ones(len(present)), torch.zeros(len(absent))]).double()
    balance = torch.cat([torch.full((len(present),), 0.5 / len(present)),
                         torch.full((len(absent),), 0.5 / len(absent))]).double()  # fmt: skip
    weights = torch.zeros(features.shape[1], dtype=torch.double, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = features @ weights
        value = balance * F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        value = value.sum() + PENALTY * weights[:-1].square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    fitted = weights.detach()
    return PresenceCalibration(
        [round(w, 6) for w in fitted.tolist()],
        float((present.double() @ fitted >= 0).double().mean()),
        float((absent.double() @ fitted < 0).double().mean()),
        len(present) + len(absent),
    )


def calibrate_presence(
    backend: NativeBackend, data: str | Path, limit: int | None = 500, seed: int = 0
) -> PresenceCalibration | None:
    """Fit the presence score on ``data`` and store the weights in the model's config;
    ``None``, leaving the config as it was, when no absent query can be made (one image of
    photos and nothing to borrow from)."""
    data = Path(data)
    groups = group_by_image(islice(read_samples(data), limit), data.parent)
    absent_queries = calibration_sampler(groups, scenes_beside(data))
    rng = np.random.default_rng(seed)
    present, absent = [], []
    for group in groups:
        there, others = present_and_absent(group, absent_queries, rng)
        asked = [query for query, _ in there] + others
        image = load_image(group.path).image
        features = backend.model.presence_features(backend.forward(image, asked)).cpu()
        present.append(features[: len(there)])
        absent.append(features[len(there) :])
    if not sum(len(rows) for rows in absent):
        logger.warning("presence score not calibrated: %s gives no absent queries", data)
        return None
    calibration = fit_presence(torch.cat(present), torch.cat(absent))
    backend.model.config.presence_calibration = calibration.weights
    logger.info("presence score calibrated: %s", calibration)
    return calibration
