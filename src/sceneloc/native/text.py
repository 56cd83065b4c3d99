"""Word-level tokenizers and word vectors for the built-in and word-vector text encoders.

Pretrained text encoders bring their own tokenizer; the built-in transformer and the GloVe
baseline use a word-level vocabulary built from the training queries (or the vectors
file), saved as a standard ``tokenizer.json`` so the model directory loads offline.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from sceneloc.errors import DataFormatError

logger = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"
_NORMALIZER = normalizers.Sequence(
    [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
)
_PRE_TOKENIZER = pre_tokenizers.Whitespace()


def words(text: str) -> list[str]:
    """The words a word-level tokenizer sees: lower-cased, accents and punctuation split off."""
    normalized = _NORMALIZER.normalize_str(text)
    return [word for word, _ in _PRE_TOKENIZER.pre_tokenize_str(normalized)]


def vocabulary_from_texts(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """The words of ``texts``, most frequent first."""
    counts = Counter(word for text in texts for word in words(text))
    return [word for word, count in counts.most_common() if count >= min_count]


def word_tokenizer(vocabulary: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: ``[PAD]`` is id 0, ``[UNK]`` id 1, then ``vocabulary``."""
    ids = {PAD: 0, UNK: 1}
    for word in vocabulary:
        ids.setdefault(word, len(ids))
    tokenizer = Tokenizer(WordLevel(ids, unk_token=UNK))
    tokenizer.normalizer = _NORMALIZER
    tokenizer.pre_tokenizer = _PRE_TOKENIZER
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, model_max_length=max_length
    )


def read_word_vectors(
    path: str | Path, keep: set[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Words and vectors of a GloVe-format text file (``word v1 v2 ...`` per line).

    With ``keep``, only those words are kept, so a 400k-word file does not end up inside
    every saved model.
    """
    path = Path(path)
    vocabulary: list[str] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    size = None
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip().split(" ")
                if len(parts) < 2:
                    continue
                if size is None:
                    size = len(parts) - 1
                if len(parts) - 1 != size:
                    raise DataFormatError(
                        f"{path}:{number}: {len(parts) - 1} numbers where earlier lines have {size}"
                    )
                if (keep is not None and parts[0] not in keep) or parts[0] in seen:
                    continue  # not needed, or a repeat (the first vector of a word wins)
                try:
                    vectors.append(np.asarray(parts[1:], dtype=np.float32))
                except ValueError:
                    raise DataFormatError(f"{path}:{number}: not a word vector") from None
                vocabulary.append(parts[0])
                seen.add(parts[0])
    except OSError as exc:
        raise DataFormatError(f"cannot read word vectors {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not a UTF-8 text file of word vectors") from None
    if size is None:
        raise DataFormatError(f"{path}: no word vectors in the file")
    if keep is not None:
        logger.info("kept %d of the queries' %d words from %s", len(vocabulary), len(keep), path)
    return vocabulary, np.stack(vectors) if vectors else np.zeros((0, size), np.float32)
