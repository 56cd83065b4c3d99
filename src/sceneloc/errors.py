"""The exceptions sceneloc raises for problems a user can fix.

Everything user-facing derives from :class:`SceneLocError`, so the CLI and the server
can turn any of them into a one-line message without a traceback.
"""

from __future__ import annotations


class SceneLocError(Exception):
    """Base class of every error caused by the user's input or environment."""


class InvalidImageError(SceneLocError):
    """The image is missing, unreadable, truncated or not an image at all."""


class ImageTooLargeError(InvalidImageError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class InvalidQueryError(SceneLocError):
    """A query is empty, blank or not a string."""


class InvalidBoxError(SceneLocError):
    """A region box is malformed (not four numbers, NaN, empty) or wholly outside the image."""


class ModelNotFoundError(SceneLocError):
    """The model name, hub id or local path could not be resolved or downloaded."""


class UnsupportedModelError(SceneLocError):
    """The checkpoint exists but no sceneloc backend handles its architecture."""


class TaskNotSupportedError(UnsupportedModelError):
    """The model exists and sceneloc runs it, but not for the task asked (say, a detector
    asked to describe a region)."""


class DataFormatError(SceneLocError):
    """A dataset or predictions file is malformed; the message names the file and record."""


class InvalidOptionError(SceneLocError):
    """An option has a value it cannot take (a tile size of 0, a negative overlap)."""


class CalibrationError(SceneLocError):
    """A calibration file is missing, unreadable or not one sceneloc wrote."""
