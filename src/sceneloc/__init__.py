"""sceneloc: find the region of an image that a natural-language description refers to.

>>> import sceneloc
>>> grounder = sceneloc.load("grounding-dino-tiny")
>>> result, = grounder.locate("market.jpg", "a vendor selling vegetables")
>>> result.box, result.score
>>> result.crop().save("vendor.png")
"""

from sceneloc.api import Grounder, load
from sceneloc.errors import (
    DataFormatError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidQueryError,
    ModelNotFoundError,
    SceneLocError,
    TaskNotSupportedError,
    UnsupportedModelError,
)
from sceneloc.images import load_image
from sceneloc.registry import list_backends, list_models
from sceneloc.types import Candidate, LocateResult, draw_results, results_to_dict

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "DataFormatError",
    "Grounder",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidQueryError",
    "LocateResult",
    "ModelNotFoundError",
    "SceneLocError",
    "TaskNotSupportedError",
    "UnsupportedModelError",
    "__version__",
    "draw_results",
    "list_backends",
    "list_models",
    "load",
    "load_image",
    "results_to_dict",
]
