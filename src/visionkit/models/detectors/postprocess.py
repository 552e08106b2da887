"""Detection post-processing settings (one frozen dataclass) and the post-processing they drive.

Every detector family holds one :class:`PostProcess` as ``detector.postprocess`` and passes it down to
whatever decodes its outputs (RetinaNet's levels, the RoI heads of Faster R-CNN, ...): the settings are
checked once, here, and switching NMS for an experiment is
``detector.postprocess = detector.postprocess.replace(nms_method="soft_gaussian")``.

Example:
    >>> import torch
    >>> settings = PostProcess(nms_threshold=0.5, detections_per_image=10)
    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 70]])
    >>> result = postprocess_detections(boxes, torch.tensor([0.9, 0.8, 0.2]), torch.tensor([0, 0, 1]),
    ...                                 (64, 64), settings)  # candidates already above score_threshold
    >>> result["boxes"].tolist(), [round(s, 2) for s in result["scores"].tolist()]
    ([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 64.0]], [0.9, 0.2])
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from visionkit.errors import ConfigError
from visionkit.ops.boxes import clip_boxes_to_image, remove_small_boxes
from visionkit.ops.nms import batched_nms
from visionkit.ops.soft_nms import batched_soft_nms
from visionkit.structures import Detections

__all__ = ["NMS_METHODS", "NMSMethod", "PostProcess", "hard_nms_engine", "postprocess_detections", "suppress"]

NMSMethod = Literal["hard", "soft_linear", "soft_gaussian"]
NMS_METHODS: tuple[str, ...] = ("hard", "soft_linear", "soft_gaussian")


@dataclass(frozen=True)
class PostProcess:
    """How raw detections become the final list (validated at construction).

    Args:
        score_threshold: candidates scoring at most this are dropped before suppression, in ``[0, 1)``;
            Soft-NMS also drops boxes whose decayed score falls below it.
        nms_method: ``"hard"`` (class-aware greedy NMS), ``"soft_linear"`` or ``"soft_gaussian"``
            (Bodla et al., 2017; handbook §8).
        nms_threshold: IoU above which hard NMS suppresses and linear Soft-NMS decays, in ``[0, 1]``.
        soft_nms_sigma: width of the Gaussian decay ``exp(-IoU²/σ)``, > 0.
        detections_per_image: at most this many detections per image (>= 1).
        topk_candidates: per feature level (dense heads), the best candidates kept before suppression.
    """

    score_threshold: float = 0.05
    nms_method: NMSMethod = "hard"
    nms_threshold: float = 0.5
    soft_nms_sigma: float = 0.5
    detections_per_image: int = 100
    topk_candidates: int = 1000

    def __post_init__(self) -> None:
        checks = (
            ("score_threshold", 0.0 <= self.score_threshold < 1.0, "a number in [0, 1)"),
            ("nms_method", self.nms_method in NMS_METHODS, f"one of {list(NMS_METHODS)}"),
            ("nms_threshold", 0.0 <= self.nms_threshold <= 1.0, "a number in [0, 1]"),
            (
                "soft_nms_sigma",
                self.soft_nms_sigma > 0 and math.isfinite(self.soft_nms_sigma),
                "a number > 0",
            ),
            ("detections_per_image", _is_count(self.detections_per_image), "an integer >= 1"),
            ("topk_candidates", _is_count(self.topk_candidates), "an integer >= 1"),
        )
        for name, valid, expected in checks:
            if not valid:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected {expected}")

    def replace(self, **changes: Any) -> PostProcess:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' names, e.g. for builders that take them as keyword arguments."""
        return tuple(field.name for field in dataclasses.fields(cls))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


#: the class-aware hard NMS that :func:`suppress` calls (``batched_nms``, or another engine with its
#: signature and results inside :func:`hard_nms_engine`)
_HARD_NMS: contextvars.ContextVar[Callable[[Tensor, Tensor, Tensor, float], Tensor]] = contextvars.ContextVar(
    "hard_nms", default=batched_nms
)


@contextlib.contextmanager
def hard_nms_engine(engine: Callable[[Tensor, Tensor, Tensor, float], Tensor]) -> Iterator[None]:
    """Within the block, hard NMS runs ``engine(boxes, scores, labels, iou_threshold)`` (the kept indices
    by decreasing score, as :func:`~visionkit.ops.batched_nms`) instead of ``batched_nms``; e.g. the ONNX
    graph of :mod:`visionkit.deploy.onnx_nms`. Per context (thread, task), restored on exit."""
    token = _HARD_NMS.set(engine)
    try:
        yield
    finally:
        _HARD_NMS.reset(token)


def suppress(boxes: Tensor, scores: Tensor, labels: Tensor, settings: PostProcess) -> tuple[Tensor, Tensor]:
    """Class-aware NMS or Soft-NMS of ``boxes`` ``Tensor[N, 4]`` per ``settings``.

    Returns:
        ``(kept indices, their scores)`` by decreasing score; Soft-NMS returns the decayed scores.
    """
    if settings.nms_method == "hard":
        keep = _HARD_NMS.get()(boxes, scores, labels, settings.nms_threshold)
        return keep, scores[keep]
    decay: Literal["linear", "gaussian"] = "linear" if settings.nms_method == "soft_linear" else "gaussian"
    return batched_soft_nms(
        boxes,
        scores,
        labels,
        method=decay,
        sigma=settings.soft_nms_sigma,
        iou_threshold=settings.nms_threshold,
        score_threshold=settings.score_threshold,
    )


def postprocess_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    image_size: tuple[int, int],
    settings: PostProcess,
    min_size: float = 1e-2,
) -> Detections:
    """Clip candidates to the image, drop tiny boxes, suppress, keep the best ``detections_per_image``.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy candidates (already above the score threshold); scores: ``[N]``;
            labels: ``[N]``; image_size: ``(height, width)`` of the image they belong to.

    Returns:
        :class:`~visionkit.structures.Detections` with ``D <= detections_per_image`` rows.
    """
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep, scores = suppress(boxes, scores, labels, settings)
    keep, scores = keep[: settings.detections_per_image], scores[: settings.detections_per_image]
    return {"boxes": boxes[keep], "scores": scores, "labels": labels[keep].to(torch.int64)}
