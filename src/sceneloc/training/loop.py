"""The training loop every task shares, on Accelerate (one code path for 1..N devices).

``sceneloc train ...`` runs it on one device, ``accelerate launch -m sceneloc train ...``
across processes, each taking its share of the data. AdamW, warm-up then a decay
(:mod:`~sceneloc.training.schedule`), gradient accumulation and clipping, mixed precision
(bf16 on GPUs that have it), a checkpoint each epoch (``last/``) and the best by the task's
validation metrics (``best/``: the first decides, the next break ties), metrics to CSV and
TensorBoard, ``resume``. Progress goes to a callback, so the library draws no progress bar
(the CLI does).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from sceneloc.training.options import TrainingError, TrainingOptions
from sceneloc.training.schedule import Clock, lr_factor
from sceneloc.training.state import (
    STATE_FILE,
    EpochRecord,
    RunState,
    append_csv,
    read_options,
    read_state,
    write_options,
    write_rank_report,
    write_state,
)
from sceneloc.training.task import TrainingTask

logger = logging.getLogger(__name__)

#: Steps between log lines (for runs whose progress nobody watches).
LOG_EVERY = 50
#: The shuffle generator's state, in ``state/`` beside Accelerate's.
SHUFFLE_FILE = "shuffle.pt"


@dataclass(frozen=True)
class TrainingProgress:
    """Where the run is, after each step (and once before the first)."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None = None

    @property
    def description(self) -> str:
        loss = f" loss {self.loss:.3f}" if self.loss is not None else ""
        return f"epoch {self.epoch}{loss}"


ProgressCallback = Callable[[TrainingProgress], None]


