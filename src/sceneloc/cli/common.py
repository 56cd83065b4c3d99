"""What every command shares: the console, logging set-up and the one-line error exit."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)

#: Exit status for bad input (missing files, malformed data, unknown models).
EXIT_USAGE = 2

# Options that several commands take, declared once (``device: Device = "auto"``).
Threshold = Annotated[float | None, typer.Option(help="Minimum score (default: the model's own).")]
TopK = Annotated[int, typer.Option("--top-k", min=1, help="Candidates kept per query.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")]


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
