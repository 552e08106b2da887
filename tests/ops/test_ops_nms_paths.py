"""Engine switches of NMS and soft-NMS: every path equals the plain loop exactly, on both sides of each
switch (dense/spatial size cut-off for hard NMS; packed components / graph rounds / sequential loop for
soft-NMS, with many tiny components and one giant component)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from visionkit.ops.nms import batched_nms, nms

nms_module = importlib.import_module("visionkit.ops.nms")  # `ops.nms` is the function


def ref_iou(a: list[float], b: list[float]) -> float:
    width = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    height = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = width * height
    union = (
        max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0) + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0) - inter
    )
    return inter / union if union > 0 else 0.0


def ref_nms(boxes, scores, threshold, labels=None) -> list[int]:
    """Visit by (score desc, index asc); keep unless a kept box of the same label has IoU > threshold."""
    boxes, scores = boxes.tolist(), scores.tolist()
    labels = [0] * len(boxes) if labels is None else labels.tolist()
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: (-scores[i], i)):
        if all(labels[k] != labels[i] or ref_iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


def ref_soft_nms(boxes, scores, method, sigma=0.5, nt=0.3, score_threshold=0.001, labels=None):
    """The sequential loop of Bodla et al.: best remaining box (lower index on ties), decay, drop weak."""
    boxes, s = boxes.tolist(), scores.tolist()
    labels = [0] * len(boxes) if labels is None else labels.tolist()
    remaining = [i for i in range(len(boxes)) if s[i] >= score_threshold]
    kept, kept_scores = [], []
    while remaining:
        best = max(remaining, key=lambda i: (s[i], -i))
        kept.append(best)
        kept_scores.append(s[best])
        remaining.remove(best)
        for i in remaining:
            if labels[i] != labels[best]:
                continue
            iou = ref_iou(boxes[best], boxes[i])
            if method == "linear":
                if iou > nt:
                    s[i] *= 1 - iou
            else:
                s[i] *= math.exp(-(iou * iou) / sigma)
        remaining = [i for i in remaining if s[i] >= score_threshold]
    return kept, kept_scores


def clustered(num_boxes: int, seed: int, per_object: int = 20, spread: float = 300.0, num_labels: int = 1):
    g = torch.Generator().manual_seed(seed)
    num_objects = max(1, num_boxes // per_object)
    centres = torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * spread
    sizes = 8 + torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 40
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15)
    c = centres[owner] + torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15 * sizes[owner]
    boxes = torch.cat((c - wh / 2, c + wh / 2), dim=1)
    scores = torch.rand(num_boxes, generator=g, dtype=torch.float64)
    return boxes, scores, torch.randint(num_labels, (num_boxes,), generator=g)


# ---------------------------------------------------------------- hard NMS: dense/spatial size switch
@pytest.mark.parametrize("offset", [0, 1])
def test_nms_both_sides_of_dense_cutoff(offset):
    num_boxes = nms_module._DENSE_MAX + offset
    boxes, scores, labels = clustered(num_boxes, seed=offset, num_labels=3)
    assert nms(boxes, scores, 0.5).tolist() == ref_nms(boxes, scores, 0.5)
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == ref_nms(boxes, scores, 0.5, labels)


def test_nms_engines_agree_when_cutoff_is_moved(monkeypatch):
    boxes, scores, labels = clustered(1000, seed=4, num_labels=5)
    # tied scores exercise the stable order on every engine
    tied = torch.floor(scores * 8) / 8
    want = ref_nms(boxes, tied, 0.45)
    want_batched = ref_nms(boxes, tied, 0.45, labels)
    for cutoff in (0, 10_000):  # 0: spatial/sparse engines; 10 000: dense engine
        monkeypatch.setattr(nms_module, "_DENSE_MAX", cutoff)
        assert nms(boxes, tied, 0.45).tolist() == want
        assert batched_nms(boxes, tied, labels, 0.45, strategy="offset").tolist() == want_batched
