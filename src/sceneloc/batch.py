"""Batch jobs: many images, the same queries, one JSON line per image and query.

The output file is the job's only state. Each line is ``{"image", "query", "box", "score",
"candidates"}``, or ``{"image", "error"}`` for an image that could not be read, and is appended
with a single ``os.write`` on a file opened with ``O_APPEND``, so that a crash leaves at most one
partial line at the end and several processes (``accelerate launch``) can share the file: small
appends to a local file do not interleave. Running the same job again first drops a partial
last line, then skips every (image, query) already written and every image with an error line.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from sceneloc.api import Grounder, normalize_queries
from sceneloc.errors import DataFormatError, InvalidImageError, InvalidQueryError, SceneLocError
from sceneloc.images import LoadedImage, load_image
from sceneloc.results import LocateResult, slug

logger = logging.getLogger(__name__)

#: What a directory given as ``--images`` contributes (compared case-insensitively).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class BatchSummary:
    """What one run (one process) did: result lines written, pairs already done, bad images."""

    written: int
    skipped: int
    errors: int


def expand_images(spec: str | os.PathLike) -> list[Path]:
    """The images named by a directory (its image files, not its subfolders') or a glob pattern.

    A pattern takes every file it matches (``**`` descends into subfolders); files that are not
    images then give error lines. Sorted, so that every process of a job sees the same list.
    """
    text = os.fspath(spec)
    folder = Path(text)
    if folder.is_dir():
        found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        where = f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the directory {text}"
    else:
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        where = f"no file matches {text} (give a directory or a glob pattern such as 'dir/*.jpg')"
    if not found:
        raise SceneLocError(where)
    return sorted(found, key=str)


def read_queries(path: str | os.PathLike) -> list[str]:
    """One query per line of a text file; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SceneLocError(f"queries file not found: {os.fspath(path)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SceneLocError(f"cannot read the queries file {os.fspath(path)}: {exc}") from None
    queries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not queries:
        raise InvalidQueryError(f"the queries file {os.fspath(path)} holds no query")
    return queries


#: The keys of a result line and of an error line; anything else is not this job's file.
RESULT_KEYS = frozenset({"image", "query", "box", "score", "candidates"})
#: Keys a result line may have too (files written before them lack them).
OPTIONAL_RESULT_KEYS = frozenset({"targets", "parts"})
ERROR_KEYS = frozenset({"image", "error"})


@dataclass(frozen=True)
class Finished:
    """What an output file already holds: answered (image, query) pairs, images that failed."""

    pairs: frozenset[tuple[str, str]]
    failed: frozenset[str]


def read_finished(out: Path) -> Finished:
    """Read what ``out`` holds (creating it and its folder if needed); drop a partial last line.

    Every complete line must be a result or error line, so a wrong ``--out`` is refused before
    anything is cut or appended. Safe in every process at once while none appends yet: all cut
    the file at the same offset.
    """
    pairs: set[tuple[str, str]] = set()
    failed: set[str] = set()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("ab+") as handle:
            handle.seek(0)
            offset = 0
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):  # what a crash in the middle of a write leaves
                    logger.warning("%s: dropping a partial last line (%d bytes)", out, len(line))
                    handle.truncate(offset)
                    break
                offset += len(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                keys = set(record) if isinstance(record, dict) else set()
                if RESULT_KEYS <= keys <= RESULT_KEYS | OPTIONAL_RESULT_KEYS:
                    pairs.add((record["image"], record["query"]))
                elif keys == ERROR_KEYS:
                    failed.add(record["image"])
                elif line.strip():
                    raise DataFormatError(
                        f"{out}, line {number}: not a line of sceneloc batch results"
                    )
    except OSError as exc:
        raise SceneLocError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return Finished(frozenset(pairs), frozenset(failed))


def process_state() -> PartialState:
    """This process's place in a launch (``accelerate launch``, ``torchrun``), or alone.

    Without an accelerator, the launched processes share the CPU (gloo), as in training.
    """
    return PartialState(cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()))


def run_batch(
    grounder: Grounder,
    images: Sequence[str | os.PathLike],
    queries: Sequence[str],
    out: Path,
    *,
    crops: Path | None = None,
    workers: int = 2,
    threshold: float | None = None,
    top_k: int = 5,
    locate_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Ask every query about every image, appending the answers to ``out`` as they come.

    Images are decoded by ``workers`` threads a few images ahead while the model runs here.
    Under ``accelerate launch`` (or ``torchrun``) process ``i`` of ``n`` takes ``images[i::n]``
    and all append to the same ``out``. With ``crops``, each found query's region is saved as
    ``<image stem>.<query slug>.png`` before its line is written, so a written line has its crop.
    ``locate_options`` go to every ``locate`` call (``tiles``, ``tile_overlap``, ``events``).
    """
    texts = list(dict.fromkeys(normalize_queries(queries)))
    state = process_state()
    finished = read_finished(out)
    state.wait_for_everyone()  # nobody appends before every process has read what is done
    if crops is not None:
        try:
            crops.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SceneLocError(f"cannot create {crops}: {exc.strerror or exc}") from None
    mine = [str(Path(image)) for image in images[state.process_index :: state.num_processes]]
    todo = {
        image: [q for q in texts if (image, q) not in finished.pairs]
        for image in mine
        if image not in finished.failed
    }
    todo = {image: pending for image, pending in todo.items() if pending}
    skipped = sum(1 for image in mine for q in texts if (image, q) in finished.pairs)
    logger.info(
        "process %d of %d: %d images, %d to do, %d answers already in %s",
        state.process_index + 1, state.num_processes, len(mine), len(todo), skipped, out,
    )  # fmt: skip
    written = errors = 0
    with (
        _appender(out) as append,
        _progress_bar(len(mine), len(mine) - len(todo), progress and state.is_main_process) as tick,
    ):
        for image, loaded in _decoded(list(todo), workers):
            if isinstance(loaded, InvalidImageError):
                logger.info("%s: %s", image, loaded)
                append({"image": image, "error": " ".join(str(loaded).split())})
                errors += 1
            else:
                answer = grounder.locate(
                    loaded.image, todo[image], threshold, top_k, **(locate_options or {})
                )
                for result in answer:
                    if crops is not None:
                        _save_crop(result, crops / f"{Path(image).stem}.{slug(result.query)}.png")
                    append({"image": image, **result.to_dict()})
                written += len(answer)
            tick()
    return BatchSummary(written=written, skipped=skipped, errors=errors)


def _decoded(
    images: list[str], workers: int
) -> Iterator[tuple[str, LoadedImage | InvalidImageError]]:
    """Each image decoded (or its error), in order, by a thread pool a few images ahead."""

    def decode(image: str) -> LoadedImage | InvalidImageError:
        try:
            return load_image(image)
        except InvalidImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sceneloc-decode") as pool:
        ahead: deque[tuple[str, Future[LoadedImage | InvalidImageError]]] = deque()
        pending = iter(images)
        for image in pending:
            ahead.append((image, pool.submit(decode, image)))
            if len(ahead) >= 2 * workers:
                break
        while ahead:
            image, future = ahead.popleft()
            following = next(pending, None)
            if following is not None:
                ahead.append((following, pool.submit(decode, following)))
            yield image, future.result()


@contextmanager
def _appender(out: Path) -> Iterator:
    """``append(record)``: one JSON line, written whole by one ``os.write`` on ``O_APPEND``."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SceneLocError(f"cannot write to {out}: {exc.strerror or exc}") from None

    def append(record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            count = os.write(fd, line)
        except OSError as exc:
            raise SceneLocError(f"cannot write to {out}: {exc.strerror or exc}") from None
        if count != len(line):
            raise SceneLocError(f"cannot write to {out}: short write (is the disk full?)")

    try:
        yield append
    finally:
        os.close(fd)


def _save_crop(result: LocateResult, path: Path) -> None:
    crop = result.crop()
    if crop is None:
        return
    try:
        crop.save(path)
    except OSError as exc:
        raise SceneLocError(f"cannot write {path}: {exc.strerror or exc}") from None


class _RateColumn(ProgressColumn):
    """Images per second over the recent past (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed:.2f} img/s" if speed else "- img/s", style="progress.data.speed")


@contextmanager
def _progress_bar(total: int, completed: int, shown: bool) -> Iterator:
    """A bar on stderr with rate and ETA when it is a terminal; yields ``tick()``, one image."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("batch"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=not (shown and console.is_terminal),
    ) as bar:  # fmt: skip
        task = bar.add_task("batch", total=total, completed=completed)
        yield lambda: bar.advance(task)
