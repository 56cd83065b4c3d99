"""The ``--report`` folder: metrics.json, a Markdown summary and PNG plots (locate), or
metrics.json and the Markdown summary (describe).

Plots use matplotlib's object API on an Agg canvas (no pyplot), so writing a report never
touches the user's interactive backend or global figure state.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.evaluation.describing import DescribeResult
from sceneloc.evaluation.metrics import THRESHOLDS, EvaluationResult

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "report.md"
IOU_HISTOGRAM = "iou_histogram.png"
ACCURACY_BY_TYPE = "accuracy_by_type.png"
ACCURACY_BY_SIZE = "accuracy_by_size.png"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(groups: dict[str, dict[str, Any]], heading: str) -> str:
    """A Markdown table with one row per group and one column per metric."""
    if not groups:
        return ""
    columns = list(next(iter(groups.values())))
    lines = [
        "| " + " | ".join([heading, *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, metrics in groups.items():
        lines.append("| " + " | ".join([name, *(_cell(metrics[c]) for c in columns)]) + " |")
    return "\n".join(lines)


def render_markdown(result: EvaluationResult, plots: list[str]) -> str:
    """The report as Markdown: overall metrics, breakdowns and the plots."""
    metrics = result.to_dict()
    overall = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    overall.pop("seconds_per_sample")
    speed = result.seconds_per_sample
    parts = [
        f"# Evaluation: {result.source}" if result.source else "# Evaluation",
        f"{result.n} samples; {speed:.4f} s per sample." if speed is not None else "",
        "## Overall",
        markdown_table({"all": overall}, "samples"),
        "## By query type",
        markdown_table(result.by_type(), "type"),
        "## By split",
        markdown_table(result.by_split(), "split"),
        "## By target size",
        "Bins by sqrt(target box area / image area).",
        markdown_table(result.by_size(), "size"),
        "## Plots",
        *(f"![{name}]({name})" for name in plots),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _bar_chart(path: Path, groups: dict[str, dict[str, Any]], title: str, xlabel: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(groups)
    figure = Figure(figsize=(max(5.0, 0.8 * len(names) + 2.0), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(len(names))
    width = 0.8 / len(THRESHOLDS)
    for index, threshold in enumerate(THRESHOLDS):
        values = [groups[name][f"acc@{threshold}"] or 0.0 for name in names]
        axes.bar(x + (index - (len(THRESHOLDS) - 1) / 2) * width, values, width,
                 label=f"acc@{threshold}")  # fmt: skip
    axes.set_xticks(x, [f"{name}\n(n={groups[name]['n']})" for name in names])
    axes.set_ylim(0, 1.15)  # headroom for the legend above full bars
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_ylabel("accuracy")
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.legend(loc="upper right", ncols=len(THRESHOLDS))
    figure.savefig(path, dpi=100)


def _histogram(path: Path, ious: np.ndarray, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist(ious, bins=20, range=(0.0, 1.0), color="#4E79A7", edgecolor="white")
    for threshold in THRESHOLDS:
        axes.axvline(threshold, color="#E15759", linestyle="--", linewidth=1)
    axes.set_xlabel("IoU of the prediction with the best-matching target")
    axes.set_ylabel("samples")
    axes.set_title(title)
    figure.savefig(path, dpi=100)


def write_report(result: EvaluationResult, folder: str | Path) -> list[Path]:
    """Write metrics.json, report.md and the plots into ``folder``; returns their paths."""
    folder = Path(folder)
    title = result.source or "evaluation"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / METRICS_FILE).write_text(
            json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        _histogram(folder / IOU_HISTOGRAM, np.asarray(result.ious), f"IoU - {title}")
        _bar_chart(folder / ACCURACY_BY_TYPE, result.by_type(), "Accuracy by query type", "type")
        _bar_chart(
            folder / ACCURACY_BY_SIZE, result.by_size(), "Accuracy by target size", "target size"
        )
        plots = [IOU_HISTOGRAM, ACCURACY_BY_TYPE, ACCURACY_BY_SIZE]
        (folder / MARKDOWN_FILE).write_text(render_markdown(result, plots), encoding="utf-8")
    except OSError as exc:
        raise SceneLocError(f"cannot write the report to {folder}: {exc.strerror or exc}") from None
    logger.info("wrote the evaluation report to %s", folder)
    return [folder / name for name in (METRICS_FILE, MARKDOWN_FILE, *plots)]


def _write_text(folder: Path, files: dict[str, str]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SceneLocError(f"cannot write the report to {folder}: {exc.strerror or exc}") from None


def write_describe_report(result: DescribeResult, folder: str | Path) -> list[Path]:
    """Write metrics.json and report.md of a describe evaluation into ``folder``."""
    folder = Path(folder)
    metrics = result.to_dict()
    overall = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    overall.pop("seconds_per_region")
    parts = [
        f"# Describe evaluation: {result.source}" if result.source else "# Describe evaluation",
        f"{result.n} regions, each scored against all its references.",
        "## Overall",
        markdown_table({"all": overall}, "regions"),
        "## By reference type",
        "The regions with references of a type, against those references only.",
        markdown_table(metrics["by_type"], "type"),
    ]
    _write_text(folder, {
        METRICS_FILE: json.dumps(metrics, indent=2) + "\n",
        MARKDOWN_FILE: "\n\n".join(parts) + "\n",
    })  # fmt: skip
    logger.info("wrote the describe evaluation report to %s", folder)
    return [folder / METRICS_FILE, folder / MARKDOWN_FILE]
