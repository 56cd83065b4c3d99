"""Propose and choose: a proposer finds every instance of the query's noun, a VLM picks one.

The idea of SAM 3 Agent, with open models only. Proposers (SAM 3, open-vocabulary
detectors) find every instance of a short noun phrase well but ignore relations, actions
and positions; a vision-language model reads the whole sentence but boxes less tightly and
has no mask. So each query is answered in two steps:

1. the proposer is asked for the query's head noun phrase (:mod:`sceneloc.head_noun`: "the
   giraffe nearer to the window" -> "giraffe"), in one call for all the call's queries, and
   keeps its best ``max_candidates`` instances scoring at least ``proposer_threshold``;
2. the chooser is shown those numbered candidates with the whole query and says which one
   it describes, or none.

The answer is the chosen candidate as the proposer gave it (its box, and its mask when the
proposer makes masks), scored by the chooser's probability for that choice: how sure the
model reading the whole sentence is that this instance, rather than another or none, is
the one meant. It is a single candidate: the chooser ranks nothing else.

When there is nothing to choose from (the query names no noun, or the proposer finds no
instance) and when the chooser says none of the candidates fits, the chooser's own answer
to the whole query (its ``predict``) is given instead. A "none" leads there too: where the
referent is in the image, the proposer missed it (a word it reads differently, an instance
under its threshold); where it is not, the chooser's own answer says so by giving no box,
or boxes scoring under the threshold.

The two components are any locate backends: the proposer any, the chooser one that can
also choose (:class:`Chooser`). A pipeline's checkpoint names them, ``"proposer+chooser"``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from sceneloc.api import load_backend
from sceneloc.backends.base import Backend
from sceneloc.candidates import Candidates
from sceneloc.errors import SceneLocError
from sceneloc.head_noun import head_noun_phrase
from sceneloc.registry import Model, ModelSettings, Task, register_backend

logger = logging.getLogger(__name__)

#: Shared by the pipelines: a choice probability in (0, 1], low so that a choice is kept
#: unless the chooser spread its belief over many candidates.
SETTINGS = ModelSettings(default_threshold=0.1)


@runtime_checkable
class Chooser(Protocol):
    """A locate backend that can also pick, among numbered candidates, the one a query means."""

    device: torch.device
    dtype: torch.dtype

    def choose(
        self, image: Image.Image, query: str, candidates: Candidates
    ) -> tuple[int | None, float]:
        """The index of the candidate ``query`` describes (``None``: none does) and the
        model's probability for that answer."""

    def predict(
        self, image: Image.Image, queries: list[str], threshold: float
    ) -> list[Candidates]: ...


