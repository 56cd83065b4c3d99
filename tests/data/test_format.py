import json
import re

import pytest

from sceneloc.data import Sample, read_samples, write_samples
from sceneloc.errors import DataFormatError


def test_round_trip_keeps_optional_fields(tmp_path):
    samples = [
        Sample("a", "img/1.png", "the red star", [1, 2, 30, 40], "train", type="attribute"),
        Sample("b", "/abs/2.png", "two dogs", [0, 0, 9, 9], "val",
               boxes=[[0, 0, 4, 4], [5, 5, 9, 9]], category="dog", image_id=7),
    ]  # fmt: skip
    path = tmp_path / "samples.jsonl"
    assert write_samples(path, samples) == 2
    assert list(read_samples(path)) == samples
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"id", "image", "query", "box", "split", "type"}


def test_targets_and_image_path(tmp_path):
    one = Sample("a", "img/1.png", "q", [1, 2, 3, 4], "test")
    many = Sample("b", "/abs/2.png", "q", [0, 0, 9, 9], "test", boxes=[[0, 0, 4, 4]])
    assert one.targets == [[1, 2, 3, 4]] and many.targets == [[0, 0, 4, 4]]
    assert one.image_path(tmp_path) == tmp_path / "img/1.png"
    assert str(many.image_path(tmp_path)) == "/abs/2.png"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"id": 1, "image": "a.png", "query": "q", "split": "train"}', "missing field(s) box"),
        ('{"id": 1, "image": "a.png", "query": " ", "box": [0,0,1,1], "split": "t"}', "'query'"),
        ('{"id": 1, "image": "a.png", "query": "q", "box": [0,0,1], "split": "t"}', "'box'"),
        ('{"id": 1, "image": "a.png", "query": "q", "box": [5,0,1,1], "split": "t"}', "x1 <= x2"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    good = '{"id": 0, "image": "a.png", "query": "q", "box": [0, 0, 1, 1], "split": "t"}'
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl:3: .*{re.escape(problem)}"):
        list(read_samples(path))
    assert [s.id for s in read_samples(path, skip_bad=True)] == ["0"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="cannot read"):
        list(read_samples(tmp_path / "nope.jsonl"))
