"""How many things a query asks for, and the targets chosen among ranked candidates."""

import numpy as np
import pytest

from sceneloc.candidates import Candidates
from sceneloc.targets import asked_count, choose_targets


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("all the red umbrellas", None),
        ("every chair", None),
        ("people near the bus", None),
        ("the leftmost stars", None),
        ("the two people on the left", 2),
        ("both dogs", 2),
        ("3 cats", 3),
        ("the red umbrella", 1),
        ("the bus with two doors", 1),
        ("the man with glasses", 1),
        ("the one on the left", 1),
        ("the glass", 1),
    ],
)
def test_asked_count(query, count):
    assert asked_count(query) == count


RANKED = Candidates(
    np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 9]]),
    np.array([0.9, 0.85, 0.8, 0.6, 0.2]),
    np.array(["x"] * 5, dtype=object),
)


def test_choose_targets_by_what_the_query_asks():
    # the second box is the first found again; the last is under the threshold
    every = choose_targets("all the red boxes", RANKED, threshold=0.5)
    assert every.boxes.tolist() == [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]
    two = choose_targets("the two boxes on the left", RANKED, threshold=0.5)
    assert two.boxes.tolist() == [[0, 0, 10, 10], [20, 0, 30, 10]]
    one = choose_targets("the red box", RANKED, threshold=0.5)
    assert one.boxes.tolist() == [[0, 0, 10, 10]]
    assert len(choose_targets("all the red boxes", RANKED, threshold=0.95)) == 0
