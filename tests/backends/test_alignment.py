"""The alignment backend: a saved tiny model loaded by directory ranks the proposer's
regions, each query as if asked alone, the image encoded once per call."""

from __future__ import annotations

import numpy as np
import pytest
from tests.backends.matching import assert_alone_equals_together, forward_counts
from tests.checkpoints.alignment import build_alignment
from tests.checkpoints.native import build_native

import sceneloc
from sceneloc.backends.native import BUNDLED
from sceneloc.data.synth import make_scene
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.proposals import propose
from sceneloc.registry import Capability

QUERIES = ["the red square", "the green circle left of the blue triangle", "a purple star"]


@pytest.fixture(scope="module")
def image():
    return make_scene(np.random.default_rng(4), size=256, min_objects=8, max_objects=12).image


@pytest.fixture(scope="module")
def alignment_dir(tmp_path_factory):
    return build_alignment(tmp_path_factory.mktemp("alignment"), QUERIES[:2])


def test_a_directory_loads_as_a_ranked_propose_and_rank_grounder(alignment_dir, image):
    grounder = sceneloc.load(str(alignment_dir))
    family = grounder.backend.family
    assert family.name == "alignment"
    assert {Capability.RANKED_CANDIDATES, Capability.IMAGE_ENCODED_ONCE} <= family.capabilities
    proposals = propose(NativeGroundingModel.from_pretrained(BUNDLED).eval(), image)
    answer = grounder.locate(image, QUERIES, threshold=0.0, top_k=1000)
    for result in answer:
        found = result.candidates
        assert len(found) == len(proposals)  # every proposal ranked, none other
        assert sorted(map(tuple, found.boxes.round(3))) == sorted(
            map(tuple, proposals.boxes.round(3))
        )
        assert found.scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert found.scores.tolist() == sorted(found.scores.tolist(), reverse=True)


def test_each_query_as_if_asked_alone_and_the_image_encoded_once(alignment_dir, image):
    grounder = sceneloc.load(str(alignment_dir))
    assert_alone_equals_together(grounder, image, QUERIES, top_k=5)
    backend = grounder.backend
    with forward_counts(
        regions=backend.model.image_encoder, proposals=backend.proposer.image_encoder
    ) as counts:
        grounder.locate(image, QUERIES)
    assert counts == {"regions": 1, "proposals": 1}


def test_a_proposer_saved_inside_the_model_is_the_one_used(tmp_path, image):
    directory = build_alignment(tmp_path / "model", QUERIES, proposer="proposer")
    build_native(directory / "proposer", ["a"])
    backend = sceneloc.load(str(directory)).backend
    assert backend.proposer.config.hidden_size == 16  # the tiny one, not native-synth's 64


def test_max_proposals_is_a_load_option(alignment_dir, image):
    grounder = sceneloc.load(str(alignment_dir), max_proposals=3)
    (result,) = grounder.locate(image, QUERIES[0], threshold=0.0, top_k=10)
    assert len(result.candidates) == 3
