"""The boxes given to ``describe`` (``--box``, the server's ``box`` fields, Python lists):
parsed, clipped to the image, and refused with a message naming the box when malformed."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sceneloc.api import parse_box, region_boxes
from sceneloc.errors import InvalidBoxError, SceneLocError

WIDTH, HEIGHT = 160, 96


@pytest.mark.parametrize(
    ("text", "box"),
    [("10,20,30,40", [10, 20, 30, 40]), (" 1.5, 2 ,3e1,  4 ", [1.5, 2, 30, 4]),
     ("-5,-5,10,10", [-5, -5, 10, 10])],
)  # fmt: skip
def test_parse_box_reads_four_numbers(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1;2;3;4", "box '1;2;3;4' is not four numbers x1,y1,x2,y2"),
        ("a,b,c,d", "is not four numbers"),
        ("", "is not four numbers"),
        ("1,2,3", "box '1,2,3' has 3 values, not four (x1,y1,x2,y2)"),
        ("1,2,3,4,5", "has 5 values, not four"),
    ],
)
def test_parse_box_refuses_what_is_not_four_numbers(text, message):
    with pytest.raises(InvalidBoxError, match=re.escape(message)):
        parse_box(text)


def test_region_boxes_take_strings_lists_and_arrays_and_clip_to_the_image():
    boxes = region_boxes(
        ["10,10,50,60", [60, 15, 200, 80], np.array([-20.0, -5.0, 30.0, 200.0])], WIDTH, HEIGHT
    )
    assert boxes.dtype == np.float64 and boxes.shape == (3, 4)
    assert boxes.tolist() == [[10, 10, 50, 60], [60, 15, 160, 80], [0, 0, 30, 96]]
    assert region_boxes(np.array([[1, 2, 3, 4]]), WIDTH, HEIGHT).tolist() == [[1, 2, 3, 4]]


def test_no_boxes_is_an_empty_array():
    assert region_boxes([], WIDTH, HEIGHT).shape == (0, 4)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([1, 2, 3], "box 2 has 3 values, not four"),
        ("1,2,3", "box '1,2,3' has 3 values"),
        ([1, "a", 3, 4], "box 2 is not four numbers"),
        ([1, None, 3, 4], "box 2 is not four numbers"),
        ([float("nan"), 1, 5, 6], "box 2 (nan, 1, 5, 6) is not four finite numbers"),
        ("1,1,inf,6", "box 2 (1, 1, inf, 6) is not four finite numbers"),
        ([50, 10, 10, 60], "box 2 (50, 10, 10, 60) is empty: need x2 > x1 and y2 > y1"),
        ([10, 10, 10, 60], "box 2 (10, 10, 10, 60) is empty"),
        ([10, 60, 50, 60], "is empty"),
        ([200, 10, 300, 60], "box 2 (200, 10, 300, 60) lies wholly outside the 160x96 image"),
        ([160, 10, 170, 60], "lies wholly outside"),  # starts on the right edge
        ([-50, -40, -10, 0], "lies wholly outside"),  # ends on the top edge
    ],
)
def test_a_bad_box_is_refused_naming_it(box, message):
    with pytest.raises(InvalidBoxError) as raised:
        region_boxes([[0, 0, 10, 10], box], WIDTH, HEIGHT)
    assert message in str(raised.value)
    assert isinstance(raised.value, SceneLocError)  # one line, CLI exit 2, HTTP 400
