"""Training the native model (:mod:`sceneloc.native`): options, presets, data, calibration."""

from sceneloc.training.native.task import PRESETS, NativeOptions, NativeTask, build_model

__all__ = ["PRESETS", "NativeOptions", "NativeTask", "build_model"]
