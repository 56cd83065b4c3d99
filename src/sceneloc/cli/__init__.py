"""The ``sceneloc`` command: a thin typer layer over the Python API.

Each module here holds the commands of one feature; this one assembles them. Errors are
reported once, for all of them, by :class:`~sceneloc.cli.common.ErrorReportingGroup`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sceneloc.cli import (
    batch,
    calibrate,
    data,
    demo,
    describe,
    evaluate,
    finetune,
    locate,
    serve,
    train,
)
from sceneloc.cli.common import ErrorReportingGroup, configure_logging

app = typer.Typer(
    cls=ErrorReportingGroup,
    help="Find the region of an image that a natural-language description refers to.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log progress to stderr; show the traceback of an internal error.",
        ),
    ] = False,
) -> None:
    configure_logging(verbose)


app.command()(locate.locate)
app.command()(describe.describe)
app.command()(locate.models)
app.command()(evaluate.evaluate)
app.add_typer(data.app, name="data")
app.command()(train.train)
app.command()(finetune.finetune)
app.command()(demo.demo)
app.command()(batch.batch)
app.command()(serve.serve)
app.command()(calibrate.calibrate)
