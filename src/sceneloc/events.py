"""Event boxes: a query naming several participants ("a vendor selling vegetables") split
into its participant phrases, each grounded, compatible participants paired, and the answer
the box around all of them with each participant's box in ``parts``.

Three steps, each usable alone:

1. :func:`split_event` chunks the query, by rule (no parser: spaCy and NLTK need model
   downloads, and queries are short): it is cut at relation words ("left of", "inside",
   "on top of"), prepositions, conjunctions, relative pronouns, auxiliary verbs and action
   words ("selling", "snatching"; not "a running man"); each piece that names a noun is a
   participant, one that does not ("the left" in "the man on the left") stays with the
   participant before it; "of" joins ("a pile of vegetables" is one thing). A count in
   front ("three red circles") asks for that many instances, "in a row" / "in a column"
   for how they line up. The relation between neighbouring participants is the first
   relation word between them that states a direction, else "near" (an action or "with"
   says the two are together).
2. Each participant's phrase is grounded on its own (one ``predict`` call for all phrases).
3. :func:`assemble` tries every combination of each phrase's best distinct boxes and scores
   it by :func:`fit` (direction where stated, nearness always); the answer is the union of
   the best combination's boxes, with its ``parts``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sceneloc.api import Predict, rank
from sceneloc.boxes import Box, intersection_matrix, iou_matrix, union_box
from sceneloc.candidates import Candidates
from sceneloc.head_noun import BOUNDARIES, DETERMINERS, head_noun_phrase, is_action, tokens
from sceneloc.results import LocateResult, Part

#: Word sequences stating where a participant lies relative to the next one, and the
#: relation each states; the longest match wins ("to the left of" over "left of").
RELATION_PHRASES: dict[tuple[str, ...], str] = {
    tuple(words.split()): relation
    for relation, phrases in {
        "left of": ("to the left of", "on the left of", "left of"),
        "right of": ("to the right of", "on the right of", "right of"),
        "above": ("on top of", "above", "over", "atop"),
        "below": ("below", "under", "underneath", "beneath"),
        "inside": ("inside of", "inside", "within"),
        # said of two things together, in no direction; here so "next" does not join a phrase
        "near": ("next to", "close to", "in front of", "in the middle of"),
    }.items()
    for words in phrases
}
#: How a counted participant's instances line up ("three red circles in a row").
ARRANGEMENT_PHRASES: dict[tuple[str, ...], str] = {
    ("in", "a", "row"): "row",
    ("in", "a", "line"): "row",
    ("side", "by", "side"): "row",
    ("in", "a", "column"): "column",
}
#: Words that end one participant's phrase: those of :data:`sceneloc.head_noun.BOUNDARIES`
#: but "of", which joins a phrase ("a pile of vegetables", "the roof of the car").
CONNECTIVES = BOUNDARIES - {"of"}
COUNTS = dict(zip(("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
                  range(2, 11)))  # fmt: skip
#: Each participant's best distinct boxes tried, and the most combinations scored in all
#: (the number of boxes tried shrinks for queries with many participants).
BOXES_TRIED = 5
MAX_COMBINATIONS = 4096
#: Participants of one event are within this many of the larger one's sides of each other
#: (a hand's reach, a stall's width) before their farness costs anything.
REACH = 2.0
#: Boxes overlapping this much (IoU) are one thing, which cannot be two participants.
SAME_THING = 0.9


@dataclass(frozen=True)
class Participant:
    """One thing an event involves: the phrase naming it, how many instances it asks for
    ("three red circles": 3, the phrase "red circles") and how they line up."""

    phrase: str
    count: int = 1
    arrangement: str | None = None


@dataclass(frozen=True)
class Link:
    """A relation between two participants (indices), read "subject relation object":
    "left of", "right of", "above", "below", "inside" or "near"."""

    subject: int
    relation: str
    object: int


@dataclass(frozen=True)
class Event:
    """A query as participants and the relations between neighbouring ones."""

    participants: tuple[Participant, ...]
    links: tuple[Link, ...] = ()

    @property
    def several(self) -> bool:
        """Whether there is more than one thing to box (else the query is asked as usual)."""
        return len(self.participants) > 1 or any(p.count > 1 for p in self.participants)


@dataclass(frozen=True)
class Assembly:
    """One box per participant instance, and how well they make the event."""

    parts: tuple[Part, ...]
    score: float

    @property
    def box(self) -> Box:
        return union_box([part.box for part in self.parts])


def split_event(query: str) -> Event:
    """The participants ``query`` names and the relations between them (module docstring)."""
    words = tokens(query)
    chunks: list[tuple[str, list[str], str | None]] = []  # (kind, words, relation)
    current: list[str] = []

    def close() -> None:
        if current:
            chunks.append(("phrase", current.copy(), None))
            current.clear()

    index = 0
    while index < len(words):
        for kind, table in (("arrangement", ARRANGEMENT_PHRASES), ("link", RELATION_PHRASES)):
            matched = _longest_match(words, index, table)
            if matched:
                close()
                chunks.append((kind, words[index : index + len(matched)], table[matched]))
                index += len(matched)
                break
        else:
            word = words[index]
            opens_clause = is_action(word) and (
                any(w not in DETERMINERS for w in current) or (not current and bool(chunks))
            )
            if word in CONNECTIVES or not word[0].isalnum() or opens_clause:
                close()
                chunks.append(("link", [word], None))
            else:
                current.append(word)
            index += 1
    close()
    return _event(chunks)


def _longest_match(
    words: list[str], index: int, table: dict[tuple[str, ...], str]
) -> tuple[str, ...] | None:
    fits = [key for key in table if tuple(words[index : index + len(key)]) == key]
    return max(fits, key=len, default=None)


def _event(chunks: list[tuple[str, list[str], str | None]]) -> Event:
    """Participants from the chunks: a phrase naming no noun joins the one before it."""
    phrases: list[list[str]] = []
    arrangements: dict[int, str] = {}
    links: list[Link] = []
    between: list[str] = []
    relation: str | None = None
    for kind, words, stated in chunks:
        if kind == "arrangement" and phrases:
            arrangements[len(phrases) - 1] = stated  # type: ignore[assignment]
        elif kind != "phrase":
            between += words
            relation = stated if relation in (None, "near") and stated else relation
            continue
        elif phrases and head_noun_phrase(" ".join(words)) is None:
            phrases[-1] += [w for w in between if w[0].isalnum()] + words  # "the man on the left"
        else:
            if phrases:
                links.append(Link(len(phrases) - 1, relation or "near", len(phrases)))
            phrases.append(words)
        between, relation = [], None
    participants = tuple(
        _participant(words, arrangements.get(index)) for index, words in enumerate(phrases)
    )
    return Event(participants, tuple(links))


def _participant(words: list[str], arrangement: str | None) -> Participant:
    """A count after any determiners ("the two men", "3 dogs") is taken out of the phrase."""
    at = next((i for i, w in enumerate(words) if w not in DETERMINERS), len(words))
    word = words[at] if at < len(words) else ""
    count = COUNTS.get(word) or (int(word) if word.isdigit() else 1)
    if count > 1 and len(words) > at + 1:
        words = words[:at] + words[at + 1 :]
    else:
        count = 1
    return Participant(" ".join(words), count, arrangement if count > 1 else None)


# --- pairing --------------------------------------------------------------------------------


def proximity(a: Sequence[float], b: Sequence[float]) -> float:
    """1 while the gap between two boxes is within :data:`REACH` of the larger box's longer
    side, then falling off exponentially per side's length further apart."""
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    scale = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1], 1e-9)
    return math.exp(-max(0.0, math.hypot(dx, dy) / scale - REACH))


