"""The noun phrase a proposer is asked for, on referring expressions phrased as in RefCOCO."""

from __future__ import annotations

import pytest

from sceneloc.head_noun import head_noun_phrase

EXPRESSIONS = [
    # the examples
    ("the giraffe nearer to the window and also nearer to the people watching", "giraffe"),
    ("a person snatching a chain", "person"),
    ("the vendor selling vegetables", "vendor"),
    ("red umbrella on the left", "red umbrella"),
    # positions, orders and sizes in front of the noun go, attributes stay
    ("left man", "man"),
    ("far left guy", "guy"),
    ("top-left bowl", "bowl"),
    ("second bear from right", "bear"),
    ("the tallest giraffe", "giraffe"),
    ("middle zebra", "zebra"),
    ("baby elephant", "baby elephant"),
    ("blue striped shirt", "blue striped shirt"),
    ("white car behind the truck", "white car"),
    ("2 dogs", "dogs"),
    ("one man", "man"),
    # what follows the noun goes: prepositions, clauses, actions, participles
    ("man on left", "man"),
    ("guy in red", "guy"),
    ("kid with the blue hat", "kid"),
    ("woman wearing glasses", "woman"),
    ("man who is holding a bat", "man"),
    ("the person that is closest to the camera", "person"),
    ("man dressed in black", "man"),
    ("sleeping cat on the couch", "cat"),
    ("Elephant, far right.", "elephant"),
    ("guy w/ hat", "guy"),
    ("man holds umbrella", "man"),
    # nouns that look like participles stay
    ("building on the right", "building"),
    ("red bed near the window", "red bed"),
    ("painting above the couch", "painting"),
    # a possessor, a part, a partitive: the thing meant
    ("the man's hat", "hat"),
    ("the woman\u2019s bag", "bag"),
    ("left side of the bed", "bed"),
    ("larger of the two elephants", "elephants"),
    # no noun to propose
    ("the one on the left", None),
    ("the red one", None),
    ("second from right", None),
    ("white", None),
]


@pytest.mark.parametrize(("query", "phrase"), EXPRESSIONS)
def test_head_noun_phrase_of_referring_expressions(query, phrase):
    assert head_noun_phrase(query) == phrase
