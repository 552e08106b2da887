"""The report renders from real figures, refers only to images that exist, and refuses missing ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionkit.lab.report import referenced_images, render_report, report_context
from visionkit.viz import draw_boxes, plot_pr_curves, plot_training_curves


def _metrics(folder: Path) -> dict:
    """A metrics dict shaped like run_demo's, with figures really drawn into ``folder``."""
    figures = folder / "figures"
    plot_training_curves([{"step": s, "classification": 1 / (s + 1), "lr": 0.01} for s in range(5)],
                         figures / "train.png")  # fmt: skip
    plot_pr_curves({"circle": ([0.0, 0.5, 1.0], [1.0, 0.9, 0.4])}, figures / "pr.png")
    draw_boxes(torch.rand(3, 32, 32), [[2, 2, 20, 20]], [0], [0.9], ["circle"]).save(figures / "grid.png")
    model = {"title": "RetinaNet <one-stage>", "parameters": 1234, "ms_per_image": 12.5,
             "train_seconds": 60.0, "coco": {"AP": 0.61, "AP50": 0.93, "AP75": 0.7}, "voc07": 0.9,
             "voc12": 0.92,
             "per_class": [{"class": "circle", "COCO AP": 0.6}]}  # fmt: skip
    return {
        "subtitle": "test run", "models": {"retinanet": model},
        "anchors": [{"model": "RetinaNet", "foreground": 20.0, "background": 3000.0, "ignored": 40.0}],
        "nms": [{"suppression": "hard", "COCO AP": 0.4}, {"suppression": "soft_gaussian", "COCO AP": 0.45}],
        "settings": {"image_size": 128},
        "verdicts": [{"claim": "AP", "measured": "0.61", "target": "≥ 0.6", "passed": True},
                     {"claim": "time", "measured": "999 s", "target": "≤ 900 s", "passed": False}],
        "notes": {"speed": "s", "anchors": "a", "nms": "n"},
        "figures": {"training": [{"src": "figures/train.png", "caption": "curves"}],
                    "pr": [{"src": "figures/pr.png", "caption": "pr"}],
                    "predictions": [{"src": "figures/grid.png", "caption": "grid"}],
                    "nms": [{"src": "figures/grid.png", "caption": "crowded"}]},
    }  # fmt: skip


def test_report_renders_and_every_image_exists(tmp_path: Path) -> None:
    page_path = render_report(report_context(_metrics(tmp_path)), tmp_path / "report.html")
    page = page_path.read_text(encoding="utf-8")
    sources = referenced_images(page)
    assert sources == ["figures/train.png", "figures/pr.png", "figures/grid.png", "figures/grid.png"]
    assert all((tmp_path / src).is_file() for src in sources)
    assert "RetinaNet &lt;one-stage&gt;" in page and "<one-stage>" not in page  # escaped
    assert "1 : 150" in page  # 3000 background / 20 foreground
    assert page.count(">met<") == 1 and page.count(">not met<") == 1
    for heading in ("Training curves", "Precision–recall", "Predicted boxes", "One-stage vs two-stage",
                    "Foreground : background", "NMS vs Soft-NMS", "COCO, VOC07, VOC12"):  # fmt: skip
        assert heading in page


def test_missing_or_remote_image_is_an_error(tmp_path: Path) -> None:
    metrics = _metrics(tmp_path)
    metrics["figures"]["pr"].append({"src": "figures/nowhere.png", "caption": "x"})
    with pytest.raises(ValueError, match=r"missing images: \['figures/nowhere.png'\]"):
        render_report(report_context(metrics), tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()
    metrics["figures"]["pr"][-1]["src"] = "https://example.com/a.png"
    with pytest.raises(ValueError, match="relative paths"):
        render_report(report_context(metrics), tmp_path / "report.html")


def test_missing_context_key_is_an_error(tmp_path: Path) -> None:
    context = report_context(_metrics(tmp_path))
    del context["notes"]
    with pytest.raises(Exception, match="notes"):
        render_report(context, tmp_path / "report.html")
