"""Word-level tokenizers, vocabularies and GloVe-format word vectors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from transformers import AutoTokenizer

from sceneloc.errors import DataFormatError
from sceneloc.native.config import NativeConfig
from sceneloc.native.processing import tokenize
from sceneloc.native.text import read_word_vectors, vocabulary_from_texts, word_tokenizer, words


def test_words_are_lower_cased_with_punctuation_and_accents_split_off():
    assert words("The Red-Square, LEFT of the café!") == [
        "the", "red", "-", "square", ",", "left", "of", "the", "cafe", "!",
    ]  # fmt: skip
    assert words("  two   spaces\tand a tab ") == ["two", "spaces", "and", "a", "tab"]
    assert words("") == []


def test_vocabulary_is_ordered_by_frequency():
    texts = ["the red square", "The RED circle", "the red star", "a star"]
    # the: 3, red: 3, star: 2, then the words seen once.
    vocabulary = vocabulary_from_texts(texts)
    assert vocabulary[:3] in (["the", "red", "star"], ["red", "the", "star"])
    assert set(vocabulary[3:]) == {"square", "circle", "a"}
    assert len(vocabulary) == 6
    assert vocabulary_from_texts(texts, min_count=2)[2:] == ["star"]
    assert vocabulary_from_texts([]) == []


def test_word_tokenizer_ids():
    tokenizer = word_tokenizer(["red", "square", "red", "the"], max_length=8)
    assert tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id == 1
    # [PAD], [UNK], then the vocabulary in order, a repeated word keeping its first id.
    assert len(tokenizer) == 5
    assert tokenizer.convert_tokens_to_ids(["red", "square", "the"]) == [2, 3, 4]
    encoded = tokenizer(["The RED square!", "red"], padding=True)
    # "!" is a word of its own and not in the vocabulary; no special tokens are added.
    assert encoded["input_ids"] == [[4, 2, 3, 1], [2, 0, 0, 0]]
    assert encoded["attention_mask"] == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert tokenizer("a blue circle")["input_ids"] == [1, 1, 1]


def test_word_tokenizer_round_trips_through_a_directory(tmp_path):
    vocabulary = ["the", "red", "square", "left", "of"]
    tokenizer = word_tokenizer(vocabulary, max_length=6)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # HF_HUB_OFFLINE is set: no network
    queries = ["the red square left of the Blue circle", "Square", "nothing known here"]
    want = tokenizer(queries, padding=True)["input_ids"]
    assert loaded(queries, padding=True)["input_ids"] == want
    assert loaded.pad_token_id == 0 and loaded.unk_token_id == 1
    assert loaded.model_max_length == 6
    assert len(loaded) == len(vocabulary) + 2


def test_tokenize_truncates_to_the_models_text_length():
    tokenizer = word_tokenizer(["a", "b"], max_length=32)
    config = NativeConfig(max_text_length=3)
    text = tokenize(tokenizer, ["a b a b a", "b"], config)
    assert text["input_ids"].tolist() == [[2, 3, 2], [3, 0, 0]]
    assert text["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# --- word vectors ----------------------------------------------------------------------------

VECTORS = "the 0.1 0.2 0.3\nred -1 0 1.5\n\nsquare 4e-1 5 6\n"


def write(tmp_path, content: str, name: str = "vectors.txt"):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_reads_a_glove_file(tmp_path):
    vocabulary, vectors = read_word_vectors(write(tmp_path, VECTORS))
    assert vocabulary == ["the", "red", "square"]
    assert vectors.dtype == np.float32
    expected = [[0.1, 0.2, 0.3], [-1.0, 0.0, 1.5], [0.4, 5.0, 6.0]]
    np.testing.assert_allclose(vectors, np.array(expected, dtype=np.float32))


def test_keeps_only_the_words_asked_for(tmp_path):
    path = write(tmp_path, VECTORS)
    vocabulary, vectors = read_word_vectors(path, keep={"square", "the", "circle"})
    assert vocabulary == ["the", "square"]
    np.testing.assert_allclose(vectors, np.array([[0.1, 0.2, 0.3], [0.4, 5.0, 6.0]], np.float32))
    vocabulary, vectors = read_word_vectors(path, keep={"circle"})
    assert vocabulary == []
    assert vectors.shape == (0, 3)


def error_at(path, line: int) -> str:
    return re.escape(f"{path}:{line}")


def test_inconsistent_dimensions_name_file_and_line(tmp_path):
    path = write(tmp_path, "the 0.1 0.2 0.3\nred 1 2\n")
    with pytest.raises(DataFormatError, match=error_at(path, 2)):
        read_word_vectors(path)
    # Even when the bad line is of a word that would not be kept.
    with pytest.raises(DataFormatError, match=error_at(path, 2)):
        read_word_vectors(path, keep={"the"})


def test_non_numeric_values_name_file_and_line(tmp_path):
    path = write(tmp_path, "the 0.1 0.2 0.3\n\nred 1 two 3\n")
    with pytest.raises(DataFormatError, match=error_at(path, 3)):
        read_word_vectors(path)


def test_missing_or_empty_file(tmp_path):
    missing = tmp_path / "no-such-vectors.txt"
    with pytest.raises(DataFormatError, match=re.escape(str(missing))):
        read_word_vectors(missing)
    empty = write(tmp_path, "\n\n", name="empty.txt")
    with pytest.raises(DataFormatError, match=re.escape(str(empty))):
        read_word_vectors(empty)


def test_binary_file_is_a_data_format_error(tmp_path):
    path = tmp_path / "vectors.bin"
    path.write_bytes(b"\xff\xfe\x00\x81 1 2 3\n")
    with pytest.raises(DataFormatError, match=re.escape(str(path))):
        read_word_vectors(path)