#: The direction from the object's centre to the subject's each relation states.
DIRECTIONS = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


def fit(subject: Sequence[float], relation: str, obj: Sequence[float]) -> float:
    """How well ``subject`` box is ``relation`` the ``obj`` box, 0 to 1: for a direction the
    cosine between it and the way from one centre to the other (0 at right angles or
    beyond), for "inside" the share of the subject within the object; times
    :func:`proximity` for all but "inside" (which implies it)."""
    if relation == "inside":
        own = (subject[2] - subject[0]) * (subject[3] - subject[1])
        return float(intersection_matrix(subject, obj)[0, 0] / own) if own > 0 else 0.0
    direction = 1.0
    if relation in DIRECTIONS:
        ux, uy = DIRECTIONS[relation]
        dx = (subject[0] + subject[2] - obj[0] - obj[2]) / 2
        dy = (subject[1] + subject[3] - obj[1] - obj[3]) / 2
        length = math.hypot(dx, dy)
        direction = max(0.0, (ux * dx + uy * dy) / length) if length > 0 else 0.0
    return direction * proximity(subject, obj)


def assemble(event: Event, found: Sequence[Candidates]) -> list[Assembly]:
    """Every way to make ``event`` of the boxes found for each participant's phrase
    (``found[i]``, already above the threshold) that places them possibly, best first.

    A combination's score is its weakest part's score times how well the parts are placed
    (:func:`fit` of each stated relation and of a counted participant's instances in their
    line). The weakest part: the event is there only if all its participants are, so it
    can be no surer than its least sure one, and the score stays on the scale of a single
    box's (the threshold means the same); the placement: the right things in the wrong
    places are another scene. Two participants never take one box (:data:`SAME_THING`). A
    participant with fewer instances found than its count takes those found.
    """
    if not all(len(candidates) for candidates in found):
        return []  # a participant that is not there: neither is the event
    tried = BOXES_TRIED
    while tried > 1 and _combinations(event, found, tried) > MAX_COMBINATIONS:
        tried -= 1
    options = [
        _instances(participant, candidates.nms()[:tried])
        for participant, candidates in zip(event.participants, found)
    ]
    assemblies = []
    for choice in itertools.product(*options):
        if _one_thing_twice(choice):
            continue
        boxes = [union_box(c.boxes) for c in choice]
        placement = math.prod(
            fit(boxes[link.subject], link.relation, boxes[link.object]) for link in event.links
        )
        placement *= math.prod(_line_fit(p, c) for p, c in zip(event.participants, choice))
        score = float(min(c.scores.min() for c in choice)) * placement
        if score > 0:
            parts = tuple(
                Part(participant.phrase, box.tolist(), float(s))
                for participant, instances in zip(event.participants, choice)
                for box, s in zip(instances.boxes, instances.scores)
            )
            assemblies.append(Assembly(parts, score))
    assemblies.sort(key=lambda a: -a.score)
    return assemblies