class ProposeChooseBackend(Backend):
    """A proposer's instances of each query's head noun, one chosen by a VLM (see the module)."""

    def __init__(
        self,
        proposer: Backend,
        chooser: Chooser,
        checkpoint: str | None = None,
        max_candidates: int = 9,
        proposer_threshold: float | None = None,
    ) -> None:
        """``max_candidates``: instances shown to the chooser, best first: as many as it can
        number with one digit, so that its answer is one token. ``proposer_threshold``: the
        score an instance needs (default: the proposer's own default threshold)."""
        if not isinstance(chooser, Chooser):
            raise SceneLocError(
                f"{type(chooser).__name__} cannot choose among candidates: the chooser must be "
                "a vision-language model backend such as qwen3-vl"
            )
        if max_candidates < 1:
            raise SceneLocError(f"max_candidates must be at least 1, got {max_candidates}")
        # No model of its own: the pipeline runs where its chooser, the larger model, runs.
        self.device, self.dtype = chooser.device, chooser.dtype
        self.checkpoint = checkpoint
        self.default_threshold = self.family.settings.default_threshold
        self.proposer = proposer
        self.chooser = chooser
        self.max_candidates = int(max_candidates)
        self.proposer_threshold = (
            proposer.default_threshold if proposer_threshold is None else float(proposer_threshold)
        )

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str,
        device: torch.device,
        dtype: torch.dtype,
        proposer: str | None = None,
        chooser: str | None = None,
        **options: Any,
    ) -> ProposeChooseBackend:
        """``checkpoint`` is ``"proposer+chooser"``, each a short name, hub id or directory;
        ``proposer`` and ``chooser`` replace either. ``options`` are those of ``__init__``."""
        named_proposer, _, named_chooser = checkpoint.partition("+")
        proposer, chooser = proposer or named_proposer, chooser or named_chooser
        logger.info("%s: %s proposes, %s chooses", cls.family.name, proposer, chooser)
        return cls(
            load_backend(proposer, Task.LOCATE, device, dtype),
            load_backend(chooser, Task.LOCATE, device, dtype),
            f"{proposer}+{chooser}",
            **options,
        )

    def predict(self, image: Image.Image, queries: list[str], threshold: float) -> list[Candidates]:
        nouns = {query: head_noun_phrase(query) for query in queries}
        phrases = list(dict.fromkeys(noun for noun in nouns.values() if noun))
        found = self.proposer.predict(image, phrases, self.proposer_threshold) if phrases else []
        proposed = dict(zip(phrases, found))
        answers: dict[str, Candidates] = {}
        for query, noun in nouns.items():
            if noun is None:
                logger.debug("%r names no noun: the chooser answers alone", query)
                continue
            candidates = self.shortlist(proposed[noun], image)
            if not len(candidates):
                logger.debug("no %r found for %r: the chooser answers alone", noun, query)
                continue
            index, probability = self.chooser.choose(image, query, candidates)
            if index is None:
                logger.debug("no %r fits %r: the chooser answers alone", noun, query)
                continue
            if not 0 <= index < len(candidates):
                raise ValueError(f"the chooser chose {index} of {len(candidates)} candidates")
            answers[query] = dataclasses.replace(candidates[[index]], scores=[probability])
        alone = [query for query in nouns if query not in answers]
        if alone:
            answers.update(zip(alone, self.chooser.predict(image, alone, threshold)))
        return [answers[query] for query in queries]

    def shortlist(self, proposals: Candidates, image: Image.Image) -> Candidates:
        """The instances the chooser is shown: in the image, above the threshold, best first."""
        kept = proposals.with_min_score(self.proposer_threshold).inside(image.width, image.height)
        return kept.top_k(self.max_candidates)


@register_backend(
    "sam3+qwen3-vl",
    tasks=[Task.LOCATE],
    model_types=(),
    settings=SETTINGS,
    models=[
        Model(
            "sam3+qwen3-vl",
            "sam3+qwen3-vl-4b",
            "SAM 3 proposes every instance of the query's noun, with masks; Qwen3-VL chooses one",
        ),
    ],
)
class SegmentAndChooseBackend(ProposeChooseBackend):
    """SAM 3 (or SAM 3 LiteText) proposes instances with masks, Qwen3-VL chooses."""


@register_backend(
    "detector+qwen3-vl",
    tasks=[Task.LOCATE],
    model_types=(),
    settings=SETTINGS,
    models=[
        Model(
            "grounding-dino+qwen3-vl",
            "grounding-dino-base+qwen3-vl-4b",
            "Grounding DINO proposes boxes of the query's noun, Qwen3-VL chooses one "
            "(no gated weights)",
        ),
        Model(
            "omdet-turbo+qwen3-vl",
            "omdet-turbo+qwen3-vl-4b",
            "OmDet-Turbo proposes boxes of the query's noun, Qwen3-VL chooses one (the cheap "
            "proposer)",
        ),
    ],
)
class DetectAndChooseBackend(ProposeChooseBackend):
    """An open-vocabulary detector proposes boxes, Qwen3-VL chooses: for when SAM 3's gated
    weights are not at hand."""
