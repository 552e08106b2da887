"""Collect detector outputs batch by batch and evaluate them at the end (for evaluation loops and hooks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from visionkit.metrics.detection.coco import CocoResult, evaluate_coco
from visionkit.metrics.detection.voc import VocResult, evaluate_voc

__all__ = ["DetectionMeter"]


def _detached(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Copy an image's dict to numpy so later in-place edits of the caller's tensors cannot leak in."""
    copied: dict[str, Any] = {}
    for key, value in entry.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        copied[key] = np.array(value, copy=True) if isinstance(value, np.ndarray) else value
    return copied


class DetectionMeter:
    """Accumulates ``(predictions, targets)`` batches; :meth:`compute` runs COCO or VOC evaluation.

    Args:
        metric: ``"coco"``, ``"voc07"`` (11-point) or ``"voc12"`` (all-point).
        num_classes: categories ``0…num_classes-1`` (default: the labels seen).
        **options: passed to :func:`~.coco.evaluate_coco` or :func:`~.voc.evaluate_voc`.

    Example:
        >>> import torch
        >>> meter = DetectionMeter("voc12")
        >>> target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}
        >>> meter.update([{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]),
        ...                "labels": torch.tensor([0])}], [target])
        >>> meter.compute().mean_average_precision
        1.0
    """

    def __init__(self, metric: str = "coco", num_classes: int | None = None, **options: Any) -> None:
        if metric not in ("coco", "voc07", "voc12"):
            raise ValueError(f"metric must be 'coco', 'voc07' or 'voc12', got {metric!r}")
        self.metric, self.num_classes, self.options = metric, num_classes, options
        self.predictions: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []

    def update(self, predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch: one prediction dict and one target dict per image."""
        if len(predictions) != len(targets):
            raise ValueError(f"predictions has {len(predictions)} images but targets has {len(targets)}")
        self.predictions += [_detached(p) for p in predictions]
        self.targets += [_detached(t) for t in targets]

    def compute(self) -> CocoResult | VocResult:
        """Evaluate everything added so far with the meter's ``metric`` (see :meth:`coco` / :meth:`voc`
        for results of one known type)."""
        if self.metric == "coco":
            return self.coco()
        return self.voc("11point" if self.metric == "voc07" else "all")

    def coco(self) -> CocoResult:
        """COCO evaluation (AP@[.5:.95], AP50, AP75, by area, AR) of everything added so far."""
        return evaluate_coco(self.predictions, self.targets, num_classes=self.num_classes, **self.options)

    def voc(self, interpolation: str = "all") -> VocResult:
        """VOC mAP@0.5 of everything added so far: ``"11point"`` (VOC2007) or ``"all"`` (VOC2010+)."""
        return evaluate_voc(
            self.predictions, self.targets, num_classes=self.num_classes, interpolation=interpolation,
            **self.options,
        )  # fmt: skip

    def reset(self) -> None:
        """Forget all batches."""
        self.predictions, self.targets = [], []
