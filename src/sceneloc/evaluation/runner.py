"""Running an evaluation: stream samples, ask a predictor, score, keep only numbers.

Every source of predictions (a model, a predictions file, a baseline) is a *predictor*: a
callable answering a group of consecutive samples of one image. Samples are read lazily and
grouped so that a model loads each image once per group and answers its queries in one
``locate`` call; nothing but per-sample numbers outlives a group.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from sceneloc.candidates import Candidates
from sceneloc.data.format import Sample, parse_box, read_jsonl, read_samples, report_bad
from sceneloc.errors import DataFormatError, InvalidImageError, SceneLocError
from sceneloc.evaluation.metrics import MISSING, RECALL_KS, EvaluationResult, Prediction

if TYPE_CHECKING:  # the API imports torch and transformers; only types are needed here
    from sceneloc.api import Grounder

logger = logging.getLogger(__name__)

#: Queries answered per ``locate`` call by default.
DEFAULT_BATCH_SIZE = 16
#: Candidates a model keeps per query: enough for the largest recall@k.
MODEL_TOP_K = max(RECALL_KS)

#: EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


class Predictor(Protocol):
    """Answers consecutive samples of one image, one :class:`Prediction` per sample."""

    def __call__(self, samples: Sequence[Sample], root: Path) -> list[Prediction]: ...


def group_samples(samples: Iterable[Sample], batch_size: int) -> Iterator[list[Sample]]:
    """Runs of consecutive samples on the same image, at most ``batch_size`` long."""
    if batch_size < 1:
        raise SceneLocError(f"batch size must be at least 1, got {batch_size}")
    group: list[Sample] = []
    for sample in samples:
        if group and (sample.image != group[0].image or len(group) >= batch_size):
            yield group
            group = []
        group.append(sample)
    if group:
        yield group


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of an upright image from its header alone; None if unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112)
    except (OSError, SyntaxError, ValueError) as exc:
        logger.debug("cannot read the size of %s: %s", path, exc)
        return None
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def _of_split(samples: Iterable[Sample], split: str | None) -> Iterable[Sample]:
    return samples if split is None else (s for s in samples if s.split == split)


def _data_source(
    data: str | Path | Iterable[Sample], root: Path | None
) -> tuple[Iterable[Sample], Path]:
    if isinstance(data, str | Path):
        path = Path(data)
        return read_samples(path), path.parent if root is None else root
    return data, Path.cwd() if root is None else root


def scan(
    data: str | Path,
    limit: int | None = None,
    check_images: bool = False,
    split: str | None = None,
) -> int:
    """Validate the data file up front and count its samples (of ``split``, up to ``limit``).

    A malformed line, or with ``check_images`` a missing image, is reported before a long
    model run starts rather than hours into it. Reads JSON only, never pixels.
    """
    path = Path(data)
    count = 0
    checked: set[str] = set()
    for sample in islice(_of_split(read_samples(path), split), limit):
        count += 1
        if check_images and sample.image not in checked:
            checked.add(sample.image)
            image = sample.image_path(path.parent)
            if not image.is_file():
                raise DataFormatError(f"sample {sample.id}: image not found: {image}")
    return count


def evaluate(
    data: str | Path | Iterable[Sample],
    predictor: Predictor,
    *,
    root: Path | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    image_sizes: bool = False,
    save_predictions: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    source: str = "",
    split: str | None = None,
) -> EvaluationResult:
    """Score ``predictor`` on the samples of ``data`` (a JSON Lines path or any iterable;
    only those of ``split`` when given).

    Images are resolved against ``root`` (default: the data file's folder). ``image_sizes``
    records each target's size relative to its image (for the report's size breakdown),
    reading image headers when the predictor did not report sizes. ``save_predictions``
    writes every prediction as a predictions file, so the run can be re-scored later.
    ``progress`` is called with the number of samples done after each group.
    """
    samples, root = _data_source(data, root)
    samples = _of_split(samples, split)
    if limit is not None:
        samples = islice(samples, limit)
    result = EvaluationResult(source=source)
    sizes = _Sizes(root) if image_sizes else None
    with ExitStack() as stack:
        out = None
        if save_predictions is not None:
            out = stack.enter_context(open_for_writing(Path(save_predictions)))
        for group in group_samples(samples, batch_size):
            started = time.perf_counter()
            predictions = predictor(group, root)
            result.seconds += time.perf_counter() - started
            if len(predictions) != len(group):
                raise SceneLocError(
                    f"the predictor answered {len(predictions)} of {len(group)} samples"
                )
            if sizes is not None:
                predictions = sizes(group, predictions)
            for sample, prediction in zip(group, predictions):
                result.add(sample, prediction)
                if out is not None:
                    out.write(json.dumps(prediction.to_record(sample).model_dump()) + "\n")
            if progress is not None:
                progress(len(group))
    if result.n == 0:
        where = data if isinstance(data, str | Path) else "the data"
        raise DataFormatError(f"no samples to evaluate in {where}")
    return result


def open_for_writing(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise SceneLocError(f"cannot write {path}: {exc.strerror or exc}") from None


class _Sizes:
    """Gives predictions their image's size, reading a header only when the image changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.last: tuple[str, tuple[int, int] | None] | None = None

    def __call__(self, group: Sequence[Sample], predictions: list[Prediction]) -> list[Prediction]:
        size = next((p.image_size for p in predictions if p.image_size), None)
        if size is None:
            if self.last is None or self.last[0] != group[0].image:
                self.last = (group[0].image, image_size(group[0].image_path(self.root)))
            size = self.last[1]
        return [
            p if p.image_size else Prediction(p.box, p.score, p.candidates, size)
            for p in predictions
        ]


