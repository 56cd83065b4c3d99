"""A learned score for the clip-rerank backend: how likely a proposal is what a query describes.

The head is a few fully connected layers on CLIP's unit image embedding of a proposal's
crop, the query's unit text embedding, their product and five numbers placing the box in
its image (centre, width, height, square root of its area share): the crop alone says
nothing of how large the box is or where it lies, and queries name both ("the large
cross", "the leftmost circle"). Its output is a logit; ``sigmoid`` of it is the
probability that the box is the query's referent, scored box by box, so an image without
the referent can score every box low.

The logit is ``similarity_weight * cosine + bias + mlp(...)`` with the MLP's last layer
starting at zero: a fresh head ranks proposals exactly as plain CLIP similarity does, and
fine-tuning starts from there.

On disk (a pipeline's ``head/``): ``config.json`` (``model_type`` :data:`HEAD_TYPE` and the
:class:`HeadConfig` fields) and ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sceneloc.errors import ModelNotFoundError

HEAD_TYPE = "sceneloc-clip-rerank-head"
#: The head's folder inside a pipeline directory.
HEAD_DIR = "head"
WEIGHTS_FILE = "model.safetensors"
#: Numbers :func:`box_features` gives per box.
BOX_FEATURES = 5


@dataclass(frozen=True)
class HeadConfig:
    """The head's shape; ``embed_dim`` is CLIP's projection size."""

    embed_dim: int
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    #: Whether the box's size and place in its image are inputs too.
    box_features: bool = True


def box_features(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``(n, 4)`` pixel boxes -> ``(n, 5)``: centre x, centre y, width, height as fractions
    of the image's, and the square root of the share of the image the box covers."""
    boxes = boxes.float()
    scale = boxes.new_tensor([width, height, width, height])
    x1, y1, x2, y2 = (boxes / scale).clamp(0.0, 1.0).unbind(-1)
    w, h = (x2 - x1).clamp(min=0.0), (y2 - y1).clamp(min=0.0)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, w, h, (w * h).sqrt()], dim=-1)


class ClipRerankHead(nn.Module):
    """Logits that a box (its crop's CLIP embedding and place) is what a query describes."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        width = 3 * config.embed_dim + (BOX_FEATURES if config.box_features else 0)
        layers: list[nn.Module] = []
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.hidden_size
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.similarity_weight = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(n,)`` logits of ``n`` pairs: unit embeddings ``image`` and ``text`` ``(n, d)``
        and, if the head uses them, the boxes' :func:`box_features` ``(n, 5)``."""
        parts = [image, text, image * text]
        if self.config.box_features:
            if boxes is None:
                raise ValueError("this head scores boxes by their place too: pass boxes")
            parts.append(boxes)
        cosine = (image * text).sum(-1)
        learned = self.out(self.mlp(torch.cat(parts, dim=-1))).squeeze(-1)
        return self.similarity_weight * cosine + self.bias + learned

    def start_from_similarity(self, cosines: torch.Tensor) -> None:
        """Make the fresh head's logits the standardised cosines of these pairs (same
        ranking as plain similarity, probabilities spread around one half, not saturated)."""
        std = float(cosines.float().std()) if cosines.numel() > 1 else 1.0
        std = max(std, 1e-3)
        with torch.no_grad():
            self.similarity_weight.fill_(1.0 / std)
            self.bias.fill_(-float(cosines.float().mean()) / std)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model_type": HEAD_TYPE, **asdict(self.config)}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {name: tensor.detach().float().cpu().contiguous()
                 for name, tensor in self.state_dict().items()}  # fmt: skip
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def load(cls, directory: str | Path) -> ClipRerankHead:
        """The head saved in ``directory`` (on the CPU, fp32, in inference mode)."""
        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
            if config.pop("model_type", None) != HEAD_TYPE:
                raise ValueError(f"config.json is not a {HEAD_TYPE} config")
            state = load_file(str(directory / WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as exc:
            raise ModelNotFoundError(
                f"cannot read the re-ranking head in {directory}: {exc}"
            ) from None
        known = {field.name for field in fields(HeadConfig)}
        head = cls(HeadConfig(**{k: v for k, v in config.items() if k in known}))
        head.load_state_dict(state)
        return head.eval()
