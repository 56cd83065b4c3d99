"""Propose and choose on stub proposers with known boxes and stub choosers with known choices."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import sceneloc
from sceneloc import registry
from sceneloc.api import Grounder, rank
from sceneloc.backends.base import Backend
from sceneloc.backends.propose_choose import DetectAndChooseBackend, SegmentAndChooseBackend
from sceneloc.candidates import Candidates
from sceneloc.registry import Model, ModelSettings, Task, register_backend

IMAGE = Image.new("RGB", (200, 100))

#: What the stub proposer finds for each noun phrase, in no particular order.
GIRAFFES = Candidates.of(
    [[10, 10, 40, 90], [60, 5, 90, 95], [120, 20, 150, 80], [160, 30, 190, 70]],
    [0.5, 0.9, 0.2, 0.7],
    "giraffe",
)
PEOPLE = Candidates.of([[100, 40, 120, 99], [0, 0, 10, 10]], [0.8, 0.6], "person")
FOUND = {"giraffe": GIRAFFES, "person": PEOPLE}
PROPOSER_THRESHOLD = 0.4

#: The stub chooser's own answers to whole queries, for when the pipeline falls back.
OWN = {
    "a vendor selling vegetables": Candidates.of([[5, 5, 50, 50]], [0.6], "vendor"),
    "the one on the left": Candidates.of([[0, 0, 30, 100]], [0.4], "one"),
    "the giraffe eating leaves": Candidates.empty(),
}


class StubProposer(Backend):
    """Finds the known instances of a noun phrase; records each call's queries."""

    def __init__(self, found: dict[str, Candidates] = FOUND) -> None:
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.default_threshold = PROPOSER_THRESHOLD
        self.found = found
        self.calls: list[list[str]] = []

    @classmethod
    def from_pretrained(cls, checkpoint, device, dtype, **options):
        return cls()

    def predict(self, image, queries, threshold):
        self.calls.append(list(queries))
        return [self.found.get(query, Candidates.empty()) for query in queries]


class StubChooser(StubProposer):
    """Chooses the candidate the test says for each query; answers alone from ``OWN``."""

    def __init__(self, choices: dict[str, tuple[int | None, float]] | None = None) -> None:
        super().__init__(OWN)
        self.choices = choices or {}
        self.shown: list[tuple[str, Candidates]] = []

    def choose(self, image, query, candidates):
        self.shown.append((query, candidates))
        return self.choices[query]


def locate(backend: Backend, queries: list[str]) -> list[Candidates]:
    return [r.candidates for r in Grounder(backend, "pipeline").locate(IMAGE, queries, top_k=20)]


def test_the_chosen_instance_is_kept_scored_by_the_choice():
    query = "the giraffe nearer to the window"
    chooser = StubChooser({query: (1, 0.83)})
    (found,) = locate(DetectAndChooseBackend(StubProposer(), chooser), [query])

    ((asked, shown),) = chooser.shown
    assert asked == query  # the chooser reads the whole sentence
    # the proposer's instances above its threshold, best first: 0.9, 0.7, 0.5
    assert shown.boxes.tolist() == [[60, 5, 90, 95], [160, 30, 190, 70], [10, 10, 40, 90]]
    (answer,) = found
    assert answer.box == [160, 30, 190, 70]  # the second shown, as the proposer drew it
    assert answer.score == pytest.approx(0.83)
    assert answer.label == "giraffe"


def test_the_proposer_is_asked_once_for_every_head_noun():
    queries = ["the giraffe nearer to the window", "a person snatching a chain", "left giraffe"]
    proposer = StubProposer()
    chooser = StubChooser({queries[0]: (0, 0.9), queries[1]: (1, 0.7), queries[2]: (2, 0.6)})
    found = locate(SegmentAndChooseBackend(proposer, chooser), queries)

    assert proposer.calls == [["giraffe", "person"]]
    assert [c.boxes.tolist() for c in found] == [
        [[60, 5, 90, 95]],
        [[0, 0, 10, 10]],
        [[10, 10, 40, 90]],
    ]
    assert chooser.calls == []  # every query was answered by a choice


def test_the_choosers_own_answer_when_there_is_nothing_to_choose_or_none_fits():
    nothing_found, no_noun, none_fits = OWN
    chooser = StubChooser({none_fits: (None, 0.95)})
    backend = DetectAndChooseBackend(StubProposer(), chooser)
    found = locate(backend, list(OWN))

    assert [query for query, _ in chooser.shown] == [none_fits]  # only it had candidates
    assert chooser.calls == [[nothing_found, no_noun, none_fits]]  # one call for all three
    assert found[0].boxes.tolist() == [[5, 5, 50, 50]] and found[0].scores.tolist() == [0.6]
    assert found[1].boxes.tolist() == [[0, 0, 30, 100]]
    assert not len(found[2])  # the chooser's own answer: not there
    # the pipeline's threshold applies to the chooser's own scores too
    (result,) = Grounder(backend, "pipeline").locate(IMAGE, no_noun, threshold=0.5)
    assert not result.found


