"""Training: one loop for every kind of model, each kind a small task on it.

>>> from sceneloc.training import train
>>> from sceneloc.training.native import NativeOptions
>>> options = NativeOptions.build("synthetic-cpu", data="synth/annotations.jsonl",
...                               val="synth/val.jsonl", out="runs/mine")
>>> records = train(options, progress=lambda p: print(p.step, p.total_steps, p.loss))
>>> records[-1].validation["val_acc"]

:mod:`~sceneloc.training.loop` runs a :class:`~sceneloc.training.task.TrainingTask` (devices,
optimizer, schedule, time budget, checkpoints, metrics, resume); a task says how its model is
built, fed, scored and saved. The native model's is :mod:`sceneloc.training.native`, the
describer's :mod:`sceneloc.training.describe`; :data:`TRAINING_TASKS` names each task's
options (``sceneloc train --task NAME``).
"""

import importlib

from sceneloc.training.loop import ProgressCallback, Trainer, TrainingProgress, train
from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.state import EpochRecord
from sceneloc.training.task import EpochDataset, TrainingTask

#: ``sceneloc train --task`` names -> the options class of that task ("module:Class"),
#: imported on first use.
TRAINING_TASKS: dict[str, str] = {
    "locate": "sceneloc.training.native:NativeOptions",
    "describe": "sceneloc.training.describe:DescribeOptions",
    "align": "sceneloc.training.align:AlignOptions",
}


def task_options(task: str) -> type[TrainingOptions]:
    """The options class of a training task; an unknown task raises :class:`TrainingError`."""
    if task not in TRAINING_TASKS:
        raise TrainingError(
            f"unknown training task {task!r}; choose one of {', '.join(TRAINING_TASKS)}"
        )
    module, name = TRAINING_TASKS[task].split(":")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "TRAINING_TASKS",
    "EpochDataset",
    "EpochRecord",
    "ProgressCallback",
    "Trainer",
    "TrainingError",
    "TrainingOptions",
    "TrainingProgress",
    "TrainingTask",
    "task_options",
    "train",
]
