"""Training: one loop for every kind of model, each kind a small task on it.

>>> from sceneloc.training import train
>>> from sceneloc.training.native import NativeOptions
>>> options = NativeOptions.build("synthetic-cpu", data="synth/annotations.jsonl",
...                               val="synth/val.jsonl", out="runs/mine")
>>> records = train(options, progress=lambda p: print(p.step, p.total_steps, p.loss))
>>> records[-1].validation["val_acc"]

:mod:`~sceneloc.training.loop` runs a :class:`~sceneloc.training.task.TrainingTask` (devices,
optimizer, schedule, time budget, checkpoints, metrics, resume); a task says how its model is
built, fed, scored and saved. The native model's is :mod:`sceneloc.training.native`.
"""

from sceneloc.training.loop import ProgressCallback, Trainer, TrainingProgress, train
from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.state import EpochRecord
from sceneloc.training.task import EpochDataset, TrainingTask

__all__ = [
    "EpochDataset",
    "EpochRecord",
    "ProgressCallback",
    "Trainer",
    "TrainingError",
    "TrainingOptions",
    "TrainingProgress",
    "TrainingTask",
    "train",
]
