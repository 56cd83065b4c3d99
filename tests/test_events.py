"""Event boxes: the chunker on phrases, the assembly on a backend whose phrase boxes are
known, and ``--events`` / ``events`` through the CLI and HTTP on the bundled model."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import sceneloc
from sceneloc.boxes import iou_matrix, union_box
from sceneloc.candidates import Candidates
from sceneloc.cli import app
from sceneloc.demo import demo_scene
from sceneloc.events import Link, Participant, locate_events, split_event
from sceneloc.server import create_app
from test_images import png_bytes

P = Participant

CHUNKS = [
    # the examples
    ("a vendor selling vegetables", [P("a vendor"), P("vegetables")], ["near"]),
    ("a person snatching a chain", [P("a person"), P("a chain")], ["near"]),
    ("the red circle inside the blue square", [P("the red circle"), P("the blue square")],
     ["inside"]),
    # relation words, the longest one read
    ("the small red circle to the left of the big blue square",
     [P("the small red circle"), P("the big blue square")], ["left of"]),
    ("the star right of the pink star", [P("the star"), P("the pink star")], ["right of"]),
    ("the red circle on top of the blue square", [P("the red circle"), P("the blue square")],
     ["above"]),
    ("the cat under the table", [P("the cat"), P("the table")], ["below"]),
    ("a dog next to a car", [P("a dog"), P("a car")], ["near"]),
    # a direction stated anywhere between two participants wins over a verb or pronoun
    ("the man who is standing left of the car", [P("the man"), P("the car")], ["left of"]),
    ("a man who is riding a horse next to a car", [P("a man"), P("a horse"), P("a car")],
     ["near", "near"]),
    # counts and lines
    ("three red circles in a row", [P("red circles", 3, "row")], []),
    ("two blue squares in a column", [P("blue squares", 2, "column")], []),
    ("the two men fighting", [P("the men", 2)], []),
    # what names no noun stays with the participant before it; "of" joins
    ("the man on the left holding an umbrella", [P("the man on the left"), P("an umbrella")],
     ["near"]),
    ("elephant, far right, eating grass", [P("elephant far right"), P("grass")], ["near"]),
    ("a pile of vegetables", [P("a pile of vegetables")], []),
    # an -ing word in front of a noun describes it
    ("a running man with a dog", [P("a running man"), P("a dog")], ["near"]),
    # one participant: not an event
    ("the red one", [P("the red one")], []),
    ("the one on the left", [P("the one on the left")], []),
]  # fmt: skip


@pytest.mark.parametrize(("query", "participants", "relations"), CHUNKS)
def test_split_event_finds_participants_and_relations(query, participants, relations):
    event = split_event(query)
    assert list(event.participants) == participants
    assert list(event.links) == [Link(i, r, i + 1) for i, r in enumerate(relations)]
    assert event.several == (len(participants) > 1 or participants[0].count > 1)


IMAGE = Image.new("RGB", (400, 300), (128, 128, 128))


class KnownBoxes:
    """A backend whose every phrase has known boxes; it records what it is asked."""

    def __init__(self, boxes: dict[str, list[tuple[list[float], float]]]) -> None:
        self.boxes = boxes
        self.calls: list[list[str]] = []

    def __call__(self, image, queries, threshold):
        self.calls.append(list(queries))
        return [
            Candidates.of([b for b, _ in self.boxes.get(q, [])],
                          [s for _, s in self.boxes.get(q, [])], q)
            for q in queries
        ]  # fmt: skip


SQUARE = [200.0, 100.0, 240.0, 140.0]
LEFT_CIRCLE, RIGHT_CIRCLE = [150.0, 105.0, 180.0, 135.0], [260.0, 105.0, 290.0, 135.0]
CIRCLES = [(LEFT_CIRCLE, 0.6), (RIGHT_CIRCLE, 0.9)]


@pytest.mark.parametrize(("relation", "circle"), [("left of", LEFT_CIRCLE),
                                                  ("right of", RIGHT_CIRCLE)])  # fmt: skip
def test_the_stated_direction_picks_the_participant(relation, circle):
    query = f"the circle {relation} the square"
    backend = KnownBoxes({"the circle": CIRCLES, "the square": [(SQUARE, 0.8)]})
    (result,) = locate_events(backend, IMAGE, [query], 0.3, 5)
    assert result.box == union_box([circle, SQUARE])
    assert [(p.phrase, p.box) for p in result.parts] == [("the circle", circle),
                                                         ("the square", SQUARE)]  # fmt: skip
    score = next(s for box, s in CIRCLES if box == circle)
    assert [p.score for p in result.parts] == [score, 0.8]
    assert result.score == pytest.approx(min(score, 0.8), abs=0.01)  # the weakest, placed well


def test_one_predict_call_with_every_phrase_and_the_queries():
    backend = KnownBoxes({})
    queries = ["the circle left of the square", "a dog", "a vendor selling vegetables"]
    locate_events(backend, IMAGE, queries, 0.3, 5)
    assert len(backend.calls) == 1
    assert set(backend.calls[0]) == {*queries, "the circle", "the square", "a vendor",
                                     "vegetables"}  # fmt: skip


def test_near_participants_are_paired_over_far_better_scored_ones():
    vendor = [100.0, 100.0, 130.0, 160.0]  # the far vegetables: four vendors' heights away
    near, far = [150.0, 160.0, 180.0, 190.0], [360.0, 10.0, 390.0, 40.0]
    backend = KnownBoxes({"a vendor": [(vendor, 0.7)],
                          "vegetables": [(far, 0.95), (near, 0.5)]})  # fmt: skip
    (result,) = locate_events(backend, IMAGE, ["a vendor selling vegetables"], 0.3, 5)
    assert [p.box for p in result.parts] == [vendor, near]
    assert result.box == union_box([vendor, near])


def test_among_equally_placed_participants_the_better_scored_wins():
    vendor = [100.0, 100.0, 140.0, 200.0]
    worse, better = [150.0, 160.0, 180.0, 190.0], [60.0, 160.0, 90.0, 190.0]
    backend = KnownBoxes({"a vendor": [(vendor, 0.7)],
                          "vegetables": [(worse, 0.5), (better, 0.9)]})  # fmt: skip
    (result,) = locate_events(backend, IMAGE, ["a vendor selling vegetables"], 0.3, 5)
    assert result.parts[1].box == better
    assert result.score == pytest.approx(0.7)  # the weakest participant's


def test_one_box_is_never_two_participants():
    dog, cat = [100.0, 100.0, 140.0, 140.0], [150.0, 100.0, 190.0, 140.0]
    backend = KnownBoxes({"a dog": [(dog, 0.9)], "a cat": [(dog, 0.8), (cat, 0.4)]})
    (result,) = locate_events(backend, IMAGE, ["a dog next to a cat"], 0.3, 5)
    assert [p.box for p in result.parts] == [dog, cat]


def test_inside_pairs_the_contained_one():
    inner, outer = [210.0, 110.0, 230.0, 130.0], [150.0, 110.0, 170.0, 130.0]
    backend = KnownBoxes({"the red circle": [(outer, 0.9), (inner, 0.6)],
                          "the blue square": [(SQUARE, 0.8)]})  # fmt: skip
    (result,) = locate_events(backend, IMAGE, ["the red circle inside the blue square"], 0.3, 5)
    assert result.parts[0].box == inner
    assert result.box == SQUARE


def test_a_counted_row_takes_the_instances_in_line():
    row = [[50.0 + 50 * i, 100.0, 80.0 + 50 * i, 130.0] for i in range(3)]
    stray = [100.0, 250.0, 130.0, 280.0]
    circles = [(row[0], 0.8), (stray, 0.95), (row[1], 0.7), (row[2], 0.75)]
    backend = KnownBoxes({"red circles": circles})
    (result,) = locate_events(backend, IMAGE, ["three red circles in a row"], 0.3, 5)
    assert sorted(p.box for p in result.parts) == row
    assert result.box == union_box(row)


def test_wrong_direction_or_weak_participants_are_not_found():
    backend = KnownBoxes({"the circle": [(RIGHT_CIRCLE, 0.9)], "the square": [(SQUARE, 0.8)],
                          "a vendor": [([10.0, 10.0, 50.0, 90.0], 0.9)],
                          "vegetables": [([60.0, 40.0, 90.0, 70.0], 0.2)]})  # fmt: skip
    queries = ["the circle left of the square", "a vendor selling vegetables"]
    for result in locate_events(backend, IMAGE, queries, 0.3, 5):
        assert not result.found and result.parts == ()
        assert "parts" not in result.to_dict()


def test_the_whole_query_is_a_candidate_for_its_head():
    """The grounder asked the whole query boxes the right circle; the phrase alone cannot."""
    query = "the circle left of the square"
    backend = KnownBoxes({"the circle": [(RIGHT_CIRCLE, 0.9)], "the square": [(SQUARE, 0.8)],
                          query: [(LEFT_CIRCLE, 0.7)]})  # fmt: skip
    (result,) = locate_events(backend, IMAGE, [query], 0.3, 5)
    assert result.box == union_box([LEFT_CIRCLE, SQUARE])
    (alone,) = locate_events(backend, IMAGE, [query], 0.3, 5, query_for_head=False)
    assert not alone.found


def test_a_whole_query_box_labelled_with_another_participant_is_not_the_head():
    """Grounding DINO labels each box with the words it matched: "vegetables" is no vendor."""
    query = "a vendor selling vegetables"
    vendor, stall = [100.0, 100.0, 130.0, 160.0], [140.0, 130.0, 170.0, 160.0]

    def predict(image, queries, threshold):
        known = {"a vendor": Candidates.of([vendor], [0.5], "vendor"),
                 "vegetables": Candidates.of([stall], [0.6], "vegetables"),
                 query: Candidates.of([stall], [0.9], "vegetables")}  # fmt: skip
        return [known[q] for q in queries]

    (result,) = locate_events(predict, IMAGE, [query], 0.3, 5)
    assert [p.box for p in result.parts] == [vendor, stall]


def test_a_learnt_event_box_is_kept_where_it_holds_the_participants():
    group = [145.0, 95.0, 245.0, 145.0]
    relation = "the circle left of the square"
    near = "the circle near the square"
    backend = KnownBoxes({"the circle": [(LEFT_CIRCLE, 0.9)], "the square": [(SQUARE, 0.8)],
                          relation: [(group, 0.85)], near: [(SQUARE, 0.9)]})  # fmt: skip
    kept, beyond = locate_events(backend, IMAGE, [relation, near], 0.3, 5, learnt=True)
    assert kept.box == group  # holds the circle and the square: the model's own
    assert beyond.box == union_box([LEFT_CIRCLE, SQUARE])  # the model boxed one participant
    assert [p.phrase for p in kept.parts] == ["the circle", "the square"]


def test_one_participant_is_answered_as_usual():
    backend = KnownBoxes({"a red umbrella": [([10.0, 10.0, 50.0, 50.0], 0.9),
                                             ([60.0, 10.0, 90.0, 50.0], 0.2)]})  # fmt: skip
    (result,) = locate_events(backend, IMAGE, ["a red umbrella"], 0.3, 5)
    assert result.box == [10.0, 10.0, 50.0, 50.0] and len(result.candidates) == 1
    assert result.parts == ()


def test_parts_in_the_json():
    backend = KnownBoxes({"the circle": CIRCLES, "the square": [(SQUARE, 0.8)]})
    (result,) = locate_events(backend, IMAGE, ["the circle left of the square"], 0.3, 5)
    record = result.to_dict()
    assert record["box"] == union_box([LEFT_CIRCLE, SQUARE])
    assert record["parts"] == [
        {"phrase": "the circle", "box": LEFT_CIRCLE, "score": 0.6},
        {"phrase": "the square", "box": SQUARE, "score": 0.8},
    ]


# --- through the library, the CLI and HTTP on the bundled model ---------------------------


@pytest.fixture(scope="module")
def native() -> sceneloc.Grounder:
    return sceneloc.load("native-synth", device="cpu")


@pytest.fixture(scope="module")
def demo():
    return demo_scene()


@pytest.fixture(scope="module")
def demo_path(demo, tmp_path_factory):
    path = tmp_path_factory.mktemp("events") / "scene.png"
    demo.image.save(path)
    return path


def test_events_on_the_bundled_model_box_every_participant(native, demo):
    """The demo's relation and group queries name two things: the event box holds both."""
    answer = native.locate(demo.image, demo.queries, threshold=0.0, events=True)
    several = [r for r in answer if split_event(r.query).several]
    assert several, "the demo scene asks about several things"
    for result in answer:
        event = split_event(result.query)
        if not event.several:
            assert result.parts == ()
            continue
        assert result.found
        assert {p.phrase for p in result.parts} == {p.phrase for p in event.participants}
        box = [result.box]
        assert all(iou_matrix(box, [union_box([result.box, p.box])])[0, 0] > 0.9
                   for p in result.parts), "the event box holds its parts"  # fmt: skip


