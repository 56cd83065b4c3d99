"""The noun phrase a referring expression is about: "the giraffe nearer to the window" -> "giraffe".

A proposer (SAM 3, an open-vocabulary detector) finds every instance of a short noun phrase
and ignores relations, actions and positions; a chooser then reads the whole sentence. So
the phrase kept is the one a proposer reads best: the head noun with the attribute words in
front of it ("red umbrella on the left" -> "red umbrella", "striped cat" stays whole), and
nothing that only tells instances apart — positions ("left", "middle"), ordinals, sizes and
comparatives ("second", "taller"), actions ("snatching"), clauses and prepositional phrases
("who is", "with the hat", "behind the truck"). Dropping those costs nothing: every
instance is proposed and the chooser, reading the whole query, tells them apart.

The rule, over lower-cased words (no parser: spaCy and NLTK need model downloads, and
referring expressions are short and regular):

1. the query is cut into segments at boundary words (prepositions, relative pronouns,
   conjunctions, auxiliary verbs, punctuation) and at an ``-ing`` action word that follows
   the phrase's first word ("person snatching a chain");
2. in a segment, a possessor ends the words before it ("the man's hat" -> "hat");
   determiners, numbers, position, order and size words, part words ("side", "half") and
   ``-ing`` words go; ``-ed`` words left at the end go ("man dressed" from "man dressed in
   black"), those in front of a noun stay ("striped shirt");
3. the first segment with words left is the phrase ("larger of the two elephants" ->
   "elephants"). A segment ending in "one" ("the red one"), or made of colour words only,
   names no noun.

:func:`head_noun_phrase` gives ``None`` when no segment names a noun ("the one on the left",
"second from right").
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    """A word list written as one string, for reading."""
    return frozenset(text.split())


DETERMINERS = _words(
    "a an the this that these those his her its their my your our some any each every all both "
    "either neither another other others only just very most also almost mostly"
)
NUMBERS = _words("two three four five six seven eight nine ten")
#: Words that tell instances apart by place, order or size, which the chooser reads instead.
POSITIONS = _words(
    "left right leftmost rightmost top bottom upper lower middle center centre central front "
    "back rear far farther farthest further furthest nearer nearest closer closest "
    "first second third fourth fifth last next "
    "big bigger biggest small smaller smallest large larger largest little tall taller tallest "
    "short shorter shortest high higher highest low lowest long longer longest"
)
#: Words naming a part of a thing: the thing itself is what a proposer finds.
PARTS = _words("side half part edge end corner portion section")
BOUNDARIES = _words(
    # prepositions
    "about above across after against along alongside amid among around as at atop before "
    "behind below beneath beside besides between beyond by down during for from in inside into "
    "near of off on onto opposite out outside over past through to toward towards under "
    "underneath up upon via with within without w/ "
    # relative pronouns, conjunctions and comparison
    "who whom whose which that where when while and or but than "
    # auxiliary and linking verbs
    "is are was were be being been has have had does do can could will would looks look seems "
    "appears wears holds sits stands eats rides carries faces plays walks"
)
#: Nouns that end in -ing or -ed like the participles the rule drops.
ING_NOUNS = _words(
    "building ceiling clothing painting drawing ring earring king wing thing string swing "
    "sibling duckling seedling sapling pudding icing frosting topping stuffing filling awning "
    "railing bedding sling spring evening morning wedding offspring"
)
ED_NOUNS = _words("bed red shed sled seed weed reed steed")
COLOURS = _words(
    "red orange yellow green blue purple pink brown black white gray grey silver gold "
    "beige tan dark light bright pale navy maroon"
)

#: The pronoun standing for a noun named elsewhere ("the red one"): no noun to propose.
PRONOUNS = _words("one ones")
#: Words, with apostrophes and hyphens inside them, and the punctuation that ends a phrase.
_TOKEN = re.compile(r"w/|[a-z0-9]+(?:['-][a-z0-9]+)*|[,;:.!?()]")
_DROPPED = DETERMINERS | NUMBERS | POSITIONS | PARTS


def tokens(query: str) -> list[str]:
    """The query's lower-cased words and phrase-ending punctuation, in order."""
    return _TOKEN.findall(query.lower().replace("\u2019", "'"))


def head_noun_phrase(query: str) -> str | None:
    """The noun phrase ``query`` is about, lower case; ``None`` when it names no noun."""
    for segment in _segments(tokens(query)):
        phrase = _noun_phrase(segment)
        if phrase:
            return " ".join(phrase)
    return None


def _segments(words: list[str]) -> list[list[str]]:
    """The words between boundaries; an action word after the first kept word is one too."""
    segments: list[list[str]] = [[]]
    for word in words:
        current = segments[-1]
        opens_clause = is_action(word) and any(_kept(w) for w in current)
        if word in BOUNDARIES or not word[0].isalnum() or opens_clause:
            segments.append([])
        else:
            current.append(word)
    return segments


def _noun_phrase(segment: list[str]) -> list[str]:
    """The words of ``segment`` a proposer should read, or none when it names no noun."""
    possessors = [i for i, w in enumerate(segment[:-1]) if w.endswith("'s")]
    if possessors:
        segment = segment[possessors[-1] + 1 :]
    words = [w for w in segment if _kept(w)]
    while words and words[-1].endswith("ed") and words[-1] not in ED_NOUNS:
        words.pop()
    if not words or words[-1] in PRONOUNS or all(w in COLOURS for w in words):
        return []
    return [w for w in words if w not in PRONOUNS]  # "one man" -> "man"


def _kept(word: str) -> bool:
    """Whether ``word`` may belong to the noun phrase (a possible noun or attribute)."""
    if all(part in POSITIONS for part in word.split("-")):  # "top-left", "far-right"
        return False
    return not (word in _DROPPED or word.isdigit() or is_action(word))


def is_action(word: str) -> bool:
    """Whether ``word`` is an action's ``-ing`` form ("snatching"), not a noun ("building")."""
    return len(word) > 4 and word.endswith("ing") and word not in ING_NOUNS
