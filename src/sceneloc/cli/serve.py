"""``sceneloc serve``: the HTTP API and web page, over models loaded before the port opens."""

from __future__ import annotations

from typing import Annotated

import typer

from sceneloc.cli.common import (
    CalibrationFile,
    Device,
    Dtype,
    Model,
    calibration_options,
    console,
    fail,
)


def serve(
    model: Model = None,
    describe_model: Annotated[
        str | None,
        typer.Option(
            help="Model answering POST /v1/describe (short name, hub id or local directory). "
            "Default: --model itself where it describes too, else none (/v1/describe answers "
            "501).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Inference threads, all sharing the loaded models (threads, not "
            "processes: each model is in memory once). More pay off only with CPUs to spare.",
        ),
    ] = 1,
    max_upload_mb: Annotated[
        float, typer.Option(min=0, help="Largest request body accepted, in MiB.")
    ] = 20.0,
    queue_limit: Annotated[
        int,
        typer.Option(
            min=1,
            help="Locate and describe requests admitted at once, running and waiting; more get 503 "
            "with Retry-After. At least --workers.",
        ),
    ] = 32,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads each worker's torch operations use. Default: the CPUs torch "
            "sees less one (left to the network and image decoding), shared among the workers.",
        ),
    ] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    calibration: CalibrationFile = None,
) -> None:
    """Serve POST /v1/locate and /v1/describe, the web page at / and the API docs at /docs."""
    import torch
    import uvicorn

    import sceneloc
    from sceneloc.registry import Task, resolve
    from sceneloc.server import create_app

    if queue_limit < workers:
        raise fail(f"--queue-limit ({queue_limit}) must be at least --workers ({workers})")
    if describe_model is not None:
        resolve(describe_model, Task.DESCRIBE)  # fail fast, before loading either model
    grounder = sceneloc.load(model, device=device, dtype=dtype, **calibration_options(calibration))
    describer = None
    if describe_model is not None:
        describer = sceneloc.load(describe_model, Task.DESCRIBE, device=device, dtype=dtype)
    # Torch threads spinning on every CPU starve the event loop and the image decoding,
    # which then stretch every request's latency (the README's load test measures it).
    torch.set_num_threads(threads or max(1, (torch.get_num_threads() - 1) // workers))
    app = create_app(
        grounder,
        describer=describer,
        max_upload_bytes=round(max_upload_mb * 1024 * 1024),
        workers=workers,
        queue_limit=queue_limit,
    )
    console.print(f"loaded {grounder.name} on {grounder.device}; web page at http://{host}:{port}/")
    if describer is not None:
        console.print(f"describing with {describer.name} on {describer.device}")
    uvicorn.run(app, host=host, port=port)
