"""Hard NMS against Soft-NMS on a generated crowded scene of detector-like boxes (handbook §8).

The ops-level half of the demo's NMS comparison (the detector-level half evaluates AP on the ``shapes``
crowded split): many jittered boxes around each object with uniform scores, and what each method keeps.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from visionkit.ops import box_iou, nms, soft_nms

__all__ = ["compare_suppression", "make_crowded_boxes"]


def make_crowded_boxes(
    num_boxes: int,
    seed: int = 0,
    image_size: tuple[int, int] = (800, 1333),
    boxes_per_object: int = 50,
) -> tuple[Tensor, Tensor, Tensor]:
    """Detector-like output around ``num_boxes // boxes_per_object`` objects (deterministic from ``seed``).

    Objects get log-uniform sizes in [16, 160] px at uniform positions; each box jitters its object's
    centre and size by about 10 %, and scores are uniform in [0, 1).

    Returns:
        ``(boxes Tensor[N, 4], scores Tensor[N], objects Tensor[M, 4])``, xyxy float32.

    Example:
        >>> boxes, scores, objects = make_crowded_boxes(100, seed=0)
        >>> boxes.shape, scores.shape, objects.shape
        (torch.Size([100, 4]), torch.Size([100]), torch.Size([2, 4]))
    """
    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    num_objects = max(1, num_boxes // boxes_per_object)
    centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([float(width), float(height)])
    sizes = torch.exp(torch.empty(num_objects, 2).uniform_(math.log(16.0), math.log(160.0), generator=g))
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g) * 0.1)
    centre = centres[owner] + torch.randn(num_boxes, 2, generator=g) * 0.1 * sizes[owner]
    boxes = torch.cat((centre - wh / 2, centre + wh / 2), dim=1)
    objects = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)
    return boxes, torch.rand(num_boxes, generator=g), objects


def _recovered(boxes: Tensor, keep: Tensor, objects: Tensor) -> int:
    """Objects matched (IoU >= 0.5) by one of the top-|objects| kept boxes."""
    top = keep[: objects.shape[0]]
    if top.numel() == 0:
        return 0
    return int((box_iou(objects, boxes[top]).amax(dim=1) >= 0.5).sum())


def compare_suppression(
    boxes: Tensor, scores: Tensor, objects: Tensor, iou_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Run hard NMS, linear and Gaussian Soft-NMS; one row per method with ``method``, ``kept``,
    ``score >= 0.5`` (after decay), ``objects found`` (IoU ≥ 0.5 among the top-M kept) and ``ms``."""
    runs = [
        (f"hard NMS (IoU > {iou_threshold:g})", lambda: (nms(boxes, scores, iou_threshold), None)),
        ("soft-NMS linear (N_t 0.3)", lambda: soft_nms(boxes, scores, "linear", iou_threshold=0.3)),
        ("soft-NMS gaussian (σ 0.5)", lambda: soft_nms(boxes, scores, "gaussian", sigma=0.5)),
    ]
    rows = []
    for name, run in runs:
        start = time.perf_counter()
        keep, decayed = run()
        elapsed = (time.perf_counter() - start) * 1e3
        final = scores[keep] if decayed is None else decayed
        rows.append({"method": name, "kept": keep.numel(), "score ≥ 0.5": int((final >= 0.5).sum()),
                     "objects found": f"{_recovered(boxes, keep, objects)}/{objects.shape[0]}",
                     "ms": elapsed})  # fmt: skip
    return rows
