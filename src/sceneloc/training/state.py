"""What a run leaves in its ``out`` folder besides the models.

``trainer_state.json`` (where to resume: epoch, step, best score, seconds) beside
Accelerate's ``state/`` (weights, optimizer, random generators), ``options.json`` (the
options the run started with), ``metrics.csv`` (one row per epoch)
and, for a distributed run, ``ranks/rankN.json`` (each process's share and a checksum of its
weights: the copies must end identical).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sceneloc.training.options import TrainingError

STATE_FILE = "trainer_state.json"
#: The options a run started with (a resume checks it is given the same model).
OPTIONS_FILE = "options.json"


@dataclass
class EpochRecord:
    """One epoch's row of ``metrics.csv``; ``validation`` holds the task's own metrics
    (``None`` where there was nothing to validate on)."""

    epoch: int
    step: int
    seconds: float
    train_loss: float
    lr: float
    validation: dict[str, float | None] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        validation = row.pop("validation")
        return {**row, **validation}


@dataclass
class RunState:
    """Where a run stands after an epoch."""

    epoch: int
    step: int
    #: The validation metrics of ``best/`` (the first decides, the next break ties).
    best: list[float]
    seconds: float


def read_state(out: Path) -> RunState:
    path = out / STATE_FILE
    if not path.is_file() or not (out / "last").is_dir():
        raise TrainingError(f"nothing to resume in {out}: no {STATE_FILE} and last/")
    state = RunState(**json.loads(path.read_text()))
    if not isinstance(state.best, list):  # saved before ties were broken
        state.best = [state.best]
    return state


def write_state(out: Path, state: RunState) -> None:
    (out / STATE_FILE).write_text(json.dumps(asdict(state)))


def write_options(out: Path, options: Any) -> None:
    (out / OPTIONS_FILE).write_text(json.dumps(asdict(options), indent=2, default=str))


def read_options(out: Path) -> dict[str, Any]:
    """The options the run in ``out`` started with (empty for a run saved before they were
    recorded)."""
    path = out / OPTIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def append_csv(path: Path, record: EpochRecord) -> None:
    row = record.row()
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def weights_digest(model: torch.nn.Module) -> str:
    """A checksum of the weights, to compare the copies of a distributed run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def write_rank_report(
    out: Path, rank: int, world_size: int, model: torch.nn.Module, queries: int, batches: int
) -> None:
    """Each process's share and a checksum of its weights, to check a distributed run."""
    report = {
        "rank": rank,
        "world_size": world_size,
        "queries_seen": queries,
        "batches_per_epoch": batches,
        "weights_sha256": weights_digest(model),
    }
    ranks = out / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / f"rank{rank}.json").write_text(json.dumps(report))
