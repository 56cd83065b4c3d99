"""Training the region-phrase alignment model (:mod:`sceneloc.native.alignment`)."""

from sceneloc.training.align.task import PRESETS, AlignOptions, AlignTask

__all__ = ["PRESETS", "AlignOptions", "AlignTask"]
