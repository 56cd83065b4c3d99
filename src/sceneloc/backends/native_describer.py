"""sceneloc's own trainable region describer (``sceneloc train --task describe``).

The image is encoded once per ``describe`` call and every box is described from the same
features; captions come by beam search (greedy with one beam), each scored by its mean
token log-probability. Without boxes (dense captions), the regions are the things the
describer's own object map finds, as the grounder's proposals are found
(:mod:`sceneloc.native.proposals`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sceneloc.backends.base import Caption
from sceneloc.backends.native import NativeModelBackend
from sceneloc.native.describer import NativeDescriberModel
from sceneloc.native.processing import normalize, resize
from sceneloc.native.proposals import map_boxes, select
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend

#: The describer trained on synthetic dense scenes that ships inside the package.
BUNDLED = Path(__file__).resolve().parents[1] / "native" / "weights" / "native-describer-synth"


#: Objectness a thing needs to be described in dense mode: more likely there than not.
DENSE_MIN_OBJECTNESS = 0.5


@register_backend(
    "native-describer",
    tasks=[Task.DESCRIBE],
    model_types=("sceneloc-native-describer",),
    capabilities=[
        Capability.IMAGE_ENCODED_ONCE,
        Capability.TRAINABLE,
        Capability.DENSE_CAPTIONS,
    ],
    # Greedy: captions of the synthetic grammar are short, and beams found no better ones.
    settings=ModelSettings(num_beams=1, max_new_tokens=24),
    models=[
        Model(
            "native-describer-synth",
            str(BUNDLED),
            "bundled with sceneloc, no download: trained on synthetic dense scenes",
        ),
    ],
)
class NativeDescriberBackend(NativeModelBackend):
    model_class = NativeDescriberModel
    model: NativeDescriberModel

    @torch.inference_mode()
    def describe(
        self,
        image: Image.Image,
        boxes: np.ndarray | None,
        *,
        max_new_tokens: int,
        num_beams: int,
    ) -> list[Caption]:
        pixels = torch.from_numpy(resize(image, self.config.image_size))[None].to(self.device)
        model = self.model
        tokens, grid = model.encode_image(normalize(pixels, self.config).to(self.dtype))
        if boxes is None:  # dense: the things the describer's own object map finds
            found = map_boxes(*(t[0] for t in model.object_map(tokens, grid)))
            boxes = select(*found, image.size, min_objectness=DENSE_MIN_OBJECTNESS).boxes
        if len(boxes) == 0:
            return []
        scale = np.array([image.width, image.height, image.width, image.height])
        normalized = torch.as_tensor(boxes / scale, dtype=self.dtype, device=self.device)
        image_index = torch.zeros(len(boxes), dtype=torch.long, device=self.device)
        memory = model.encode_regions(tokens, grid, normalized, image_index)
        generated = model.generate_captions(
            memory, num_beams=num_beams, max_new_tokens=max_new_tokens
        )
        return [
            Caption(
                [float(v) for v in box], self.tokenizer.decode(caption.token_ids), caption.score
            )
            for box, caption in zip(boxes, generated)
        ]
