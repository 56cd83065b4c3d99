"""The opt-in ``multiple`` and ``absent`` synthetic queries: every referent, or none, checked."""

from __future__ import annotations

import json

import pytest

from sceneloc.data import read_samples
from sceneloc.data.synth import (
    ALL_QUERY_TYPES,
    AbsentQuery,
    Desc,
    MultipleQuery,
    RelationQuery,
    SceneObject,
    SynthError,
    generate,
    make_domain,
    parse_query,
    render_query,
    resolve,
    spec_from_dict,
    spec_to_dict,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("targets") / "data"
    domain = make_domain(query_types="multiple,absent,attribute")
    generate(out, 12, seed=5, splits="train=0.75,compositional=0.25", domain=domain)
    samples = {s.id: s for s in read_samples(out / "annotations.jsonl")}
    scenes = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    return samples, scenes


def test_multiple_queries_name_every_referent_and_only_them(dataset):
    samples, scenes = dataset
    asked = 0
    for scene in scenes:
        objects = [SceneObject.from_dict(o) for o in scene["objects"]]
        for query in (q for q in scene["queries"] if q["type"] == "multiple"):
            asked += 1
            spec = parse_query(query["query"])  # read back from the words alone
            assert spec == spec_from_dict(query["spec"])
            (match,) = resolve(spec, objects)
            assert match == tuple(query["target"]) and len(match) >= 2
            assert match in resolve(spec, objects, strict=True)
            sample = samples[query["id"]]
            assert sample.targets == [list(objects[i].box) for i in match]
            assert sample.box == sample.targets[0]
    assert asked >= 6


def test_absent_queries_describe_nothing_in_their_scene(dataset):
    samples, scenes = dataset
    kinds = set()
    for scene in scenes:
        objects = [SceneObject.from_dict(o) for o in scene["objects"]]
        for query in (q for q in scene["queries"] if q["type"] == "absent"):
            spec = spec_from_dict(query["spec"])
            assert isinstance(spec, AbsentQuery) and parse_query(query["query"]) == spec.spec
            assert resolve(spec, objects) == [] and query["target"] == []
            sample = samples[query["id"]]
            assert sample.targets == [] and sample.box is None
            inner = spec.spec
            if isinstance(inner, RelationQuery):
                # the target's description fits something here: only the relation is false
                assert any(inner.target.matches(o) for o in objects)
                anchors = [o for o in objects if inner.anchor.matches(o)]
                kinds.add("anchor missing" if not anchors else "relation false")
            else:
                kinds.add("pair missing")
    assert kinds == {"pair missing", "anchor missing", "relation false"}


def test_wording_round_trips():
    specs = [
        MultipleQuery(Desc("star", "red")),
        MultipleQuery(Desc(color="cyan", size="small"), 3, "bottom"),
        MultipleQuery(Desc("cross"), 2),
        AbsentQuery(RelationQuery(Desc("circle"), "left of", Desc("square", "blue"))),
    ]
    assert render_query(specs[0]) == "all the red stars"
    assert render_query(specs[1]) == "the three small cyan shapes at the bottom"
    assert render_query(specs[2]) == "the two crosses"
    for spec in specs:
        assert spec_from_dict(spec_to_dict(spec)) == spec
        expected = spec.spec if isinstance(spec, AbsentQuery) else spec
        assert parse_query(render_query(spec)) == expected


def test_the_new_types_are_opt_in():
    assert "multiple" in ALL_QUERY_TYPES and make_domain().query_types == (
        "attribute", "relation", "ordinal", "group"
    )  # fmt: skip
    with pytest.raises(SynthError, match="unknown query type several"):
        make_domain(query_types="several")
