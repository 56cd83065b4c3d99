"""Qwen-VL backend against transformers' own path (processor, generate, forward), one prompt at
a time, on tiny Qwen3-VL and Qwen2.5-VL checkpoints; and the answer forms Qwen writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from matching import (
    assert_alone_equals_together,
    assert_box_alone_equals_box_among_others,
    assert_same,
    forward_counts,
    recorded_calls,
)
from PIL import Image
from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from typer.testing import CliRunner

import sceneloc
from checkpoints.qwen_vl import plain_processor, prompt_inputs
from sceneloc.api import rank
from sceneloc.backends.qwen_vl import (
    CHOICE_PROMPT,
    DESCRIBE_PROMPT,
    GROUNDING_PROMPT,
    MAX_CHOICES,
    NO,
    NONE,
    VERIFY_PROMPT,
    YES,
    EncodedImage,
    QwenVLBackend,
    parse_boxes,
)
from sceneloc.candidates import Candidate, Candidates
from sceneloc.cli import app
from sceneloc.registry import resolve

QUERIES = ["the red square", "a green circle left of the blue triangle", "blue"]
TOP_K = 10
CPU = torch.device("cpu")
#: A budget below the test scene's 160 x 96 pixels, so the image is shrunk for it.
SMALL_BUDGET = 8 * 1024
#: Candidate boxes (pixels of the test scene) for the chooser: the square, circle, triangle.
SHAPES = Candidates(
    [[10, 10, 50, 60], [70, 20, 110, 70], [120, 50, 150, 80]], [0.9, 0.8, 0.7], ["shape"] * 3
)


@dataclass
class Reference:
    """transformers' own processor and model for a checkpoint, one prompt at a time."""

    model: Qwen3VLForConditionalGeneration | Qwen2_5_VLForConditionalGeneration
    processor: Qwen3VLProcessor | Qwen2_5_VLProcessor

    @classmethod
    def load(cls, checkpoint: Path) -> Reference:
        processor = plain_processor(checkpoint)
        model_class = {
            "qwen3_vl": Qwen3VLForConditionalGeneration,
            "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
        }[json.loads((checkpoint / "config.json").read_text())["model_type"]]
        return cls(model_class.from_pretrained(checkpoint).eval(), processor)

    @property
    def relative(self) -> bool:
        return self.model.config.model_type == "qwen3_vl"

    def inputs(self, image: Image.Image, prompt: str, max_pixels: int | None = None) -> dict:
        if max_pixels is None:
            return prompt_inputs(self.processor, image, prompt)
        shortest = min(self.processor.image_processor.size["shortest_edge"], max_pixels)
        size = {"shortest_edge": shortest, "longest_edge": max_pixels}
        return prompt_inputs(self.processor, image, prompt, size=size)

    def extent(self, inputs: dict) -> tuple[float, float]:
        """The range the model writes boxes in: 0-1000, or the resized image's pixels."""
        if self.relative:
            return 1000.0, 1000.0
        _, rows, columns = inputs["image_grid_thw"][0].tolist()
        patch = self.processor.image_processor.patch_size
        return float(columns * patch), float(rows * patch)

    def answer(self, image: Image.Image, prompt: str, max_pixels: int | None = None) -> str:
        inputs = self.inputs(image, prompt, max_pixels)
        with torch.no_grad():
            ids = self.model.generate(**inputs, do_sample=False, max_new_tokens=256)
        answer = ids[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(answer, skip_special_tokens=True)[0]

    def answer_probabilities(
        self, image: Image.Image, prompt: str, answers: list, max_pixels: int | None = None
    ) -> list[float]:
        """The probability of each answer (a group of spellings) among ``answers``, read from
        the first token the model would write."""
        with torch.no_grad():
            logits = self.model(**self.inputs(image, prompt, max_pixels)).logits[0, -1]
        probabilities = logits.softmax(-1)
        tokenizer = self.processor.tokenizer
        mass = torch.stack(
            [
                probabilities[sorted({tokenizer.encode(w)[0] for w in spellings})].sum()
                for spellings in answers
            ]
        )
        return (mass / mass.sum()).tolist()

    def locate(self, image: Image.Image, query: str, max_pixels: int | None = None) -> Candidates:
        """The query's boxes from the generated answer, each scored by P(yes) of its check."""
        answer = self.answer(image, GROUNDING_PROMPT.format(query=query), max_pixels)
        width, height = self.extent(self.inputs(image, "", max_pixels))
        found = []
        for box in parse_boxes(answer):
            x1, x2 = (min(max(v, 0.0), width) for v in sorted(box[0::2]))
            y1, y2 = (min(max(v, 0.0), height) for v in sorted(box[1::2]))
            check = VERIFY_PROMPT.format(query=query, box=[round(v) for v in (x1, y1, x2, y2)])
            yes, _ = self.answer_probabilities(image, check, [YES, NO], max_pixels)
            sx, sy = image.width / width, image.height / height
            found.append(Candidate([x1 * sx, y1 * sy, x2 * sx, y2 * sy], yes, query))
        return rank(Candidates.from_list(found), image.size, 0.0, TOP_K)

    def model_box(self, image: Image.Image, box: list[float]) -> list[int]:
        """A pixel box in the coordinates the model writes."""
        width, height = self.extent(self.inputs(image, ""))
        scale = np.array([width / image.width, height / image.height] * 2)
        return np.round(np.array(box) * scale).astype(int).tolist()

    def describe(self, image: Image.Image, box: list[float]) -> tuple[str, float]:
        """The region's caption, by the chat template and greedy generate, and the mean
        log-probability of its tokens other than special ones, recomputed by a
        teacher-forced pass over the prompt and the answer."""
        inputs = self.inputs(image, DESCRIBE_PROMPT.format(box=self.model_box(image, box)))
        prompt_length = inputs["input_ids"].shape[1]
        with torch.no_grad():
            ids = self.model.generate(**inputs, do_sample=False, max_new_tokens=128)
            answer = ids[0, prompt_length:]
            types = torch.zeros_like(ids)
            types[:, :prompt_length] = inputs["mm_token_type_ids"]
            forced = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            logits = self.model(**{**inputs, **forced, "mm_token_type_ids": types}).logits
        log_probs = logits[0, prompt_length - 1 : -1].log_softmax(-1)
        special = set(self.processor.tokenizer.all_special_ids)
        words = [i for i, token in enumerate(answer.tolist()) if token not in special]
        caption = self.processor.decode(answer, skip_special_tokens=True).strip()
        return caption, float(log_probs[words, answer[words]].mean())

    def choose(self, image: Image.Image, query: str, candidates: Candidates) -> tuple:
        """The chooser's answer from the logits: the best of the numbers and "none"."""
        width, height = self.extent(self.inputs(image, ""))
        scale = np.array([width / image.width, height / image.height] * 2)
        listing = "\n".join(
            f'{n}. {{"bbox_2d": {box}}}'
            for n, box in enumerate(np.round(candidates.boxes * scale).astype(int).tolist(), 1)
        )
        prompt = CHOICE_PROMPT.format(listing=listing, query=query)
        numbers = [[str(n)] for n in range(1, len(candidates) + 1)]
        probabilities = self.answer_probabilities(image, prompt, [*numbers, NONE])
        best = int(np.argmax(probabilities))
        return (None if best == len(candidates) else best), probabilities[best]


@pytest.fixture(scope="module", params=["qwen3_vl_dir", "qwen2_5_vl_dir"])
def checkpoint(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def grounder(checkpoint):
    return sceneloc.load(str(checkpoint), device="cpu")


@pytest.fixture(scope="module")
def reference(checkpoint) -> Reference:
    return Reference.load(checkpoint)


@pytest.fixture(scope="module")
def qwen3(qwen3_vl_dir):
    return sceneloc.load(str(qwen3_vl_dir), device="cpu")


# --- answering --------------------------------------------------------------------------------


def test_matches_reference_for_each_query_asked_with_others(grounder, reference, scene):
    results = grounder.locate(scene, QUERIES, threshold=0.0, top_k=TOP_K)
    assert [r.query for r in results] == QUERIES
    for result in results:
        expected = reference.locate(scene, result.query)
        assert expected, "the tiny model should ground something"
        assert_same(result.candidates, expected, score_tolerance=1e-4, box_tolerance=1e-6)
    assert len({tuple(r.box) for r in results}) > 1, "boxes should depend on the query"


def test_query_alone_equals_query_among_others(grounder, scene):
    assert_alone_equals_together(
        grounder, scene, QUERIES, TOP_K, score_tolerance=1e-5, box_tolerance=1e-6
    )


def test_scores_are_the_models_verdicts_not_a_constant(grounder, scene):
    queries = [f"object number {i}" for i in range(6)]
    scores = [c.score for r in grounder.locate(scene, queries, threshold=0.0) for c in r.candidates]
    assert all(0.0 < s < 1.0 for s in scores)
    assert len(set(scores)) > 1


def test_threshold_drops_boxes_the_model_does_not_confirm(grounder, scene):
    everything = grounder.locate(scene, QUERIES, threshold=0.0)
    scores = sorted(c.score for r in everything for c in r.candidates)
    cut = (scores[0] + scores[-1]) / 2
    kept = grounder.locate(scene, QUERIES, threshold=cut)
    assert all(c.score >= cut for r in kept for c in r.candidates)
    assert sum(len(r.candidates) for r in kept) < len(scores)


def test_image_encoded_once_and_queries_generated_together(qwen3, scene, monkeypatch):
    backend = qwen3.backend
    calls = {"generate": 0}
    generate = backend.model.generate

    def counted(*args, **kwargs):
        calls["generate"] += 1
        return generate(*args, **kwargs)

    monkeypatch.setattr(backend.model, "generate", counted)
    with forward_counts(vision=backend.model.model.visual) as forwards:
        results = qwen3.locate(scene, [f"object number {i}" for i in range(5)], threshold=0.0)
    assert all(r.candidates for r in results), "each query's boxes were verified too"
    assert {**calls, **forwards} == {"generate": 1, "vision": 1}


# --- describing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def describer(grounder):
    return sceneloc.Describer(grounder.backend, grounder.name)


def test_describe_matches_reference_box_by_box(describer, reference, scene):
    boxes = SHAPES.boxes.tolist()
    answer = describer.describe(scene, boxes)
    for region, box in zip(answer, boxes):
        caption, score = reference.describe(scene, box)
        assert region.caption == caption
        assert region.score == pytest.approx(score, abs=1e-4)
    assert len(set(answer.captions)) > 1, "captions should depend on the box"


def test_box_alone_equals_box_among_others(describer, scene):
    assert_box_alone_equals_box_among_others(
        describer, scene, SHAPES.boxes.tolist(), score_tolerance=1e-5
    )


def test_boxes_described_in_one_generate_with_the_image_encoded_once(describer, scene, monkeypatch):
    backend = describer.backend
    calls = recorded_calls(monkeypatch, backend.model, "generate")
    with forward_counts(vision=backend.model.model.visual) as forwards:
        describer.describe(scene, SHAPES.boxes.tolist() * 2)
    assert forwards == {"vision": 1}
    assert len(calls) == 1


def test_inputs_are_what_the_processor_builds(grounder, reference, scene):
    backend = grounder.backend
    encoded = backend.encode_image(scene)
    for query in QUERIES:
        prompt = GROUNDING_PROMPT.format(query=query)
        built = backend.inputs(encoded, [prompt])
        want = reference.inputs(scene, prompt)
        for key in ("input_ids", "mm_token_type_ids", "image_grid_thw"):
            assert torch.equal(built[key], want[key]), key


def test_max_pixels_per_call_and_at_load(qwen3, qwen3_vl_dir, scene):
    reference = Reference.load(qwen3_vl_dir)
    backend = qwen3.backend
    shrunk = backend.encode_image(scene, SMALL_BUDGET).grid
    assert torch.equal(shrunk, reference.inputs(scene, "", SMALL_BUDGET)["image_grid_thw"])
    assert shrunk.prod() < backend.encode_image(scene).grid.prod()

    (per_call,) = qwen3.locate(scene, QUERIES[0], threshold=0.0, max_pixels=SMALL_BUDGET)
    assert_same(
        per_call.candidates,
        reference.locate(scene, QUERIES[0], SMALL_BUDGET),
        score_tolerance=1e-4,
        box_tolerance=1e-6,
    )
    at_load = sceneloc.load(str(qwen3_vl_dir), device="cpu", max_pixels=SMALL_BUDGET)
    (loaded,) = at_load.locate(scene, QUERIES[0], threshold=0.0)
    assert_same(loaded.candidates, per_call.candidates, score_tolerance=1e-6, box_tolerance=1e-6)


def test_a_budget_below_one_visual_token_is_refused(qwen3, scene):
    with pytest.raises(sceneloc.SceneLocError, match="max_pixels must be at least 1024"):
        qwen3.locate(scene, "a cat", max_pixels=100)


def test_cli_takes_max_pixels(qwen3, qwen3_vl_dir, scene, tmp_path):
    path = tmp_path / "scene.png"
    scene.save(path)
    command = ["locate", str(path), "-q", QUERIES[0], "-m", str(qwen3_vl_dir), "--device", "cpu"]
    result = CliRunner().invoke(app, [*command, "--threshold", "0", "--top-k", "10", "--json",
                                      "--max-pixels", str(SMALL_BUDGET)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (printed,) = json.loads(result.stdout)["results"]
    (expected,) = qwen3.locate(scene, QUERIES[0], threshold=0.0, max_pixels=SMALL_BUDGET)
    printed_boxes = np.array([c["box"] for c in printed["candidates"]])
    assert printed_boxes == pytest.approx(expected.candidates.boxes, abs=0.01)


def test_missing_checkpoint_raises_model_not_found(tmp_path):
    with pytest.raises(sceneloc.ModelNotFoundError, match="cannot load"):
        QwenVLBackend.from_pretrained(str(tmp_path / "no-such-model"), CPU, torch.float32)


def test_short_names_and_directories_of_both_generations(qwen3_vl_dir, qwen2_5_vl_dir):
    assert resolve("qwen3-vl-2b").checkpoint == "Qwen/Qwen3-VL-2B-Instruct"
    assert resolve("qwen3-vl-8b").checkpoint == "Qwen/Qwen3-VL-8B-Instruct"
    for directory in (qwen3_vl_dir, qwen2_5_vl_dir):
        assert resolve(str(directory)).family.cls is QwenVLBackend


# --- choosing ---------------------------------------------------------------------------------


def test_choice_is_what_the_logits_say(grounder, reference, scene):
    answers = []
    for query in QUERIES:
        chosen, probability = grounder.backend.choose(scene, query, SHAPES)
        want_index, want_probability = reference.choose(scene, query, SHAPES)
        assert chosen == want_index
        assert probability == pytest.approx(want_probability, abs=1e-5)
        assert 1 / 4 <= probability <= 1.0  # the best of four answers
        answers.append(probability)
    assert len(set(answers)) > 1, "the choice's probability depends on the query"


def test_only_the_best_scored_candidates_are_offered(qwen3, qwen3_vl_dir, scene):
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 70, size=(MAX_CHOICES + 3, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(10, 25, size=corners.shape)], axis=1)
    scores = rng.permutation(len(boxes)) / len(boxes)
    many = Candidates(boxes, scores, ["shape"] * len(boxes))
    offered = np.sort(np.argsort(-scores)[:MAX_CHOICES])  # the best, in their own order

    chosen, probability = qwen3.backend.choose(scene, QUERIES[1], many)
    want_index, want_probability = Reference.load(qwen3_vl_dir).choose(
        scene, QUERIES[1], many[offered]
    )
    assert chosen == (None if want_index is None else int(offered[want_index]))
    assert probability == pytest.approx(want_probability, abs=1e-5)


def test_nothing_to_choose_from(qwen3, scene):
    assert qwen3.backend.choose(scene, "a cat", Candidates.empty()) == (None, 1.0)


# --- reading answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "boxes"),
    [
        # fenced, with a label, as Qwen3-VL answers the report's prompt
        ('```json\n[\n\t{"bbox_2d": [12, 34, 560, 780], "label": "the cat"}\n]\n```',
         [[12, 34, 560, 780]]),
        # several boxes, then prose
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}]\n'
         "These are the two cats [see above].", [[1, 2, 3, 4], [5, 6, 7, 8]]),
        # nothing there
        ("```json\n[]\n```", []),
        ("There is no such object in the image.", []),
        # coordinates past 1000 are kept here and clamped when mapped
        ('[{"bbox_2d": [900, -5, 1040, 1100]}]', [[900, -5, 1040, 1100]]),
        # cut off mid-answer: the complete box stays
        ('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6', [[1, 2, 3, 4]]),
        # malformed: three numbers, text for a number
        ('[{"bbox_2d": [1, 2, 3]}, {"bbox_2d": ["a", 2, 3, 4]}]', []),
        # bad JSON around a box: the box is still read
        ("{bbox_2d: [1, 2, 3, 4]}", [[1, 2, 3, 4]]),
        # a bare list, or a box under "bbox"
        ("[10, 20, 30.5, 40]", [[10, 20, 30.5, 40]]),
        ('{"bbox": [10, 20, 30, 40]}', [[10, 20, 30, 40]]),
    ],
)  # fmt: skip
def test_answer_forms_qwen_writes(answer, boxes):
    assert parse_boxes(answer) == boxes


def relative_image(width: int, height: int) -> EncodedImage:
    """How a Qwen3-VL answer's boxes map onto a ``width x height`` image."""
    return EncodedImage(
        grid=torch.tensor([[1, 2, 2]]),
        features=None,
        placeholder="",
        extent=(1000.0, 1000.0),
        size=(width, height),
    )


def test_boxes_past_the_range_are_clamped_and_mapped_to_pixels():
    image = relative_image(640, 480)
    clamped = [image.clamp(box) for box in parse_boxes('[{"bbox_2d": [1040, -5, 500, 1100]}]')]
    assert clamped == [[500, 0, 1000, 1000]]  # corners ordered, cut to 0-1000
    assert image.to_pixels(clamped).tolist() == [[320, 0, 640, 480]]
    assert image.to_model(np.array([[320.0, 0.0, 640.0, 480.0]])) == [[500, 0, 1000, 1000]]
