"""The configuration of a native (trainable) grounding model, saved as its ``config.json``."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

#: Image encoders: the small built-in CNN, or any transformers backbone by hub id or path.
BUILTIN_CNN = "builtin-cnn"
#: Text encoders: a small transformer trained from scratch, static word vectors, or any
#: transformers encoder by hub id or path.
BUILTIN_TEXT = "builtin"
WORD_VECTORS = "word-vectors"
FUSIONS = ("cross-attention", "concat")


class NativeConfig(PretrainedConfig):
    """Everything needed to rebuild a native model: encoders, fusion and sizes.

    ``image_encoder``/``text_encoder`` name a pretrained transformers model (hub id or local
    directory) or a built-in one; pretrained weights are fetched only when a model is first
    created for training, then saved with the model, so loading it later needs no download.
    """

    model_type = "sceneloc-native"

    def __init__(
        self,
        image_encoder: str = BUILTIN_CNN,
        text_encoder: str = BUILTIN_TEXT,
        fusion: str = "cross-attention",
        image_size: int = 256,
        hidden_size: int = 128,
        fusion_layers: int = 4,
        image_layers: int = 2,
        attention_heads: int = 4,
        text_layers: int = 2,
        cnn_channels: tuple[int, ...] | list[int] = (32, 64, 96, 128),
        vocab_size: int = 0,
        max_text_length: int = 32,
        word_vector_size: int = 0,
        freeze_text_encoder: bool = False,
        freeze_image_encoder: bool = False,
        image_mean: tuple[float, ...] | list[float] = (0.485, 0.456, 0.406),
        image_std: tuple[float, ...] | list[float] = (0.229, 0.224, 0.225),
        dropout: float = 0.1,
        backbone_config: dict[str, Any] | None = None,
        text_config: dict[str, Any] | None = None,
        object_attributes: dict[str, list[str]] | None = None,
        presence_calibration: tuple[float, ...] | list[float] = (1.0, 0.0, 0.0),
        relation_kernels: int = 8,
        relation_radius: int = 15,
        referent_head: bool = False,
        tile_side: int | None = None,
        tile_presence_calibration: tuple[float, ...] | list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.fusion_layers = fusion_layers
        self.image_layers = image_layers
        self.attention_heads = attention_heads
        self.text_layers = text_layers
        self.cnn_channels = list(cnn_channels)
        self.vocab_size = vocab_size
        self.max_text_length = max_text_length
        self.word_vector_size = word_vector_size
        self.freeze_text_encoder = freeze_text_encoder
        self.freeze_image_encoder = freeze_image_encoder
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.dropout = dropout
        # The pretrained encoders' own configs, kept so a saved model rebuilds offline.
        self.backbone_config = backbone_config
        self.text_config = text_config
        # Attributes (name -> values) the visual tokens learn to name at each object's centre
        # in training, when the data lists every object (synthetic scenes); unused at inference.
        self.object_attributes = object_attributes
        # The presence score is sigmoid(a * presence logit + b * best cell logit + c); training
        # fits (a, b, c) on the validation data (``training.native.calibration``).
        # Floats whatever the file says: an integer list would make the score's weights Long.
        self.presence_calibration = [float(v) for v in presence_calibration]
        # Spatial reasoning (``native.reasoning``): how many relation kernels the text chooses
        # from, and how many cells they reach from the anchor.
        self.relation_kernels = relation_kernels
        self.relation_radius = relation_radius
        # Per visual token "is this one of the query's targets" (``cross-attention`` only): how
        # many things a query refers to and which (``LocateResult.targets``).
        self.referent_head = referent_head
        # Tiling (``sceneloc.tiling``): the side of the scenes the model was trained on, the
        # tiles ``tiles="auto"`` cuts a larger image into; and the presence weights fitted on
        # such tiles (``scripts/calibrate_native_tiles.py``), where a relation's anchor may lie
        # outside the tile. Without them tiles are the input side and use the image's weights.
        self.tile_side = tile_side
        self.tile_presence_calibration = (
            None if tile_presence_calibration is None else list(tile_presence_calibration)
        )
        super().__init__(**kwargs)
