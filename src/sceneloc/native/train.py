"""Training the native model: presets, options, and the loop (Accelerate for 1..N devices).

One code path serves a CPU, a GPU and a cluster: ``sceneloc train ...`` on one device, or
``accelerate launch -m sceneloc train ...`` across processes, each taking its share of the
images. AdamW, warm-up then a decay (cosine all the way, or held steady and decayed at the
end; over the epochs or the time budget, whichever ends first), gradient clipping, bf16 on
GPUs, a checkpoint each epoch (``last/``) and the best by validation accuracy (``best/``),
metrics to CSV and TensorBoard, ``resume``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sceneloc.data.format import read_samples
from sceneloc.errors import SceneLocError
from sceneloc.native.config import BUILTIN_CNN, BUILTIN_TEXT, FUSIONS, WORD_VECTORS, NativeConfig
from sceneloc.native.dataset import (
    AbsentQueries,
    Collator,
    GroundingDataset,
    ImageGroup,
    SceneAnnotations,
    group_by_image,
)
from sceneloc.native.model import NativeGroundingModel
from sceneloc.native.processing import normalize
from sceneloc.native.text import read_word_vectors, vocabulary_from_texts, word_tokenizer, words

logger = logging.getLogger(__name__)

#: Words a query may have (longer ones are cut).
MAX_TEXT_LENGTH = 32
#: Steps between log lines (for runs whose progress bar nobody sees).
LOG_EVERY = 50
#: Validation queries (and as many absent ones) that calibrate the presence score.
CALIBRATION_QUERIES = 500
#: Learning-rate schedules after the warm-up: a cosine decay over the whole run, or the peak
#: rate held until the last ``STABLE_DECAY_FRACTION`` of it, then a cosine decay (as in
#: warmup-stable-decay schedules; for short budgets, where a long decay wastes the run).
SCHEDULES = ("cosine", "stable-decay")
STABLE_DECAY_FRACTION = 0.3

#: Ready configurations; explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Built-in CNN and text encoder, sized to learn in minutes on two CPU cores.
    "synthetic-cpu": {
        "image_encoder": BUILTIN_CNN, "text_encoder": BUILTIN_TEXT, "fusion": "cross-attention",
        "image_size": 256, "hidden_size": 64, "fusion_layers": 2, "image_layers": 2,
        "attention_heads": 2, "dropout": 0.0, "batch_size": 4, "lr": 2e-3,
        "warmup_fraction": 0.03, "lr_schedule": "stable-decay", "reasoning_lr_scale": 4.0,
        "absent_fraction": 0.1, "cache_images": True,
    },
    # The seeds' architecture for real photos: ResNet-50 and BERT, cross-attention fusion.
    "resnet50-bert": {
        "image_encoder": "microsoft/resnet-50", "text_encoder": "bert-base-uncased",
        "fusion": "cross-attention", "image_size": 512, "hidden_size": 256, "fusion_layers": 6,
        "attention_heads": 8, "batch_size": 16, "lr": 1e-4, "encoder_lr_scale": 0.1,
        "absent_fraction": 0.1,
    },
    # The seeds' baseline: pooled image and GloVe text vectors concatenated into an MLP.
    "concat-glove": {
        "image_encoder": "microsoft/resnet-50", "text_encoder": WORD_VECTORS, "fusion": "concat",
        "image_size": 384, "hidden_size": 256, "batch_size": 32, "lr": 3e-4,
        "encoder_lr_scale": 0.1, "absent_fraction": 0.1,
    },
}  # fmt: skip


class TrainingError(SceneLocError):
    """Options that cannot train a model (unknown preset, missing word vectors, ...)."""


@dataclass
class TrainOptions:
    """Everything ``sceneloc train`` takes; a YAML config file holds the same keys."""

    data: str
    out: str
    val: str | None = None
    preset: str | None = None
    # model
    image_encoder: str = BUILTIN_CNN
    text_encoder: str = BUILTIN_TEXT
    fusion: str = "cross-attention"
    image_size: int = 256
    hidden_size: int = 128
    fusion_layers: int = 4
    image_layers: int = 2
    attention_heads: int = 4
    dropout: float = 0.1
    text_layers: int = 2
    word_vectors: str | None = None
    freeze_image_encoder: bool = False
    freeze_text_encoder: bool = False
    # optimisation
    epochs: int = 10
    max_minutes: float | None = None
    batch_size: int = 8
    lr: float = 3e-4
    encoder_lr_scale: float = 1.0
    reasoning_lr_scale: float = 1.0
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    seed: int = 0
    absent_fraction: float = 0.0
    learn_attributes: bool = True
    augment: bool = True
    cache_images: bool = False
    num_workers: int = 0
    val_limit: int | None = 2000
    resume: bool = False

    @classmethod
    def build(cls, preset: str | None = None, **explicit: Any) -> TrainOptions:
        """Defaults, then the preset, then the options the user gave (``None`` = not given)."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise TrainingError(
                    f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
                )
            values.update(PRESETS[preset])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(explicit) - known)
        if unknown:
            raise TrainingError(f"unknown training option(s): {', '.join(unknown)}")
        values.update({k: v for k, v in explicit.items() if v is not None})
        for required in ("data", "out"):
            if not values.get(required):
                raise TrainingError(f"training needs {required!r} (--{required})")
        options = cls(preset=preset, **{k: _coerce(k, v) for k, v in values.items()})
        options.check()
        return options

    def check(self) -> None:
        """Refuse settings that could only fail later, deep inside PyTorch."""
        if self.fusion not in FUSIONS:
            raise TrainingError(f"fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        if self.lr_schedule not in SCHEDULES:
            raise TrainingError(
                f"lr_schedule must be one of {', '.join(SCHEDULES)}, not {self.lr_schedule!r}"
            )
        if self.hidden_size % self.attention_heads:
            raise TrainingError(
                f"hidden_size ({self.hidden_size}) must be a multiple of attention_heads "
                f"({self.attention_heads})"
            )
        for name in ("epochs", "batch_size", "image_size", "hidden_size", "fusion_layers"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1")


_FIELD_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _coerce(name: str, value: Any) -> Any:
    """A config value as its option's type (YAML reads ``3e-4`` as a string, for one)."""
    field = {f.name: f for f in dataclasses.fields(TrainOptions)}[name]
    kind = str(field.type).split(" | ")[0]
    convert = _FIELD_TYPES.get(kind)
    if convert is None or type(value) is convert:
        return value
    try:
        if convert is bool:
            if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return str(value).lower() in ("true", "1", "yes")
        return convert(float(value)) if convert is int else convert(value)
    except (TypeError, ValueError):
        raise TrainingError(f"option {name!r} must be {kind}, got {value!r}") from None


@dataclass
class EpochRecord:
    epoch: int
    step: int
    seconds: float
    train_loss: float
    lr: float
    val_acc: float | None
    val_miou: float | None


class Clock:
    """Seconds of training, the same on every process (the main process's clock decides),
    so all stop at the same step and follow the same learning-rate schedule."""

    def __init__(self, accelerator: Accelerator, already: float = 0.0) -> None:
        self.accelerator = accelerator
        self.start = time.monotonic() - already

    def elapsed(self) -> float:
        seconds = torch.tensor([time.monotonic() - self.start], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            seconds = broadcast(seconds)
        return float(seconds.item())


def _schedule(warmup_fraction: float, shape: str) -> Callable[[float], float]:
    """Learning-rate factor for training progress in [0, 1]: linear warm-up, then a cosine
    decay over the rest (``cosine``) or over its last part only (``stable-decay``)."""
    decay_start = 1 - STABLE_DECAY_FRACTION if shape == "stable-decay" else warmup_fraction

    def factor(progress: float) -> float:
        if progress < warmup_fraction:
            return max(progress / warmup_fraction, 1e-3)
        decay = max(0.0, progress - decay_start) / max(1e-8, 1 - decay_start)
        return 0.5 * (1 + math.cos(math.pi * min(decay, 1.0)))

    return factor


def build_model(
    options: TrainOptions,
    texts: list[str],
    object_attributes: dict[str, list[str]] | None = None,
) -> tuple[NativeGroundingModel, PreTrainedTokenizerBase]:
    """A fresh model and its tokenizer; pretrained encoders are downloaded (or read) here."""
    config_values: dict[str, Any] = {
        name: getattr(options, name)
        for name in ("image_encoder", "text_encoder", "fusion", "image_size", "hidden_size",
                     "fusion_layers", "image_layers", "attention_heads", "text_layers", "dropout",
                     "freeze_image_encoder", "freeze_text_encoder")
    }  # fmt: skip
    config_values["object_attributes"] = object_attributes
    vectors = None
    if options.text_encoder == BUILTIN_TEXT:
        tokenizer = word_tokenizer(vocabulary_from_texts(texts), max_length=MAX_TEXT_LENGTH)
    elif options.text_encoder == WORD_VECTORS:
        if not options.word_vectors:
            raise TrainingError("the word-vectors text encoder needs --word-vectors FILE")
        needed = {word for text in texts for word in words(text)}
        vocabulary, vectors = read_word_vectors(options.word_vectors, keep=needed)
        tokenizer = word_tokenizer(vocabulary, max_length=MAX_TEXT_LENGTH)
        config_values["word_vector_size"] = vectors.shape[1]
    else:
        from sceneloc.backends.base import from_pretrained

        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, options.text_encoder)
    config_values["vocab_size"] = len(tokenizer)
    config_values["max_text_length"] = MAX_TEXT_LENGTH
    config = NativeConfig(**config_values)
    try:
        model = NativeGroundingModel(config, load_pretrained_encoders=True)
    except OSError as exc:
        raise TrainingError(f"cannot load a pretrained encoder: {exc}") from None
    if vectors is not None:
        with torch.no_grad():
            model.text_encoder.embed.weight[2 : 2 + len(vectors)] = torch.from_numpy(vectors)
    return model, tokenizer


def _optimizer(model: NativeGroundingModel, options: TrainOptions) -> torch.optim.Optimizer:
    """AdamW; pretrained encoders learn at ``encoder_lr_scale`` times the rate, the spatial
    reasoning (a few small heads that the grounding loss reaches late) at
    ``reasoning_lr_scale`` times (4 in the synthetic-cpu preset: relations 0.14 -> 0.19
    after 5 minutes)."""
    scales = {"rest": 1.0, "pretrained": options.encoder_lr_scale,
              "reasoning": options.reasoning_lr_scale}  # fmt: skip
    groups: dict[str, list[torch.nn.Parameter]] = {name: [] for name in scales}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("reasoning."):
            groups["reasoning"].append(parameter)
        elif (
            name.startswith("image_encoder.body.") and model.config.image_encoder != BUILTIN_CNN
        ) or name.startswith("text_encoder.model."):
            groups["pretrained"].append(parameter)
        else:
            groups["rest"].append(parameter)
    return torch.optim.AdamW(
        [
            {"params": parameters, "lr": options.lr * scales[name]}
            for name, parameters in groups.items()
            if parameters
        ],
        weight_decay=options.weight_decay,
    )


def weights_digest(model: torch.nn.Module) -> str:
    """A checksum of the weights, to compare the copies of a distributed run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def train(options: TrainOptions) -> list[EpochRecord]:
    """Train and save ``out/last`` and ``out/best``; returns one record per epoch."""
    out = Path(options.out)
    data = Path(options.data)
    set_seed(options.seed)
    accelerator = Accelerator(
        # Without an accelerator, processes started by a launcher train on CPUs (gloo).
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        mixed_precision="bf16" if _bf16_gpu() else "no",
        log_with="tensorboard",
        project_dir=str(out),
    )
    samples = list(read_samples(data))
    if not samples:
        raise TrainingError(f"{data} holds no samples")
    groups = group_by_image(samples, data.parent)
    _check_inputs(options, groups)
    scenes = SceneAnnotations.beside(data)
    state = _read_state(out) if options.resume else None
    if state is not None:
        model = NativeGroundingModel.from_pretrained(out / "last")
        tokenizer = AutoTokenizer.from_pretrained(out / "last")
    else:
        attributes = scenes.attributes() if scenes and options.learn_attributes else None
        model, tokenizer = build_model(options, [s.query for s in samples], attributes)
    config = model.config
    absent = AbsentQueries(groups, scenes) if options.absent_fraction else None
    dataset = GroundingDataset(
        groups, config.image_size, seed=options.seed, augment=options.augment, absent=absent,
        absent_fraction=options.absent_fraction,
        cache_images=options.cache_images and options.num_workers == 0,
        scenes=scenes, attributes=config.object_attributes,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=options.batch_size, shuffle=True, num_workers=options.num_workers,
        collate_fn=Collator(tokenizer, config),
        generator=torch.Generator().manual_seed(options.seed),
    )  # fmt: skip
    optimizer = _optimizer(model, options)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # before a resume's decayed ones
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if state is not None:
        accelerator.load_state(str(out / "state"))
    start_epoch = state["epoch"] + 1 if state else 0
    step = state["step"] if state else 0
    best = state["best"] if state else -1.0
    total_steps = max(1, options.epochs * len(loader))
    budget = options.max_minutes * 60 if options.max_minutes else None
    factor = _schedule(options.warmup_fraction, options.lr_schedule)
    accelerator.init_trackers("sceneloc-train")
    clock = Clock(accelerator, already=state.get("seconds", 0.0) if state else 0.0)
    records: list[EpochRecord] = []
    queries_seen = 0
    with _progress(accelerator) as progress:
        task = progress.add_task("training", total=total_steps, completed=step)
        for epoch in range(start_epoch, options.epochs):
            dataset.set_epoch(epoch)
            model.train()
            losses = []
            for batch in loader:
                elapsed = clock.elapsed()
                done = max(step / total_steps, elapsed / budget if budget else 0.0)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor(done)
                pixels = normalize(batch.pop("pixel_values"), config)
                outputs = model(pixel_values=pixels, **batch)
                accelerator.backward(outputs.loss)
                if options.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), options.grad_clip)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                queries_seen += len(batch["input_ids"])
                losses.append(outputs.loss.item())
                description = f"epoch {epoch + 1} loss {losses[-1]:.3f}"
                progress.update(task, completed=step, description=description)
                if step % LOG_EVERY == 0:
                    logger.info("step %d, %s", step, description)
                if budget and elapsed > budget:
                    break
            record = _end_epoch(
                accelerator, model, tokenizer, options, epoch, step, losses,
                clock.elapsed(), optimizer.param_groups[0]["lr"],
            )  # fmt: skip
            records.append(record)
            improved = record.val_acc is not None and record.val_acc > best
            if improved or options.val is None:
                best = record.val_acc if improved else best
                if accelerator.is_main_process:
                    shutil.copytree(out / "last", out / "best", dirs_exist_ok=True)
            accelerator.save_state(str(out / "state"))
            seconds = clock.elapsed()  # on every process: the clock is a collective
            if accelerator.is_main_process:
                _write_state(out, {"epoch": epoch, "step": step, "best": best, "seconds": seconds})
            if budget and seconds > budget:
                logger.info("time budget of %.1f minutes reached", options.max_minutes)
                break
    if accelerator.num_processes > 1:
        _write_rank_report(accelerator, model, out, queries_seen, len(loader))
    # Every process reaches this point before the process group goes: destroying it while a
    # peer is still busy can hang (pytorch/pytorch#75097).
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return records


def _end_epoch(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    options: TrainOptions,
    epoch: int,
    step: int,
    losses: list[float],
    seconds: float,
    lr: float,
) -> EpochRecord:
    """Validate (with the ``evaluate`` code), save ``last/``, log to CSV and TensorBoard."""
    accelerator.wait_for_everyone()
    out = Path(options.out)
    val_acc = val_miou = None
    if accelerator.is_main_process:
        if options.val:
            metrics = validate(accelerator.unwrap_model(model), tokenizer, options)
            val_acc, val_miou = metrics["acc@0.5"], metrics["miou"]
        _save(accelerator, model, tokenizer, out / "last")
    record = EpochRecord(
        epoch + 1, step, round(seconds, 1), sum(losses) / max(1, len(losses)), lr, val_acc, val_miou
    )
    if accelerator.is_main_process:
        _append_csv(out / "metrics.csv", record)
        logger.info("epoch %s", record)
    accelerator.log(
        {k: v for k, v in dataclasses.asdict(record).items() if v is not None and k != "step"},
        step=step,
    )
    model.train()
    return record


def validate(
    model: NativeGroundingModel, tokenizer: PreTrainedTokenizerBase, options: TrainOptions
) -> dict[str, Any]:
    """Acc@0.5 and mIoU on the validation file, by the same code as ``sceneloc evaluate``;
    then the presence score is calibrated on it (into ``model.config``)."""
    from sceneloc.api import Grounder
    from sceneloc.backends.native import NativeBackend
    from sceneloc.evaluation import evaluate_model
    from sceneloc.native.calibration import calibrate_presence

    backend = NativeBackend(model, tokenizer)
    metrics = evaluate_model(
        options.val, Grounder(backend, "validation"), threshold=0.0, limit=options.val_limit
    )
    limit = min(options.val_limit or CALIBRATION_QUERIES, CALIBRATION_QUERIES)
    calibrate_presence(backend, options.val, limit=limit, seed=options.seed)
    return metrics.to_dict()


def _save(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
) -> None:
    accelerator.unwrap_model(model).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _append_csv(path: Path, record: EpochRecord) -> None:
    row = dataclasses.asdict(record)
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _check_inputs(options: TrainOptions, groups: list[ImageGroup]) -> None:
    """Find missing files and an unusable ``--out`` now, not hours into the run."""
    missing = [group.path for group in groups if not group.path.is_file()]
    if missing:
        raise TrainingError(f"{len(missing)} training image(s) not found, e.g. {missing[0]}")
    if options.val and not Path(options.val).is_file():
        raise TrainingError(f"validation file not found: {options.val}")
    out = Path(options.out)
    if not options.resume and (out / "trainer_state.json").exists():
        raise TrainingError(f"{out} holds a training run; pass --resume or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot write to {out}: {exc.strerror or exc}") from None
    if options.cache_images and options.num_workers > 0:
        logger.warning("cache_images is ignored with data-loading workers (each has its own copy)")


def _read_state(out: Path) -> dict[str, Any] | None:
    path = out / "trainer_state.json"
    if not path.is_file() or not (out / "last").is_dir():
        raise TrainingError(f"nothing to resume in {out}: no trainer_state.json and last/")
    return json.loads(path.read_text())


def _write_state(out: Path, state: dict[str, Any]) -> None:
    (out / "trainer_state.json").write_text(json.dumps(state))


def _write_rank_report(
    accelerator: Accelerator, model: torch.nn.Module, out: Path, queries: int, batches: int
) -> None:
    """Each process's share and a checksum of its weights, to check a distributed run."""
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "queries_seen": queries,
        "batches_per_epoch": batches,
        "weights_sha256": weights_digest(accelerator.unwrap_model(model)),
    }
    ranks = out / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))


def _bf16_gpu() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _progress(accelerator: Accelerator) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not accelerator.is_main_process, transient=False,
    )  # fmt: skip
