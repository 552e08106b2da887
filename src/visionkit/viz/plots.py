"""Figures and tables for reports: PR curves per class, training curves, metrics tables as HTML.

matplotlib is used through its object API on the non-interactive Agg canvas, so plotting works without a
display and never touches pyplot's global state.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visionkit.viz.boxes import class_colour

__all__ = ["metrics_table_html", "plot_pr_curves", "plot_training_curves", "read_training_log"]


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def _hex(label: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*class_colour(label))


def plot_pr_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "Precision-recall",
    average_precision: Mapping[str, float] | None = None,
) -> Path:
    """Plot one precision-recall curve per class (the colours of :func:`~visionkit.viz.class_colour`).

    Args:
        curves: class name -> ``(recall [R], precision [R])``, e.g. from ``CocoResult.pr_curve(k)``;
            precision −1 (pycocotools' "no ground truth") is not drawn.
        path: PNG file to write (folders are created).
        average_precision: class name -> AP shown in the legend.

    Returns:
        ``path``.

    Example:
        >>> plot_pr_curves({"circle": ([0, 0.5, 1], [1, 1, 0.5])}, "pr.png").stat().st_size > 0
        True
    """
    if not curves:
        raise ValueError("curves must hold at least one class")
    figure = Figure(figsize=(4.5, 3.6))
    axes = figure.add_subplot()
    for label, (name, (recall, precision)) in enumerate(curves.items()):
        recall_array, precision_array = np.asarray(recall, float), np.asarray(precision, float)
        if recall_array.shape != precision_array.shape or recall_array.ndim != 1:
            raise ValueError(
                f"curve {name!r}: recall and precision must be 1-D of one length, got "
                f"{recall_array.shape} and {precision_array.shape}"
            )
        valid = precision_array >= 0
        legend = name if average_precision is None else f"{name} (AP {average_precision[name]:.3f})"
        axes.plot(recall_array[valid], precision_array[valid], color=_hex(label), label=legend)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def read_training_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of an engine CSV log (``CSVLogger`` or a per-step log) with numeric values as floats."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} does not exist")
    rows = []
    with path.open(newline="") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            try:
                rows.append({key: float(value) for key, value in row.items() if value not in ("", None)})
            except ValueError as error:
                raise ValueError(f"{path} line {line}: expected numbers, got {row}") from error
    return rows


def plot_training_curves(
    history: Sequence[Mapping[str, float]] | str | Path,
    path: str | Path,
    *,
    x: str = "step",
    losses: Sequence[str] | None = None,
    title: str = "Training",
) -> Path:
    """Loss terms (log scale, left) and the learning rate (right) against ``x``.

    Args:
        history: records such as ``{"step": 3, "loss": 0.9, "classification": 0.5, "lr": 1e-3}``, or the path
            of a CSV log with those columns.
        path: PNG file to write.
        x: the column on the horizontal axis (``"step"`` or ``"epoch"``).
        losses: the columns to plot as losses (default: every column except ``x``, ``lr`` and ``epoch``).

    Returns:
        ``path``.
    """
    records = read_training_log(history) if isinstance(history, str | Path) else list(history)
    if not records:
        raise ValueError("history is empty: nothing to plot")
    if any(x not in record for record in records):
        raise ValueError(f"every history record needs the x column {x!r}; got columns {sorted(records[0])}")
    names = list(losses) if losses is not None else [
        key for key in dict.fromkeys(k for r in records for k in r) if key not in (x, "lr", "epoch", "step")
    ]  # fmt: skip
    figure = Figure(figsize=(6.0, 3.6))
    axes = figure.add_subplot()
    steps = np.asarray([record[x] for record in records], float)
    for label, name in enumerate(names):
        values = np.asarray([record.get(name, math.nan) for record in records], float)
        axes.plot(steps, values, color=_hex(label), label=name, linewidth=1.2)
    axes.set(xlabel=x, ylabel="loss", title=title)
    if names and all(np.nanmin([r.get(n, math.nan) for r in records]) > 0 for n in names):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if "lr" in records[0]:
        lr_axes = axes.twinx()
        lr_axes.plot(steps, [record.get("lr", math.nan) for record in records], color="0.4", linestyle="--")
        lr_axes.set_ylabel("learning rate (dashed)")
    if names:
        axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def metrics_table_html(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    digits: int = 3,
    caption: str | None = None,
) -> str:
    """An HTML ``<table>`` of ``rows`` (floats with ``digits`` decimals, everything escaped).

    Example:
        >>> metrics_table_html([{"model": "retinanet", "AP": 0.61234}])
        '<table><thead><tr><th>model</th><th>AP</th></tr></thead><tbody><tr><td>retinanet</td><td>0.612</td></tr></tbody></table>'
    """
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c, ''), digits)}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
