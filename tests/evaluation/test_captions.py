"""Caption metrics on cases worked out by hand, and CIDEr-D against the formula written out.

BLEU (Papineni et al. 2002, as the COCO caption toolkit computes it over a corpus): clipped
n-gram precisions p_n = sum of min(count in the caption, most in any one reference) / n-grams
of the caption, summed over the corpus; BLEU-N = BP * (p_1 ... p_N)^(1/N); brevity penalty
BP = exp(1 - r/c) when the total caption length c is under r, the sum of each caption's
closest reference length.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from sceneloc.errors import SceneLocError
from sceneloc.evaluation.captions import (
    CaptionScorer,
    caption_scores,
    java_available,
    tokenize,
)


def scores(captions, references):
    return caption_scores(captions, references, meteor=False)


def test_tokenisation_lower_case_no_punctuation():
    assert tokenize("The RED circle,  left of the star.") == [
        "the", "red", "circle", "left", "of", "the", "star",
    ]  # fmt: skip
    assert tokenize("medium-sized") == ["mediumsized"] and tokenize(" ... ") == []


def test_bleu_clipping():
    # "the the the the" against "the cat" and "the the dog":
    # unigrams: "the" 4 times, at most 2 in one reference -> p1 = 2/4
    # bigrams: "the the" 3 times, at most once in a reference -> p2 = 1/3
    # no trigram or 4-gram matches; length 4, closest reference length 3 -> no penalty
    got = scores(["the the the the"], [["the cat", "the the dog"]])
    assert got["bleu1"] == pytest.approx(2 / 4)
    assert got["bleu2"] == pytest.approx(math.sqrt(2 / 4 * 1 / 3))
    assert got["bleu3"] == pytest.approx(0, abs=1e-4) and got["bleu4"] == pytest.approx(0, abs=1e-3)


def test_bleu_brevity_penalty():
    # "A red circle." is 3 tokens, every n-gram up to 3 matches; the reference has 6:
    # BP = exp(1 - 6/3) = exp(-1)
    got = scores(["A red circle."], [["a red circle on the left"]])
    for n in (1, 2, 3):
        assert got[f"bleu{n}"] == pytest.approx(math.exp(-1))


def test_bleu_sums_counts_over_the_corpus():
    # both cases above together: p1 = (2 + 3) / (4 + 3), p2 = (1 + 2) / (3 + 2);
    # c = 4 + 3 = 7, r = 3 + 6 = 9 -> BP = exp(1 - 9/7)
    got = scores(
        ["the the the the", "a red circle"],
        [["the cat", "the the dog"], ["a red circle on the left"]],
    )
    penalty = math.exp(1 - 9 / 7)
    assert got["bleu1"] == pytest.approx(5 / 7 * penalty)
    assert got["bleu2"] == pytest.approx(math.sqrt(5 / 7 * 3 / 5) * penalty)


def cider_d(captions, references, sigma=6.0):
    """CIDEr-D written out: tf-idf n-gram vectors (n = 1..4), document frequency over the
    regions' references, the caption's counts clipped at the reference's, a Gaussian
    penalty on the length difference, averaged over n and the references, times 10."""
    captions = [tokenize(c) for c in captions]
    references = [[tokenize(r) for r in refs] for refs in references]

    def grams(tokens, n):
        return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    frequency = Counter(
        g
        for refs in references
        for g in {g for r in refs for n in range(1, 5) for g in grams(r, n)}
    )

    def vector(tokens, n):
        return {
            g: count * (math.log(len(references)) - math.log(max(1.0, frequency[g])))
            for g, count in grams(tokens, n).items()
        }

    def norm(v):
        return math.sqrt(sum(x * x for x in v.values()))

    total = 0.0
    for caption, refs in zip(captions, references):
        region = 0.0
        for ref in refs:
            penalty = math.exp(-((len(caption) - len(ref)) ** 2) / (2 * sigma**2))
            per_n = []
            for n in range(1, 5):
                h, r = vector(caption, n), vector(ref, n)
                dot = sum(min(h[g], r.get(g, 0.0)) * r.get(g, 0.0) for g in h)
                per_n.append(dot / (norm(h) * norm(r)) * penalty if norm(h) and norm(r) else 0.0)
            region += sum(per_n) / 4
        total += 10 * region / len(refs)
    return total / len(captions)


TOY_CAPTIONS = ["a red circle", "the blue square on the left", "a a a green star", "red shapes"]
TOY_REFERENCES = [
    ["a red circle", "the red circle left of the star"],
    ["the blue square", "a blue square on the left"],
    ["the green star", "a large green star", "the star below the red circle"],
    ["three red circles in a row"],
]


def test_cider_d_follows_the_formula_on_a_toy_corpus():
    got = scores(TOY_CAPTIONS, TOY_REFERENCES)["cider"]
    assert got == pytest.approx(cider_d(TOY_CAPTIONS, TOY_REFERENCES))
    assert 0 < got < 10


def test_cider_d_perfect_caption_scores_ten():
    # each caption equals its one reference and shares no n-gram with the other region's,
    # so every n-gram weighs log 2 and each of the four cosines is 1, times 10
    got = scores(["a red circle left of", "two blue stars in row"],
                 [["a red circle left of"], ["two blue stars in row"]])  # fmt: skip
    assert got["cider"] == pytest.approx(10.0)


def test_bad_inputs():
    with pytest.raises(SceneLocError, match="no captions"):
        scores([], [])
    with pytest.raises(ValueError, match="at least one reference"):
        scores(["a"], [[]])


def test_meteor_is_none_without_java(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert not java_available()
    assert caption_scores(["a red circle"], [["a red circle"]])["meteor"] is None


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_meteor_through_the_toolkit():
    with CaptionScorer() as score:
        perfect = score(
            ["a red circle", "the blue square"], [["a red circle"], ["the blue square"]]
        )
        partial = score(["a red circle", "a green star"], [["a red circle"], ["the blue square"]])
    assert perfect["meteor"] == pytest.approx(1.0)
    assert 0 < partial["meteor"] < perfect["meteor"]
