"""Plain-Python references for hard NMS and Soft-NMS, shared by the ops tests (slow, obviously correct)."""

from __future__ import annotations

import math


def ref_iou(a: list[float], b: list[float]) -> float:
    """Same arithmetic as the library (IEEE float64 when boxes are float64)."""
    width = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    height = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = width * height
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes, scores, threshold, labels=None) -> list[int]:
    """The textbook loop: visit by (score desc, index asc); keep unless a kept box of the same label
    has IoU > threshold."""
    boxes, scores = boxes.tolist(), scores.tolist()
    labels = [0] * len(boxes) if labels is None else labels.tolist()
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(labels[k] != labels[i] or ref_iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


def ref_soft_nms(boxes, scores, method="linear", sigma=0.5, nt=0.3, score_threshold=0.001, labels=None):
    """The loop: select the best remaining box (lower index on ties), decay the others, drop the weak."""
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
