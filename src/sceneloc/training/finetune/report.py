"""``report.json`` and ``report.md``: a fine-tuning run's figures before and after.

Before is the validation of the starting model (epoch 0), after that of ``best/``; both
hold the whole evaluation (Acc@IoU, mean IoU, by type). Beside them: the run's options,
the data files' SHA-256 and the versions of the libraries that ran it, so a figure can be
traced to what produced it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sceneloc.training.loop import ranking
from sceneloc.training.state import STATE_FILE

if TYPE_CHECKING:
    from sceneloc.training.finetune.options import FinetuneOptions

#: One validation per line, in order: epoch 0 (before), then after each epoch.
EVALUATIONS_FILE = "evaluations.jsonl"
LIBRARIES = ("sceneloc", "torch", "transformers", "accelerate", "peft")
#: Metrics of the markdown table, where the evaluation has them.
TABLE = ("acc@0.5", "miou", "bleu4", "cider", "exact")
#: Metrics of each epoch in ``by_epoch``.
SUMMARY = ("acc@0.5", "miou")


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def read_evaluations(out: Path) -> dict[int, dict[str, Any]]:
    """Each validated epoch's evaluation (0: before training); an epoch validated twice (a
    run stopped before it saved its state, then resumed) keeps its last."""
    path = out / EVALUATIONS_FILE
    if not path.is_file():
        return {}
    evaluations: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            evaluation = json.loads(line)
            evaluations[int(evaluation.pop("epoch"))] = evaluation
    return dict(sorted(evaluations.items()))


def write_report(options: FinetuneOptions, family: str, metrics: list[str]) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` in ``options.out``; ``metrics`` are the keys
    of the evaluation that picked ``best/`` (the first epoch with the highest first one,
    ties broken by the next: as the loop picks it)."""
    out = Path(options.out)
    evaluations = read_evaluations(out)
    before = evaluations.get(0)
    trained = [epoch for epoch in evaluations if epoch > 0]
    best_epoch = None
    if trained:
        best_epoch = max(trained, key=lambda e: ranking(evaluations[e], tuple(metrics)) or [])
    state = json.loads((out / STATE_FILE).read_text()) if (out / STATE_FILE).is_file() else {}
    data = {"data": options.data, **({"val": options.val} if options.val else {})}
    report = {
        "model": options.model,
        "family": family,
        "task": options.task,
        "best": str(out / "best"),
        "last": str(out / "last"),
        "best_epoch": best_epoch,
        "epochs": state.get("epoch", -1) + 1,
        "steps": state.get("step"),
        "seconds": state.get("seconds"),
        "before": before,
        "after": evaluations.get(best_epoch) if best_epoch is not None else None,
        "by_epoch": [
            {"epoch": epoch, **{key: evaluation.get(key) for key in SUMMARY}}
            for epoch, evaluation in evaluations.items()
        ],
        "options": asdict(options),
        "data_sha256": {key: file_hash(path) for key, path in data.items()},
        "versions": versions(),
    }
    write_text(out / "report.json", json.dumps(report, indent=2))
    write_text(out / "report.md", markdown(report))
    return report


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader never finds half a report."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def markdown(report: dict[str, Any]) -> str:
    before, after = report["before"], report["after"]
    options = report["options"]
    lines = [f"# Fine-tuning {report['model']} ({report['family']}, {report['task']})", "",
             f"{report['epochs']} epoch(s), {report['steps']} optimizer steps, "
             f"{_figure(report['seconds'], '.0f')} s; lr {options['lr']:g}, batch "
             f"{options['batch_size']} x {options['grad_accum']} accumulated, freeze "
             f"{options['freeze']}, LoRA rank {options['lora_rank']}, precision "
             f"{options['precision']}.", ""]  # fmt: skip
    if before is None or after is None:
        lines += ["No validation data: nothing to compare.", ""]
    else:
        lines += [f"Best checkpoint: epoch {report['best_epoch']} (`{report['best']}`).", "",
                  "| | before | after |", "|---|---|---|"]  # fmt: skip
        for key in TABLE:
            if before.get(key) is not None or after.get(key) is not None:
                lines.append(f"| {key} | {_figure(before.get(key))} | {_figure(after.get(key))} |")
        types = sorted(set(before.get("by_type", {})) | set(after.get("by_type", {})))
        if types:
            lines += ["", "By type (Acc@0.5, before -> after):", ""]
            for name in types:
                old = before.get("by_type", {}).get(name, {}).get("acc@0.5")
                new = after.get("by_type", {}).get(name, {}).get("acc@0.5")
                lines.append(f"- {name}: {_figure(old)} -> {_figure(new)}")
        lines.append("")
    lines += ["Data (SHA-256):", ""]
    lines += [f"- {key}: {value}" for key, value in report["data_sha256"].items()]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def _figure(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)
