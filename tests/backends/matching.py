"""What every backend test checks the same way: candidates against a reference's, a query
(or a box to describe) asked alone against among others, and how often a module runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from torch import nn

from sceneloc.api import Describer, Grounder
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


def assert_alone_equals_together(
    grounder: Grounder, image: Image.Image, queries: list[str], top_k: int, **tolerances: float
) -> None:
    """Each query's candidates, asked among ``queries``, are what it gets asked alone."""
    together = grounder.locate(image, queries, threshold=0.0, top_k=top_k)
    for result in together:
        (alone,) = grounder.locate(image, result.query, threshold=0.0, top_k=top_k)
        assert alone.candidates, result.query
        assert_same(result.candidates, alone.candidates, **tolerances)


def assert_box_alone_equals_box_among_others(
    describer: Describer, image: Image.Image, boxes: list[list[float]], score_tolerance: float
) -> None:
    """Each box's caption, described among ``boxes``, is what it gets described alone."""
    together = describer.describe(image, boxes)
    for region in together:
        (alone,) = describer.describe(image, [region.box])
        assert alone.caption == region.caption
        assert alone.score == pytest.approx(region.score, abs=score_tolerance)


def recorded_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[dict]:
    """The keyword arguments of each call of ``owner.name`` from now on (it still runs)."""
    function, calls = getattr(owner, name), []

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


@contextmanager
def forward_counts(**modules: nn.Module) -> Iterator[dict[str, int]]:
    """How many times each named module runs its forward inside the block."""
    counts = dict.fromkeys(modules, 0)

    def counter(name: str):
        return lambda *_: counts.__setitem__(name, counts[name] + 1)

    hooks = [module.register_forward_hook(counter(name)) for name, module in modules.items()]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()