def _one_thing_twice(choice: Sequence[Candidates]) -> bool:
    """Whether two participants took (nearly) the same box: two participants are two things."""
    every = np.concatenate([c.boxes for c in choice])
    overlaps = iou_matrix(every, every)
    np.fill_diagonal(overlaps, 0)
    return bool(overlaps.max(initial=0) >= SAME_THING)


def _combinations(event: Event, found: Sequence[Candidates], tried: int) -> int:
    sizes = [min(len(c), tried) for c in found]
    return math.prod(math.comb(n, min(p.count, n)) for p, n in zip(event.participants, sizes))


def _instances(participant: Participant, candidates: Candidates) -> list[Candidates]:
    """Every choice of the participant's instances among its distinct candidates."""
    take = min(participant.count, len(candidates))
    return [
        candidates[list(chosen)] for chosen in itertools.combinations(range(len(candidates)), take)
    ]


def _line_fit(participant: Participant, instances: Candidates) -> float:
    """Neighbouring instances, in order along the line, each next to the following one."""
    if len(instances) < 2:
        return 1.0
    axis, relation = {"row": (0, "left of"), "column": (1, "above")}.get(
        participant.arrangement or "", (0, "near")
    )
    line = instances.boxes[np.argsort(instances.boxes[:, axis] + instances.boxes[:, axis + 2])]
    return math.prod(fit(a, relation, b) for a, b in itertools.pairwise(line))


def locate_events(
    predict: Predict,
    image: Image.Image,
    texts: list[str],
    threshold: float,
    top_k: int,
    learnt: bool = False,
    query_for_head: bool = True,
) -> list[LocateResult]:
    """Each query's result, a query naming several participants answered by the union box
    of its best :func:`assemble` with ``parts``; the others as usual. All the queries and
    phrases go to ``predict`` in one call.

    ``query_for_head``: the whole query's candidates (those whose label names the first
    participant's noun) are candidates for its first participant too. A query is about its
    first participant ("the chair behind the blue chair" is a chair), and a grounder asked
    the whole query reads the relations in context to pick which one, where the phrase
    alone ("the chair") cannot.

    ``learnt``: the model learnt event boxes, so its own answer to the whole query is kept
    where it holds the assembled box (:data:`HOLDS` of it) or nothing could be assembled;
    where the assembly reaches beyond it, the model boxed one participant (as the native
    model does on relations, trained to box their target) and the union is the answer.
    """
    events = [split_event(text) for text in texts]
    asked = list(dict.fromkeys(
        phrase
        for text, event in zip(texts, events)
        for phrase in ([text] if learnt or query_for_head or not event.several else [])
        + ([p.phrase for p in event.participants] if event.several else [])
    ))  # fmt: skip
    found = {
        text: rank(candidates, image.size, threshold, len(candidates))
        for text, candidates in zip(asked, predict(image, asked, threshold))
    }
    results = []
    for text, event in zip(texts, events):
        own = found[text][:top_k] if text in found else Candidates.empty()
        if not event.several:
            results.append(LocateResult(text, own, image))
            continue
        phrases = [found[p.phrase] for p in event.participants]
        if query_for_head:
            head = _naming(found[text], event.participants[0].phrase)
            phrases[0] = Candidates.concatenate([phrases[0], head]).sorted()
        assemblies = [a for a in assemble(event, phrases) if a.score >= threshold]
        boxes = [a.box for a in assemblies]
        candidates = Candidates.of(boxes, [a.score for a in assemblies], text).nms()[:top_k]
        if learnt and len(own) and (not assemblies or _holds(own.boxes[0], boxes[0])):
            candidates = own
        parts = assemblies[0].parts if assemblies and len(candidates) else ()
        results.append(LocateResult(text, candidates, image, parts=parts))
    return results


def _naming(candidates: Candidates, phrase: str) -> Candidates:
    """The candidates whose label names the phrase's noun: a backend with phrase labels
    may answer the whole query with a box of another participant ("vegetables")."""
    noun = tokens(head_noun_phrase(phrase) or phrase)[-1:]
    return candidates[np.array([bool(set(noun) & set(tokens(str(label))))
                                for label in candidates.labels], dtype=bool)]  # fmt: skip


#: The share of the assembled box a model's learnt event box must cover to be kept.
HOLDS = 0.9


def _holds(outer: np.ndarray, inner: Box) -> bool:
    own = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return own > 0 and intersection_matrix(inner, outer)[0, 0] >= HOLDS * own
