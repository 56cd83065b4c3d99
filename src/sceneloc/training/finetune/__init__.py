"""Fine-tuning the pretrained grounders on a user's own samples (``sceneloc finetune``).

>>> import sceneloc
>>> result = sceneloc.finetune("grounding-dino-tiny", "mine/train.jsonl", "runs/gd",
...                            val="mine/val.jsonl", epochs=3, lora_rank=16)
>>> result.before["acc@0.5"], result.after["acc@0.5"]

One :class:`~sceneloc.training.finetune.task.FinetuneTask` on the shared training loop; each
backend family's own part is a :class:`~sceneloc.training.finetune.recipe.Recipe`
(:data:`~sceneloc.training.finetune.recipe.RECIPES` names them).
"""

from sceneloc.training.finetune.options import FinetuneOptions
from sceneloc.training.finetune.recipe import RECIPES, FinetuneItem, Recipe, recipe_class
from sceneloc.training.finetune.task import FinetuneResult, FinetuneTask, finetune

__all__ = [
    "RECIPES",
    "FinetuneItem",
    "FinetuneOptions",
    "FinetuneResult",
    "FinetuneTask",
    "Recipe",
    "finetune",
    "recipe_class",
]