class Trainer:
    """Runs one task; ``progress`` is called on the main process only."""

    def __init__(self, task: TrainingTask, progress: ProgressCallback | None = None) -> None:
        self.task = task
        self.options = task.options
        self.out = Path(task.options.out)
        self.progress = progress

    def run(self) -> list[EpochRecord]:
        """Train and save ``out/last`` and ``out/best``; returns one record per epoch.

        Nothing is written to ``out`` until the data, the options and the model have been
        checked and built: a mistake in them leaves no folder behind.
        """
        options, task, out = self.options, self.task, self.out
        set_seed(options.seed)
        on_cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        # Parameters that get no gradient in some steps must not stall the other processes.
        unused = DistributedDataParallelKwargs(find_unused_parameters=True)
        # Accelerate keeps its settings (mixed precision) and loaders (an interrupted run's
        # too) in process-wide state: each run in a process starts from none of it, as one
        # in a process of its own does. The process group (PartialState) stays.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        accelerator = Accelerator(
            # Without an accelerator, processes started by a launcher train on CPUs (gloo).
            cpu=on_cpu,
            mixed_precision=mixed_precision(options.precision, on_cpu),
            gradient_accumulation_steps=options.grad_accum,
            kwargs_handlers=[unused] if task.unused_parameters else [],
            log_with="tensorboard",
            project_dir=str(out),
        )
        task.prepare()
        self._check_outputs()
        state = read_state(out) if options.resume else None
        if state is not None:
            task.check_resume(read_options(out))
        model = task.build_model(out / "last" if state is not None else None)
        dataset = task.dataset()
        # The shuffle's generator is saved with the state, so a resumed run sees the batches
        # an uninterrupted one would.
        shuffle = torch.Generator().manual_seed(options.seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=options.batch_size, shuffle=True, num_workers=options.num_workers,
            collate_fn=task.collator(), generator=shuffle,
        )  # fmt: skip
        optimizer = torch.optim.AdamW(
            [{"params": params, "lr": options.lr * scale}
             for params, scale in task.parameter_groups(model) if params],
            weight_decay=options.weight_decay,
        )  # fmt: skip
        base_lrs = [group["lr"] for group in optimizer.param_groups]  # before a resume's decay
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        self._make_out(state is None)
        if state is not None:
            accelerator.load_state(str(out / "state"))
            if (out / "state" / SHUFFLE_FILE).is_file():
                shuffle.set_state(torch.load(out / "state" / SHUFFLE_FILE))
        start_epoch = state.epoch + 1 if state else 0
        step = state.step if state else 0
        best = state.best if state else []
        batches = len(loader)
        # Steps count optimizer steps: an epoch's last, shorter accumulation is one too.
        total_steps = max(1, options.epochs * math.ceil(batches / options.grad_accum))
        budget = options.max_minutes * 60 if options.max_minutes else None
        factor = lr_factor(options.warmup_fraction, options.lr_schedule)
        accelerator.init_trackers("sceneloc-train")
        clock = Clock(accelerator, already=state.seconds if state else 0.0)
        records: list[EpochRecord] = []
        queries_seen = 0
        if state is None and task.validate_before_training and options.val:
            records.append(self._before(accelerator, model))
        self._report(accelerator, TrainingProgress(step, total_steps, start_epoch + 1))
        for epoch in range(start_epoch, options.epochs):
            # The prepared loader passes its own count of epochs to the dataset as it starts
            # each one, a count that restarts at 0 in a resumed run: it is told the epoch.
            loader.set_epoch(epoch)
            dataset.set_epoch(epoch)
            model.train()
            losses: list[float] = []
            sizes: list[int] = []  # queries per batch: the epoch's loss is a mean per query
            for index, batch in enumerate(loader):
                elapsed = clock.elapsed()
                done = max(step / total_steps, elapsed / budget if budget else 0.0)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor(done)
                sizes.append(task.queries_in(batch))
                queries_seen += sizes[-1]
                with accelerator.accumulate(model):
                    loss = task.loss(model, batch)
                    # Accelerate divides each loss by grad_accum; an epoch's last accumulation
                    # may hold fewer batches, and its step is their mean all the same.
                    accelerator.backward(
                        loss * accumulation_scale(index, batches, options.grad_accum)
                    )
                    if options.grad_clip and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), options.grad_clip)
                    optimizer.step()  # Accelerate steps only once the gradients are summed
                    optimizer.zero_grad()
                losses.append(loss.item())
                if not accelerator.sync_gradients:
                    continue
                step += 1
                summed = losses[-(index % options.grad_accum + 1) :]
                report = TrainingProgress(step, total_steps, epoch + 1, sum(summed) / len(summed))
                self._report(accelerator, report)
                if step % LOG_EVERY == 0:
                    logger.info("step %d, %s", step, report.description)
                if budget and elapsed > budget:
                    break
            record = self._end_epoch(
                accelerator, model, epoch, step, mean(losses, sizes), clock.elapsed(),
                optimizer.param_groups[0]["lr"],
            )  # fmt: skip
            records.append(record)
            score = ranking(record.validation, task.metrics)
            improved = score is not None and score > best
            if improved or options.val is None:
                best = score if improved else best
                if accelerator.is_main_process:
                    replace_tree(out / "last", out / "best")
            accelerator.save_state(str(out / "state"))
            if accelerator.is_main_process:
                torch.save(shuffle.get_state(), out / "state" / SHUFFLE_FILE)
            seconds = clock.elapsed()  # on every process: the clock is a collective
            if accelerator.is_main_process:
                write_state(out, RunState(epoch, step, best, seconds))
            if budget and seconds > budget:
                logger.info("time budget of %.1f minutes reached", options.max_minutes)
                break
        if accelerator.is_main_process:
            task.finish(records)
        if accelerator.num_processes > 1:
            unwrapped = accelerator.unwrap_model(model)
            rank, world = accelerator.process_index, accelerator.num_processes
            write_rank_report(out, rank, world, unwrapped, queries_seen, len(loader))
        # Every process reaches this point before the process group goes: destroying it while a
        # peer is still busy can hang (pytorch/pytorch#75097).
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return records

    def _check_outputs(self) -> None:
        """Find a missing validation file and an ``--out`` that holds a run now (writing
        nothing: :meth:`_make_out` creates the folder once everything is checked)."""
        options, out = self.options, self.out
        if options.val and not Path(options.val).is_file():
            raise TrainingError(f"validation file not found: {options.val}")
        if out.exists() and not out.is_dir():
            raise TrainingError(f"--out {out} is a file, not a folder")
        holds_run = (out / STATE_FILE).exists() or (out / "last").is_dir()
        if not options.resume and holds_run:
            raise TrainingError(
                f"{out} holds a training run; pass --resume or choose another --out"
            )

    def _make_out(self, fresh: bool) -> None:
        """Create ``out``; a fresh run starts its ``metrics.csv`` and records its options
        (a run that failed before its first epoch may have left them)."""
        out = self.out
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"cannot write to {out}: {exc.strerror or exc}") from None
        if fresh and PartialState().is_main_process:
            (out / "metrics.csv").unlink(missing_ok=True)
            write_options(out, self.options)

    def _before(self, accelerator: Accelerator, model: torch.nn.Module) -> EpochRecord:
        """Validate the model as it starts (epoch 0 of ``metrics.csv``), to compare with."""
        accelerator.wait_for_everyone()
        validation: dict[str, float | None] = dict.fromkeys(self.task.metrics)
        if accelerator.is_main_process and self.options.val:
            validation.update(self.task.validate(accelerator.unwrap_model(model)))
        record = EpochRecord(0, 0, 0.0, math.nan, 0.0, validation)
        if accelerator.is_main_process:
            append_csv(self.out / "metrics.csv", record)
            logger.info("before training: %s", record)
        accelerator.log({k: v for k, v in validation.items() if v is not None}, step=0)
        return record

    def _report(self, accelerator: Accelerator, progress: TrainingProgress) -> None:
        if self.progress is not None and accelerator.is_main_process:
            self.progress(progress)

    def _end_epoch(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        epoch: int,
        step: int,
        train_loss: float,
        seconds: float,
        lr: float,
    ) -> EpochRecord:
        """Validate, save ``last/``, log to CSV and TensorBoard."""
        accelerator.wait_for_everyone()
        validation: dict[str, float | None] = dict.fromkeys(self.task.metrics)
        if accelerator.is_main_process:
            if self.options.val:
                validation.update(self.task.validate(accelerator.unwrap_model(model)))
            self.task.save(accelerator.unwrap_model(model), self.out / "last")
        record = EpochRecord(epoch + 1, step, round(seconds, 1),
                             train_loss, lr, validation)  # fmt: skip
        if accelerator.is_main_process:
            append_csv(self.out / "metrics.csv", record)
            logger.info("epoch %s", record)
        accelerator.log(
            {k: v for k, v in record.row().items() if v is not None and k != "step"}, step=step
        )
        model.train()
        return record