class ModelPredictor:
    """A loaded :class:`sceneloc.Grounder`: one ``locate`` call per group of samples."""

    def __init__(
        self,
        grounder: Grounder,
        threshold: float | None = 0.0,
        top_k: int = MODEL_TOP_K,
        locate_options: Mapping[str, Any] | None = None,
    ):
        self.grounder = grounder
        self.threshold = threshold
        self.top_k = top_k
        self.locate_options = dict(locate_options or {})

    def __call__(self, samples: Sequence[Sample], root: Path) -> list[Prediction]:
        first = samples[0]
        path = first.image_path(root)
        if not path.is_file():
            raise InvalidImageError(f"sample {first.id}: image not found: {path}")
        try:
            answer = self.grounder.locate(
                path, [s.query for s in samples], threshold=self.threshold, top_k=self.top_k,
                **self.locate_options,
            )  # fmt: skip
        except InvalidImageError as exc:
            raise InvalidImageError(f"sample {first.id}: {exc}") from None
        # gRefCOCO's metrics need refusals: targets are those the model reports at its own
        # threshold (or the one given, if higher), whatever the threshold the box scores at.
        refusal = max(self.threshold or 0.0, self.grounder.backend.default_threshold)
        return [
            Prediction(
                r.box, r.score, r.candidates, answer.image.size, r.targets.with_min_score(refusal)
            )
            for r in answer
        ]


class FilePredictor:
    """Predictions read from a file, looked up by sample id; unknown ids score 0."""

    def __init__(self, predictions: Mapping[str, Prediction]):
        self.predictions = predictions
        self.used: set[str] = set()

    def __call__(self, samples: Sequence[Sample], root: Path) -> list[Prediction]:
        found = []
        for sample in samples:
            prediction = self.predictions.get(sample.id)
            if prediction is None:
                found.append(MISSING)
            else:
                self.used.add(sample.id)
                found.append(prediction)
        return found

    @property
    def unmatched(self) -> list[str]:
        """Prediction ids that no evaluated sample asked for."""
        return [key for key in self.predictions if key not in self.used]


