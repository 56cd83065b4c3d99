"""How many things a query asks for, and which of its ranked candidates are its targets.

For backends with ranked candidates but no head of their own that says which boxes are
targets: "all the red umbrellas", "every chair" or a plural head noun ("people on the
left") ask for every candidate above the threshold; "the two people on the left", "both
dogs" for that many; anything else for one, the best. Candidates are de-duplicated by
non-maximum suppression first, so one thing found twice is not two targets.
"""

from __future__ import annotations

from sceneloc.candidates import Candidates
from sceneloc.head_noun import head_noun_phrase, tokens

#: Number words a query may count with ("the two people"), and digits.
COUNTS: dict[str, int] = {
    "both": 2, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
#: Words that ask for every match.
EVERY = frozenset({"all", "every", "each"})
#: Plurals that do not end in "s", and words ending in "s" that are not plurals.
IRREGULAR_PLURALS = frozenset(
    [
        "people",
        "men",
        "women",
        "children",
        "mice",
        "geese",
        "feet",
        "teeth",
        "police",
        "cattle",
        "sheep",
        "fish",
        "deer",
    ]
)
SINGULAR_S = frozenset(
    [
        "bus",
        "glass",
        "grass",
        "dress",
        "cross",
        "class",
        "boss",
        "gas",
        "lens",
        "canvas",
        "chess",
        "mattress",
        "compass",
        "cactus",
        "octopus",
        "walrus",
        "iris",
        "tennis",
        "news",
        "series",
        "species",
        "trousers",
        "pants",
        "jeans",
        "shorts",
        "glasses",
        "scissors",
    ]
)
#: Boxes overlapping more than this (IoU) are one thing found twice.
SAME_THING_IOU = 0.5


def is_plural(word: str) -> bool:
    """A rough English plural test for a head noun ("umbrellas", "people", not "bus")."""
    if word in IRREGULAR_PLURALS:
        return True
    if word in SINGULAR_S or len(word) < 3:
        return False
    return word.endswith("s") and not word.endswith(("ss", "us", "is"))


def asked_count(query: str) -> int | None:
    """How many things ``query`` asks for: a number, or ``None`` for every match. Only the
    words before the head noun count ("the bus with two doors" asks for one bus)."""
    words = tokens(query)
    phrase = head_noun_phrase(query)
    noun = phrase.split()[-1] if phrase else None
    before = words[: words.index(noun)] if noun in words else words
    for word in before:
        if word in COUNTS:
            return COUNTS[word]
        if word.isdigit() and int(word) > 0:
            return int(word)
    if EVERY & set(before) or (noun is not None and is_plural(noun)):
        return None
    return 1


def choose_targets(query: str, ranked: Candidates, threshold: float) -> Candidates:
    """The targets among ``ranked`` (a query's candidates): those scoring at least
    ``threshold`` after non-maximum suppression, as many as ``query`` asks for, best first."""
    kept = ranked.with_min_score(threshold).nms(SAME_THING_IOU)
    count = asked_count(query)
    return kept if count is None else kept[:count]