def train(options: TrainingOptions, progress: ProgressCallback | None = None) -> list[EpochRecord]:
    """Train the task ``options`` describe; returns one record per epoch."""
    return Trainer(options.make_task(), progress).run()


def mean(values: list[float], weights: list[int]) -> float:
    """The mean of ``values`` weighted by ``weights`` (NaN when there are none)."""
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total if total else math.nan


def ranking(validation: dict[str, float | None], metrics: tuple[str, ...]) -> list[float] | None:
    """What ``best/`` is chosen by: the first metric, ties broken by the next ones (a small
    validation set often ties on accuracy); ``None`` when there is no first metric."""
    if not metrics or validation.get(metrics[0]) is None:
        return None
    values = [validation.get(name) for name in metrics]
    return [-math.inf if value is None or math.isnan(value) else value for value in values]


def replace_tree(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source`` (no file of an earlier copy left in it)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def accumulation_scale(index: int, batches: int, grad_accum: int) -> float:
    """What the loss of an epoch's batch ``index`` is multiplied by so that each optimizer
    step follows the mean loss of its batches (Accelerate divides by ``grad_accum``)."""
    start = index - index % grad_accum
    return grad_accum / min(grad_accum, batches - start)


def mixed_precision(precision: str, on_cpu: bool) -> str:
    """Accelerate's ``mixed_precision`` for a ``precision`` option: ``auto`` is bf16 on GPUs
    that have it and fp32 elsewhere; fp16 needs a GPU."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if precision == "fp16" and on_cpu:
        raise TrainingError("fp16 needs a GPU; on a CPU use --precision fp32 or bf16")
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