def _parse_candidates(value: Any) -> Candidates:
    if not isinstance(value, list):
        raise ValueError("'candidates' must be a list")
    boxes, scores = [], []
    for index, item in enumerate(value):
        name = f"candidates[{index}]"
        if isinstance(item, dict):
            if "box" not in item:
                raise ValueError(f"{name!r} has no 'box'")
            box = parse_box(item["box"], name)
            score = item.get("score")
            if score is not None and (
                not isinstance(score, int | float) or isinstance(score, bool)
            ):
                raise ValueError(f"{name}.score must be a number")
        else:
            box, score = parse_box(item, name), None
        boxes.append(box)
        scores.append(math.nan if score is None else float(score))
    return Candidates(boxes, scores, [""] * len(boxes))


def parse_prediction(record: Any) -> tuple[str, Prediction]:
    """Validate one predictions-file record; raises ``ValueError`` saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("a prediction must be a JSON object")
    if "id" not in record:
        raise ValueError("missing field 'id'")
    if not isinstance(record["id"], str | int) or isinstance(record["id"], bool):
        raise ValueError("'id' must be a string or an integer")
    box = record.get("box")
    box = None if box is None else parse_box(box, "box")
    score = record.get("score")
    if score is not None and (not isinstance(score, int | float) or isinstance(score, bool)):
        raise ValueError("'score' must be a number or null")
    candidates = record.get("candidates")
    candidates = None if candidates is None else _parse_candidates(candidates)
    targets = record.get("targets")
    targets = None if targets is None else _parse_candidates(targets)
    score = None if score is None else float(score)
    return str(record["id"]), Prediction(box, score, candidates, targets=targets)


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """Read a predictions file (``{"id", "box": [...] | null, "candidates"?}`` a line) by id.

    Held in memory as boxes only (no images): ids may come in any order. A malformed line or
    a repeated id raises :class:`DataFormatError` naming the file and line.
    """
    path = Path(path)
    predictions: dict[str, Prediction] = {}
    lines: dict[str, int] = {}
    for number, record in read_jsonl(path):
        try:
            key, prediction = parse_prediction(record)
        except ValueError as exc:
            report_bad(path, number, str(exc), skip_bad=False)
            continue
        if key in lines:
            report_bad(
                path, number, f"duplicate id {key!r} (first on line {lines[key]})", skip_bad=False
            )
        lines[key] = number
        predictions[key] = prediction
    return predictions


def evaluate_model(
    data: str | Path | Iterable[Sample],
    grounder: Grounder,
    *,
    threshold: float | None = 0.0,
    top_k: int = MODEL_TOP_K,
    locate_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> EvaluationResult:
    """Evaluate a loaded :class:`sceneloc.Grounder`; ``options`` go to :func:`evaluate`,
    ``locate_options`` to every ``locate`` call (``tiles``, ``tile_overlap``, ``events``).

    ``threshold=0`` scores the top box of every query (the usual referring-expression
    accuracy); ``None`` uses the model's own threshold, so "not found" answers score 0. The
    targets (gRefCOCO's metrics) are those reported at the model's own threshold, or at
    ``threshold`` where it is higher: refusing is what N-acc measures.
    """
    options.setdefault("source", getattr(grounder, "name", "model"))
    predictor = ModelPredictor(grounder, threshold, top_k, locate_options)
    return evaluate(data, predictor, **options)


def evaluate_predictions(
    data: str | Path | Iterable[Sample],
    predictions: str | Path | Mapping[str, Prediction],
    **options: Any,
) -> EvaluationResult:
    """Score a predictions file (or a mapping of id to :class:`Prediction`) against the data.

    A sample without a prediction scores IoU 0. Predictions whose id is not in the data are
    logged as a warning (not an error: a predictions file may cover more than the data).
    """
    if isinstance(predictions, str | Path):
        options.setdefault("source", str(predictions))
        predictions = read_predictions(predictions)
    predictor = FilePredictor(predictions)
    result = evaluate(data, predictor, **options)
    unmatched = predictor.unmatched
    if unmatched and options.get("limit") is None:
        logger.warning(
            "%d prediction(s) have ids not in the data (first: %s)",
            len(unmatched),
            ", ".join(repr(key) for key in unmatched[:3]),
        )
    return result
