"""Bridge to the C loops of NMS / Soft-NMS (``visionkit.ops._nms_native``, built from ``ops/_native/``).

The compiled module is optional: when it is missing (no C compiler at install time), disabled
(environment ``VISIONKIT_NATIVE=0`` or :data:`enabled` set to ``False``) or the tensors are not on the CPU,
:func:`usable` is False and the pure-PyTorch engines run. Both backends compute the same IoU arithmetic in
the same dtype, so they return identical indices.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    from visionkit.ops import _nms_native as _kernels  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _kernels = None

__all__ = ["available", "backend_name", "enabled", "greedy_keep", "nms_indices", "soft_nms_loop", "usable"]

#: Use the C loops when they are built (``VISIONKIT_NATIVE=0`` in the environment turns them off).
enabled: bool = os.environ.get("VISIONKIT_NATIVE", "1") != "0"

_CODES = {torch.float32: 0, torch.float64: 1}


def available() -> bool:
    """True when the C kernels are built and enabled."""
    return _kernels is not None and enabled


def backend_name() -> str:
    """``"C kernels (CPU)"`` or why the pure-PyTorch engines run instead."""
    if _kernels is None:
        return "PyTorch (C kernels not built)"
    return "C kernels (CPU), PyTorch on other devices" if enabled else "PyTorch (C kernels disabled)"


def usable(*tensors: Tensor) -> bool:
    """True when the C kernels can run on these tensors (CPU; floating ones float32/float64)."""
    return available() and all(
        t.device.type == "cpu" and (not t.is_floating_point() or t.dtype in _CODES) for t in tensors
    )


def _labels(labels: Tensor | None) -> tuple[Tensor | None, int]:
    if labels is None:
        return None, 0
    labels = labels.detach().to(torch.int64).contiguous()
    return labels, labels.data_ptr()


def greedy_keep(boxes: Tensor, threshold: float, labels: Tensor | None = None) -> Tensor:
    """Keep mask (``Tensor[N]`` bool) of greedy NMS over score-ranked ``boxes`` (``Tensor[N, 4]`` float32 or
    float64, CPU); boxes suppress only boxes of equal ``labels`` when given."""
    boxes = boxes.detach().contiguous()
    labels, labels_ptr = _labels(labels)
    keep = torch.empty(boxes.shape[0], dtype=torch.uint8)
    num, code = boxes.shape[0], _CODES[boxes.dtype]
    _kernels.nms(code, boxes.data_ptr(), num, labels_ptr, threshold, keep.data_ptr())
    del labels  # kept alive until the kernel returned
    return keep.bool()


def nms_indices(boxes: Tensor, scores: Tensor, threshold: float, labels: Tensor | None = None) -> Tensor:
    """Greedy NMS over unranked ``boxes`` (``Tensor[N, 4]`` float32/float64, CPU) ranked by ``scores``
    (``Tensor[N]`` float32/float64; decreasing, lower index first on ties): kept indices (``Tensor[K]``
    int64) in rank order. The ranking, gathers and selection all happen in C (one call)."""
    boxes, scores = boxes.detach().contiguous(), scores.detach().contiguous()
    labels, labels_ptr = _labels(labels)
    num = boxes.shape[0]
    out = torch.empty(num, dtype=torch.int64)
    count = _kernels.nms_scored(
        _CODES[boxes.dtype], boxes.data_ptr(), _CODES[scores.dtype], scores.data_ptr(), num, labels_ptr,
        threshold, out.data_ptr(),
    )  # fmt: skip
    del labels
    return out[:count]


def soft_nms_loop(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor | None,
    gaussian: bool,
    sigma: float,
    iou_threshold: float,
    score_threshold: float,
) -> tuple[Tensor, Tensor]:
    """The Soft-NMS loop over ``boxes`` (``Tensor[N, 4]``) and ``scores`` (``Tensor[N]``, same float dtype,
    CPU): selected indices in selection order and their scores at selection."""
    boxes, scores = boxes.detach().contiguous(), scores.detach().contiguous()
    labels, labels_ptr = _labels(labels)
    num = boxes.shape[0]
    ids = torch.empty(num, dtype=torch.int64)
    chosen_scores = torch.empty(num, dtype=scores.dtype)
    count = _kernels.soft_nms(
        _CODES[boxes.dtype], boxes.data_ptr(), scores.data_ptr(), num, labels_ptr, gaussian, sigma,
        iou_threshold, score_threshold, ids.data_ptr(), chosen_scores.data_ptr(),
    )  # fmt: skip
    del labels
    return ids[:count], chosen_scores[:count]
