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

if TYPE_CHECKING:
    from sceneloc.training.finetune.options import FinetuneOptions

#: One validation per line, in order: epoch 0 (before), then after each epoch.
EVALUATIONS_FILE = "evaluations.jsonl"
LIBRARIES = ("sceneloc", "torch", "transformers", "accelerate", "peft")
#: Metrics of the markdown table, where the evaluation has them.
TABLE = ("acc@0.5", "miou", "bleu4", "cider", "exact")


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


def read_evaluations(out: Path) -> list[dict[str, Any]]:
    path = out / EVALUATIONS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_report(options: FinetuneOptions, family: str, metric: str) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` in ``options.out``; ``metric`` is the key of
    the evaluation that picked ``best/``."""
    out = Path(options.out)
    evaluations = read_evaluations(out)
    before = evaluations[0] if evaluations else None
    best_epoch = None
    if len(evaluations) > 1:
        best_epoch = max(range(1, len(evaluations)), key=lambda e: evaluations[e][metric])
    after = evaluations[best_epoch] if best_epoch is not None else None
    data = {"data": options.data, **({"val": options.val} if options.val else {})}
    report = {
        "model": options.model,
        "family": family,
        "task": options.task,
        "best": str(out / "best"),
        "best_epoch": best_epoch,
        "before": before,
        "after": after,
        "by_epoch": [{"epoch": e, metric: ev[metric]} for e, ev in enumerate(evaluations)],
        "options": asdict(options),
        "data_sha256": {key: file_hash(path) for key, path in data.items()},
        "versions": versions(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict[str, Any]) -> str:
    before, after = report["before"], report["after"]
    lines = [f"# Fine-tuning {report['model']} ({report['family']}, {report['task']})", ""]
    if before is None or after is None:
        lines += ["No validation data: nothing to compare.", ""]
    else:
        lines += [f"Best checkpoint: epoch {report['best_epoch']} (`{report['best']}`).", "",
                  "| | before | after |", "|---|---|---|"]  # fmt: skip
        for key in TABLE:
            if key in before and before[key] is not None:
                lines.append(f"| {key} | {before[key]:.3f} | {after[key]:.3f} |")
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


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
