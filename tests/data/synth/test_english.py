"""Queries in English: every phrasing the generator uses reads back to its spec."""

from __future__ import annotations

import numpy as np
import pytest

from sceneloc.data.synth import (
    AttributeQuery,
    Desc,
    GroupQuery,
    OrdinalQuery,
    RelationQuery,
    parse_query,
    render_query,
    with_target,
)


def test_parse_query_reads_every_phrasing():
    assert parse_query("the big purple star") == AttributeQuery(Desc("star", "purple", "large"))
    assert parse_query("The circle to the left of the little blue square") == RelationQuery(
        Desc("circle"), "left of", Desc("square", "blue", "small")
    )
    assert parse_query("the second triangle from the top") == OrdinalQuery(
        Desc("triangle"), "top", 2
    )
    assert parse_query("the biggest red shape") == OrdinalQuery(Desc(color="red"), "largest")
    assert parse_query("three yellow crosses in a row") == GroupQuery(
        "row", (Desc("cross", "yellow"),) * 3
    )
    assert parse_query("the green triangle on top of the orange hexagon") == GroupQuery(
        "on top of", (Desc("triangle", "green"), Desc("hexagon", "orange"))
    )
    rng = np.random.default_rng(0)
    spec = RelationQuery(Desc("star", "red"), "below", Desc("circle", size="medium"))
    assert all(parse_query(render_query(spec, rng)) == spec for _ in range(10))
    for text in ("the unicorn", "a red star", "the shape", "five red stars in a row"):
        with pytest.raises(ValueError):
            parse_query(text)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("the small blue star", "the red cross"),
        ("the star above the medium-sized circle", "the red cross above the medium circle"),
        ("the second star from the left", "the second red cross from the left"),
        ("three blue hexagons in a row", "three red crosses in a row"),
        ("the small star inside the big square", "the red cross inside the large square"),
    ],
)
def test_with_target_asks_the_same_question_about_another_target(query, expected):
    assert render_query(with_target(parse_query(query), Desc("cross", "red"))) == expected
