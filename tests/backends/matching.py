"""The one comparison of a backend's candidates with a reference's, for every backend test."""

from __future__ import annotations

import numpy as np
import pytest

from sceneloc.candidates import Candidates


def assert_same(
    got: Candidates,
    want: Candidates,
    score_tolerance: float = 1e-5,
    box_tolerance: float = 1e-4,
) -> None:
    """Same boxes, scores, labels (and masks, where there are any) in the same order, up to
    float rounding."""
    assert len(got) == len(want)
    assert got.boxes == pytest.approx(want.boxes, abs=box_tolerance)
    assert got.scores == pytest.approx(want.scores, abs=score_tolerance)
    assert got.labels.tolist() == want.labels.tolist()
    assert (got.masks is None) == (want.masks is None)
    if want.masks is not None:
        assert np.array_equal(got.masks, want.masks)
