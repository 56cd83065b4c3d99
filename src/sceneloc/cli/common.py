"""What every command shares: the console, logging set-up and the one-line error exits."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from sceneloc.errors import SceneLocError
from sceneloc.registry import DEFAULT_MODELS, Task

console = Console()
err_console = Console(stderr=True)

#: Exit status for a failure that is not the user's doing (a bug, a broken install).
EXIT_INTERNAL = 1
#: Exit status for bad input (missing files, malformed data, unknown models).
EXIT_USAGE = 2

# Options that several commands take, declared once (``device: Device = "auto"``).
Threshold = Annotated[float | None, typer.Option(help="Minimum score (default: the model's own).")]
TopK = Annotated[int, typer.Option("--top-k", min=1, help="Candidates kept per query.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")]


def model_option(task: Task) -> Any:
    """The ``--model`` option of a command doing ``task``, naming that task's defaults."""
    defaults = ", ".join(
        f"{name} on a {kind.upper()}" for kind, name in DEFAULT_MODELS[task].items()
    )
    help_text = (
        f"Short name, hub id or local directory (default: {defaults}; see `sceneloc models`)."
    )
    return Annotated[str | None, typer.Option("--model", "-m", help=help_text)]


Model = model_option(Task.LOCATE)
DescribeModel = model_option(Task.DESCRIBE)
MaxPixels = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Image budget in pixels, for models that resize the image to one (Qwen-VL); "
        "default: the model's own for the device.",
    ),
]


def model_options(max_pixels: int | None) -> dict[str, int]:
    """The backend options the user set on the command line (none when left at defaults)."""
    return {} if max_pixels is None else {"max_pixels": max_pixels}


Tiles = Annotated[
    str,
    typer.Option(
        help="Look at a large image tile by tile as well as whole: auto (when it is much "
        "larger than the model's input), off, or a tile side in pixels. Models not safe to "
        "tile (generative ones) take off or auto (then: whole image only)."
    ),
]
TileOverlap = Annotated[
    float, typer.Option(help="How much neighbouring tiles overlap, as a fraction of a tile.")
]
Events = Annotated[
    bool,
    typer.Option(
        help="Answer a query naming several participants ('a vendor selling vegetables') with "
        "the box around all of them, each participant's box in 'parts'."
    ),
]
CalibrationFile = Annotated[
    Path | None,
    typer.Option(
        help="A calibration file from `sceneloc calibrate`: scores become the probability "
        "that the referent is there."
    ),
]


def locate_options(tiles: str, tile_overlap: float, events: bool) -> dict[str, Any]:
    """``locate``'s options as the user set them, checked before any model loads."""
    from sceneloc.tiling import parse_overlap, parse_tiles

    return {"tiles": parse_tiles(tiles), "tile_overlap": parse_overlap(tile_overlap),
            "events": events}  # fmt: skip


def calibration_options(calibration: Path | None) -> dict[str, Path]:
    """``load``'s calibration option, when the user gave a file."""
    return {} if calibration is None else {"calibration": calibration}


def answer_table(
    payload: dict[str, Any], columns: Sequence[tuple[str, Literal["left", "right"]]]
) -> Table:
    """An empty table for one image's ``--json`` payload, titled with the image, its size and
    the model; ``columns`` are (heading, justification) pairs."""
    image = payload["image"]
    table = Table(
        title=escape(f"{image['path']} ({image['width']}x{image['height']}) - {payload['model']}"),
        title_justify="left",
    )
    for heading, justify in columns:
        table.add_column(heading, justify=justify)
    return table


def configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    if not verbose:
        import transformers

        transformers.logging.set_verbosity_error()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        transformers.logging.disable_progress_bar()


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise (status 2: bad input)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


class ErrorReportingGroup(TyperGroup):
    """The root command group: every command's errors end as one line on stderr.

    A :class:`~sceneloc.errors.SceneLocError` is the user's to fix: its message, exit 2.
    Anything else is a failure of sceneloc itself: its type and message, exit 1, and the
    traceback only under ``--verbose`` (a user cannot act on one, a bug report needs it).
    Handled here once, so no command needs its own ``try``.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own: exits (fail() too), Ctrl+C, usage errors
        except SceneLocError as exc:
            raise fail(str(exc)) from None
        except Exception as exc:
            if ctx.params.get("verbose"):
                traceback.print_exc()
            command = ctx.invoked_subcommand or "sceneloc"
            detail = " ".join(f"{type(exc).__name__}: {exc}".split()).removesuffix(":")
            err_console.print(
                f"[bold red]error:[/] {escape(command)} failed: {escape(detail)} "
                "(sceneloc --verbose shows the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERNAL) from None
