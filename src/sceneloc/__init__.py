"""sceneloc: find the region of an image that a natural-language description refers to.

>>> import sceneloc
>>> grounder = sceneloc.load("grounding-dino-tiny")
>>> answer = grounder.locate("market.jpg", "a vendor selling vegetables")
>>> result, = answer
>>> result.box, result.score
>>> result.crop().save("vendor.png")
>>> result.candidates.nms(0.5).to_coco(image_id=1, category_id=1)
>>> sceneloc.finetune("grounding-dino-tiny", "mine/train.jsonl", "runs/gd", val="mine/val.jsonl")
"""

from typing import Any

from sceneloc.api import Describer, Grounder, load
from sceneloc.candidates import Candidate, Candidates
from sceneloc.errors import (
    DataFormatError,
    ImageTooLargeError,
    InvalidBoxError,
    InvalidImageError,
    InvalidQueryError,
    ModelNotFoundError,
    SceneLocError,
    TaskNotSupportedError,
    UnsupportedModelError,
)
from sceneloc.images import load_image
from sceneloc.registry import list_backends, list_models
from sceneloc.results import DescribeAnswer, LocateAnswer, LocateResult, RegionDescription

__version__ = "0.1.0"


def finetune(model: str, data: Any, out: Any, **options: Any) -> Any:
    """Fine-tune a pretrained grounder on your samples: see
    :func:`sceneloc.training.finetune.finetune` (imported on first use: it loads the
    training stack)."""
    from sceneloc.training.finetune import finetune as run

    return run(model, data, out, **options)


__all__ = [
    "Candidate",
    "Candidates",
    "DataFormatError",
    "DescribeAnswer",
    "Describer",
    "Grounder",
    "ImageTooLargeError",
    "InvalidBoxError",
    "InvalidImageError",
    "InvalidQueryError",
    "LocateAnswer",
    "LocateResult",
    "ModelNotFoundError",
    "RegionDescription",
    "SceneLocError",
    "TaskNotSupportedError",
    "UnsupportedModelError",
    "__version__",
    "finetune",
    "list_backends",
    "list_models",
    "load",
    "load_image",
]
