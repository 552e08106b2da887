"""The errata, asserted from computation: the errata experiments run (quick) and every known error of the
handbook appears with the value recomputed here independently."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from visionkit.lab.book import errata
from visionkit.lab.registry import experiments
from visionkit.lab.results import Verdict
from visionkit.lab.runner import run_experiments


@pytest.fixture(scope="module")
def found(lab_quick_out: Path) -> dict[str, list[tuple[str, Verdict]]]:
    results = run_experiments([e for e in experiments() if e.errata], lab_quick_out, quick=True)
    entries: dict[str, list[tuple[str, Verdict]]] = {}
    for result, verdict in errata(results):
        entries.setdefault(verdict.claim.section, []).append((result.name, verdict))
    return entries


def _with(entries: list[tuple[str, Verdict]], quote_part: str) -> Verdict:
    matches = [v for _, v in entries if quote_part in v.claim.quote]
    assert len(matches) == 1, [v.claim.quote for _, v in entries]
    return matches[0]


def test_inception_sums(found) -> None:
    naive = 1 * 1 * 192 * 64 + 3 * 3 * 192 * 128 + 5 * 5 * 192 * 32
    reduced = 1 * 1 * 192 * 64 + (1 * 1 * 192 * 96 + 3 * 3 * 96 * 128) + (1 * 1 * 192 * 16 + 5 * 5 * 16 * 32)
    assert (naive, reduced) == (387_072, 157_184)
    assert f"{naive:,}" in _with(found["§36"], "=153600").correction
    assert f"{reduced:,}" in _with(found["§36"], "=15872").correction


def test_optimizer_snippets(found) -> None:
    assert "x -= learning_rate * dx" in _with(found["§26"], "x += learning_rate * dx").correction
    assert "x -= learning_rate * vx" in _with(found["§26"], "x += learning_rate * vx").correction
    zero = _with(found["§26"], "beta1 ** t")
    assert zero.measured == "ZeroDivisionError at t = 0" and "range(1," in zero.correction
    first = _with(found["§26"], "偏置项")
    # the snippet's first step from x = 1 on x²/2: lr · 0.1 / (√0.001 + 1e-7) ≈ 3.162 lr
    assert f"{0.1 / (math.sqrt(0.001) + 1e-7):.3f} lr" in first.measured


def test_metric_examples(found) -> None:
    assert "2/6 = 33.3%" in _with(found["§33"], "Recall=2/6=30%").correction
    assert _with(found["§33"], "r’ > r").measured.startswith("undefined")
    assert f"{10 / 11:.4f}" in _with(found["§33"], "recall>0.3").measured
    beta, p, r = 2.0, 3 / 5, 3 / 4  # the experiment's example: TP 3, FP 2, FN 1
    assert f"{(1 + beta**2) * p * r / (beta**2 * p + r):.4f}" in _with(found["§23"], "F-Score").measured


def test_whitening(found) -> None:
    assert "S == λ" in _with(found["§7"], "特征值的平方").correction
    assert "√λ" in _with(found["§7"], "除以其特征值").correction
    # independently: for a symmetric PSD matrix the singular values are the eigenvalues
    matrix = np.cov(np.random.default_rng(0).normal(size=(50, 4)).T)
    assert np.allclose(
        np.linalg.svd(matrix)[1], np.sort(np.linalg.eigvalsh(matrix))[::-1], rtol=0, atol=1e-14
    )


def test_roi_pool_coverage(found) -> None:
    # Fast R-CNN rounding: round(665/32) = 21, inclusive end → 22 cells per side
    cells = round(665 / 32) - round(0 / 32) + 1
    assert f"{cells}×{cells} cells" in _with(found["§24"], "14*14").correction


def test_schedules_anchors_and_resnet(found) -> None:
    assert "power-law" in _with(found["§29"], r"\sqrt{e p o c h").correction
    assert "compounds" in _with(found["§29"], r"\frac{\alpha}{1+").correction
    assert "YOLOv3 has 9 anchors" in _with(found["§18"], "由5个变为3个，提高了IOU").correction
    assert "20 of 20" in _with(found["§25"], "Batch Normalization").correction


def test_yolo_architecture(found) -> None:
    from visionkit.models import create_model

    v3 = create_model("yolov3_plain", num_classes=3)
    (anchors,) = [v for _, v in found["§18"] if v.claim.quote == "anchor的数量由5个变为3个"]
    assert f"YOLOv3 has {v3.anchors.shape[0]} anchors, 3 per scale" in anchors.correction
    c4 = v3.backbone.output_shape()["c4"].channels
    lateral = v3.neck.laterals[0][0].out_channels  # the 1×1 conv before the upsampling
    fused = _with(found["§18"], "eltwise sum")
    assert fused.measured == f"concatenation: {lateral} upsampled + {c4} finer channels → {lateral + c4}"


def test_no_unexpected_errata(found) -> None:
    """Each erratum is one of those above: a new one must be looked at (and added here)."""
    expected = {"§7": 2, "§18": 3, "§23": 1, "§24": 1, "§25": 1, "§26": 4, "§29": 2, "§33": 3, "§36": 2}
    assert {section: len(entries) for section, entries in found.items()} == expected
    assert all(verdict.correction for entries in found.values() for _, verdict in entries)
