"""OWLv2: an open-vocabulary detector scoring every image patch's box against each query.

OWLv2 compares text and image only at the very end (a dot product per patch and query), so
one forward pass with the image once and all queries as its text batch encodes the image
once and scores every query against the same patch features and boxes.

transformers' post-processing gives each box only to the query it scores best, which
would make a query's answer depend on the others asked with it. Here each query's column
of logits goes through that same post-processing on its own, so a query gets exactly what
it gets when asked alone.

OWLv2 pads the image to a square at the bottom and right; the post-processing scales
boxes by the longer side, so they come back in the original image's pixels (boxes in the
padding are dropped by the caller).
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import Owlv2ForObjectDetection, Owlv2Processor
from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

from sceneloc.backends.base import Backend, from_pretrained, to_model, warn_if_truncated
from sceneloc.candidates import Candidates
from sceneloc.registry import Capability, Model, ModelSettings, Task, register_backend


@register_backend(
    "owlv2",
    tasks=[Task.LOCATE],
    model_types=("owlv2",),
    capabilities=[
        Capability.RANKED_CANDIDATES,
        Capability.QUERIES_BATCHED,
        Capability.IMAGE_ENCODED_ONCE,
        Capability.SAFE_TO_TILE,
    ],
    # OWLv2's sigmoid scores are low; 0.1 is the processor's and the model card's default.
    settings=ModelSettings(default_threshold=0.1),
    models=[
        Model(
            "owlv2-base",
            "google/owlv2-base-patch16-ensemble",
            "OWLv2 ViT-B/16; open-vocabulary detector, best with short object descriptions",
        ),
    ],
)
class Owlv2Backend(Backend):
    #: The processor pads and resizes to a 960 px square.
    input_side = 960

    def __init__(
        self,
        model: Owlv2ForObjectDetection,
        processor: Owlv2Processor,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__(model, checkpoint)
        self.model = model.eval()
        self.processor = processor
        self.max_text_len = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: torch.device, dtype: torch.dtype
    ) -> Owlv2Backend:
        processor = from_pretrained(Owlv2Processor.from_pretrained, checkpoint)
        model = from_pretrained(Owlv2ForObjectDetection.from_pretrained, checkpoint)
        return cls(model.to(device=device, dtype=dtype), processor, checkpoint)

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        # OWLv2 reads as many tokens as its text tower has positions.
        warn_if_truncated(self.processor.tokenizer, queries, self.max_text_len, self.checkpoint)
        # Padded to the text tower's length, as OWL expects, whatever the tokenizer's own
        # ``model_max_length`` says (a converted checkpoint may set none).
        inputs = self.processor(
            images=image,
            text=queries,
            padding="max_length",
            truncation=True,
            max_length=self.max_text_len,
            return_tensors="pt",
        )
        outputs = self.model(**to_model(inputs, self.device, self.dtype))
        count = len(queries)
        # One row per query: its own logits (patches x 1) and the boxes shared by all.
        per_query = Owlv2ObjectDetectionOutput(
            logits=outputs.logits[0].float().T.unsqueeze(-1),
            pred_boxes=outputs.pred_boxes.float().expand(count, -1, -1),
        )
        found = self.processor.post_process_grounded_object_detection(
            per_query, threshold=threshold, target_sizes=[(image.height, image.width)] * count
        )
        return [Candidates.of(d["boxes"], d["scores"], query) for query, d in zip(queries, found)]