def test_cli_events_json_and_table(native, demo, demo_path):
    runner = CliRunner()
    asked = [word for query in demo.queries for word in ("-q", query)]
    args = ["locate", str(demo_path), *asked, "--model", "native-synth", "--device", "cpu",
            "--threshold", "0", "--events"]  # fmt: skip
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    expected = native.locate(demo_path, demo.queries, threshold=0.0, events=True).to_dict()
    assert payload == expected
    parts = [p for r in payload["results"] for p in r.get("parts", [])]
    assert parts
    table = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert all(f"part: {p['phrase']}" in table.stdout for p in parts)


def test_http_events_field(native, demo):
    files = {"image": ("scene.png", png_bytes(demo.image), "image/png")}
    fields = {"queries": demo.queries, "threshold": "0"}
    with TestClient(create_app(native)) as client:
        response = client.post("/v1/locate", files=files, data=fields | {"events": "true"})
        assert response.status_code == 200, response.text
        payload = response.json()
        plain = client.post("/v1/locate", files=files, data=fields).json()
    expected = native.locate(demo.image, demo.queries, threshold=0.0, events=True).to_dict()
    assert payload["results"] == expected["results"]
    assert any("parts" in r for r in payload["results"])
    assert not any("parts" in r for r in plain["results"])
