"""PR / training-curve PNGs are written from metrics and engine logs; HTML tables escape and format."""

from __future__ import annotations

import copy
import csv
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.metrics.detection import evaluate_coco
from visionkit.viz import metrics_table_html, plot_pr_curves, plot_training_curves, read_training_log


def _png_ok(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100


def test_pr_curves_from_coco_result(tmp_path: Path) -> None:
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 1]),
                "area": torch.tensor([100.0, 100.0])}]  # fmt: skip
    predictions = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 29, 30], [40, 40, 50, 50]]),
                    "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 1, 1])}]  # fmt: skip
    result = evaluate_coco(predictions, targets, num_classes=3)
    curves = {name: result.pr_curve(k) for k, name in enumerate(result.category_names)}
    frozen = copy.deepcopy(curves)
    ap = {row["name"]: row["AP50"] for row in result.per_class()}
    path = plot_pr_curves(curves, tmp_path / "sub" / "pr.png", average_precision={k: ap[k] for k in curves})
    _png_ok(path)
    for name in curves:  # the caller's arrays are untouched
        np.testing.assert_array_equal(curves[name][1], frozen[name][1])


def test_pr_curves_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one class"):
        plot_pr_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="curve 'a'"):
        plot_pr_curves({"a": ([0, 1], [1])}, tmp_path / "x.png")


def test_training_curves_from_history_and_csv(tmp_path: Path) -> None:
    history = [{"step": s, "classification": 1 / (s + 1), "box_regression": 0.5 / (s + 1), "lr": 1e-3 * s}
               for s in range(20)]  # fmt: skip
    frozen = copy.deepcopy(history)
    _png_ok(plot_training_curves(history, tmp_path / "curves.png"))
    assert history == frozen
    log = tmp_path / "log.csv"
    with log.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    assert read_training_log(log)[3] == history[3]  # csv writes repr(float), which float() reads back exactly
    _png_ok(plot_training_curves(log, tmp_path / "from_csv.png", losses=["classification"]))


def test_training_curves_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="x column 'step'"):
        plot_training_curves([{"epoch": 1, "loss": 1.0}], tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_training_log(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,abc\n")
    with pytest.raises(ValueError, match="line 2"):
        read_training_log(bad)


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []

    def handle_data(self, data: str) -> None:
        self.cells.append(data)


def test_metrics_table_html_formats_and_escapes() -> None:
    rows = [{"model": "<b>x</b>", "AP": 0.123456, "n": 3}, {"model": "y", "AP": float("nan")}]
    table = metrics_table_html(rows, caption="COCO")
    parser = _Cells()
    parser.feed(table)
    assert parser.cells == [
        "COCO",
        "model",
        "AP",
        "n",
        "<b>x</b>",
        "0.123",
        "3",
        "y",
        "n/a",
    ]  # the missing "n" is an empty cell
    assert "<b>" not in table
