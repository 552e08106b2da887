"""Argument checks shared by the ops: every error names the argument and says what was expected."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise ``ValueError`` unless ``boxes`` is a floating or integer ``Tensor[N, 4]``."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, 4], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {list(boxes.shape)}")
    if boxes.is_complex() or boxes.dtype == torch.bool:
        raise ValueError(f"{name} must be a real floating or integer tensor, got {boxes.dtype}")


def check_same_device(*named: tuple[str, Tensor]) -> None:
    """Raise ``ValueError`` naming both tensors when they live on different devices."""
    first_name, first = named[0]
    for name, tensor in named[1:]:
        if tensor.device != first.device:
            raise ValueError(
                f"{first_name} is on {first.device} but {name} is on {tensor.device}; move both to one device"
            )


def check_same_dtype(*named: tuple[str, Tensor]) -> None:
    """Raise ``ValueError`` naming both tensors when their dtypes differ (no silent promotion)."""
    first_name, first = named[0]
    for name, tensor in named[1:]:
        if tensor.dtype != first.dtype:
            raise ValueError(
                f"{first_name} has dtype {first.dtype} but {name} has dtype {tensor.dtype}; "
                "convert both to one dtype"
            )


def check_scores(scores: Tensor, num_boxes: int, name: str = "scores") -> None:
    """Raise unless ``scores`` is a real ``Tensor[num_boxes]``."""
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N], got {type(scores).__name__}")
    if scores.dim() != 1:
        raise ValueError(f"{name} must have shape [N] (one score per box), got {list(scores.shape)}")
    if scores.shape[0] != num_boxes:
        raise ValueError(
            f"{name} must have one entry per box: boxes has {num_boxes} rows, {name} has shape "
            f"{list(scores.shape)}"
        )
    if scores.is_complex() or scores.dtype == torch.bool:
        raise ValueError(f"{name} must be a real floating or integer tensor, got {scores.dtype}")


def check_labels(labels: Tensor, num_boxes: int, name: str = "labels") -> None:
    """Raise unless ``labels`` is an integer ``Tensor[num_boxes]``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N], got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != num_boxes:
        raise ValueError(
            f"{name} must have shape [{num_boxes}] (one label per box), got {list(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")


def check_real_number(value: object, name: str) -> float:
    """Return ``value`` as a finite float or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value