def test_each_query_is_answered_as_if_asked_alone():
    choices = {"left giraffe": (2, 0.5), "person in the doorway": (0, 0.9)}
    queries = [*choices, "the red one", "a vendor selling vegetables", "left giraffe"]

    def answers(asked: list[str]) -> list[list]:
        backend = DetectAndChooseBackend(StubProposer(), StubChooser(choices))
        return [[c.boxes.tolist(), c.scores.tolist()] for c in locate(backend, asked)]

    assert answers(queries) == [answer for query in queries for answer in answers([query])]


def test_the_chooser_is_shown_at_most_max_candidates():
    query = "giraffe"
    chooser = StubChooser({query: (0, 0.9)})
    backend = DetectAndChooseBackend(
        StubProposer(), chooser, max_candidates=2, proposer_threshold=0
    )
    locate(backend, [query])
    ((_, shown),) = chooser.shown
    assert shown.scores.tolist() == [0.9, 0.7]


def test_a_chooser_that_cannot_choose_is_refused():
    with pytest.raises(sceneloc.SceneLocError, match="StubProposer cannot choose"):
        DetectAndChooseBackend(StubProposer(), StubProposer())
    with pytest.raises(sceneloc.SceneLocError, match="at least 1"):
        DetectAndChooseBackend(StubProposer(), StubChooser(), max_candidates=0)


def test_the_pipelines_are_registered_for_locate():
    models = {m.name: m for m in sceneloc.list_models("locate")}
    assert models["sam3+qwen3-vl"].checkpoint == "sam3+qwen3-vl-4b"
    assert models["grounding-dino+qwen3-vl"].checkpoint == "grounding-dino-base+qwen3-vl-4b"
    assert models["sam3+qwen3-vl"].family.cls is SegmentAndChooseBackend
    assert models["omdet-turbo+qwen3-vl"].checkpoint == "omdet-turbo+qwen3-vl-4b"
    for detector in ("grounding-dino", "omdet-turbo"):
        assert models[f"{detector}+qwen3-vl"].family.cls is DetectAndChooseBackend


@pytest.fixture
def stub_models(monkeypatch) -> None:
    """``stub-proposer`` and ``stub-chooser`` short names in a scratch copy of the registry."""
    registry.list_backends()  # the real backends register before the copies are made
    for table in ("_FAMILIES", "_MODELS", "_DISPATCH"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    for cls, name, threshold in (
        (StubProposer, "stub-proposer", 0.45),
        (StubChooser, "stub-chooser", 0.3),
    ):
        register_backend(
            name,
            tasks=[Task.LOCATE],
            model_types=(),
            settings=ModelSettings(default_threshold=0.0),
            models=[Model(name, f"someone/{name}", "a stub", ModelSettings(threshold))],
        )(cls)


def test_short_name_loads_both_components_by_their_short_names(stub_models):
    grounder = sceneloc.load(
        "grounding-dino+qwen3-vl", device="cpu", proposer="stub-proposer", chooser="stub-chooser"
    )
    backend = grounder.backend
    assert isinstance(backend, DetectAndChooseBackend)
    assert isinstance(backend.proposer, StubProposer) and isinstance(backend.chooser, StubChooser)
    assert backend.checkpoint == "stub-proposer+stub-chooser"
    # each component runs with its own model's settings, the proposer's threshold its own
    assert (backend.proposer_threshold, backend.chooser.default_threshold) == (0.45, 0.3)


def test_a_real_detector_proposes_the_head_noun(stub_models, grounding_dino_dir, scene):
    query = "the red square left of the circle"
    grounder = sceneloc.load(
        "grounding-dino+qwen3-vl",
        device="cpu",
        proposer=str(grounding_dino_dir),
        chooser="stub-chooser",
        proposer_threshold=0.0,
    )
    grounder.backend.chooser.choices = {query: (2, 0.7)}
    (result,) = grounder.locate(scene, query)

    detector = sceneloc.load(str(grounding_dino_dir), device="cpu").backend
    with torch.inference_mode():  # as Grounder.locate runs backends
        (instances,) = detector.predict(scene, ["red square"], 0.0)
    shown = grounder.backend.max_candidates
    expected = rank(instances, scene.size, 0.0, top_k=shown)[2]  # the third best, clipped
    assert result.box == pytest.approx(expected.box)
    assert (result.score, result.candidates.labels.tolist()) == (
        pytest.approx(0.7),
        [expected.label],
    )
