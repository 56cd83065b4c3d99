"""Caption metrics as the COCO caption evaluation computes them: BLEU-1..4, CIDEr-D, METEOR.

The scorers are the COCO caption toolkit's own (``pycocoevalcap``, the ``captions`` extra):
BLEU over the whole corpus with clipped n-gram counts and the brevity penalty of the closest
reference length; CIDEr-D with tf-idf n-gram vectors (IDF over the evaluated regions'
references), clipped counts, a Gaussian length penalty (sigma 6) and the factor 10; METEOR
1.5 through Java, only when ``java`` is on the PATH (``None`` otherwise).

Tokenisation replaces the toolkit's PTBTokenizer (which needs Java): lower case, punctuation
removed (every character that is not a letter, digit, underscore or space), split on
whitespace. Scores therefore differ slightly from PTB-tokenised figures on text with
punctuation inside words ("medium-sized" becomes "mediumsized").
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from typing import Any

from sceneloc.errors import SceneLocError

#: The metrics :func:`caption_scores` returns, in order.
CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "meteor")

_PUNCTUATION = re.compile(r"[^\w\s]")


def tokenize(text: str) -> list[str]:
    """The documented tokenisation: lower case, punctuation removed, split on whitespace."""
    return _PUNCTUATION.sub("", text.lower()).split()


def _toolkit() -> Any:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        raise SceneLocError(
            'caption metrics need the COCO caption toolkit: pip install "sceneloc[captions]"'
        ) from None
    return Bleu, Cider, Meteor


def java_available() -> bool:
    """Whether METEOR can run (it is a Java program)."""
    return shutil.which("java") is not None


class CaptionScorer:
    """Scores sets of captions; one METEOR process (a JVM loading its paraphrase tables, slow
    to start) serves every call. Use as a context manager, or call :meth:`close`.

    ``meteor=False`` skips METEOR (``None``), as does a machine without Java. Raises
    :class:`SceneLocError` when the toolkit is not installed.
    """

    def __init__(self, meteor: bool = True) -> None:
        self._bleu, self._cider, self._meteor_class = _toolkit()
        self._use_meteor = meteor and java_available()
        self._meteor: Any = None

    def __call__(
        self, captions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> dict[str, float | None]:
        """Corpus scores of ``captions[i]`` against ``references[i]`` (one or more each):
        ``bleu1`` to ``bleu4``, ``cider`` (CIDEr-D) and ``meteor``."""
        if len(captions) != len(references):
            raise ValueError(f"{len(captions)} captions but {len(references)} reference lists")
        if not captions:
            raise SceneLocError("no captions to score")
        if any(not refs for refs in references):
            raise ValueError("every caption needs at least one reference")
        hypotheses = {i: [" ".join(tokenize(c))] for i, c in enumerate(captions)}
        truths = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
        bleu, _ = self._bleu(4).compute_score(truths, hypotheses, verbose=0)
        cider, _ = self._cider().compute_score(truths, hypotheses)
        meteor = None
        if self._use_meteor:
            meteor = self._meteor_score(truths, hypotheses)
        values = (*bleu, cider, meteor)
        return {name: None if v is None else float(v) for name, v in zip(CAPTION_METRICS, values)}

    def _meteor_score(self, truths: dict, hypotheses: dict) -> float:
        try:
            if self._meteor is None:
                self._meteor = self._meteor_class()
            score, _ = self._meteor.compute_score(truths, hypotheses)
        except (OSError, ValueError) as exc:  # the JVM did not start or answered nothing
            if self._meteor is not None and self._meteor.lock.locked():
                self._meteor.lock.release()  # held by the failed call; its __del__ takes it
            self._meteor = None
            raise SceneLocError(
                f"METEOR (Java) failed: {exc}; pass --no-meteor (meteor=False) to skip it"
            ) from None
        return score

    def close(self) -> None:
        """Stop the METEOR process, if one was started."""
        self._meteor = None  # its __del__ ends the JVM

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def caption_scores(
    captions: Sequence[str], references: Sequence[Sequence[str]], meteor: bool = True
) -> dict[str, float | None]:
    """One-off :class:`CaptionScorer` scores of ``captions`` against ``references``."""
    with CaptionScorer(meteor) as score:
        return score(captions, references)
