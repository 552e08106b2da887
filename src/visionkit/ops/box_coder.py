"""Bounding-box regression targets ``(tx, ty, tw, th)`` (R-CNN parameterisation, handbook §10).

For a reference box ``P`` (anchor or proposal; centre ``px, py``, size ``pw, ph``) and a ground-truth
box ``G`` (``gx, gy, gw, gh``), with per-coordinate weights ``(wx, wy, ww, wh)``:

    tx = wx * (gx - px) / pw        ty = wy * (gy - py) / ph
    tw = ww * log(gw / pw)          th = wh * log(gh / ph)

Girshick et al., 2014 (R-CNN, appendix C); Ren et al., 2015 (Faster R-CNN, eq. 2). Decoding inverts it and
clamps ``tw / ww`` and ``th / wh`` at ``bbox_xform_clip = log(1000 / 16)`` before ``exp`` so that no delta
can overflow (a box may grow at most 62.5×). Width is ``x2 - x1`` (no "+1"), as in torchvision and
detectron2, whose ``BoxCoder`` gives the same numbers.

Dtypes (as in :mod:`visionkit.ops.boxes`): float64 inputs are computed and returned in float64; float32,
float16, bfloat16 and integer inputs are computed and returned in float32 (pixel coordinates above 2048
are not representable in float16). ``encode_boxes`` takes two box tensors, which must share dtype and
device (a ``ValueError`` names both). ``decode_boxes`` accepts deltas of another floating dtype than its
boxes (a head under autocast emits float16 deltas for float32 anchors) and returns float64 if either is
float64, float32 otherwise; different devices are an error naming both.
All boxes are ``xyxy`` in absolute pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionkit.ops._validate import check_boxes, check_same_device, check_same_dtype

__all__ = ["DEFAULT_BBOX_XFORM_CLIP", "BoxCoder", "decode_boxes", "encode_boxes"]

DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    if len(weights) != 4:
        raise ValueError(f"weights must have 4 entries (wx, wy, ww, wh), got {tuple(weights)!r}")
    for index, value in enumerate(weights):
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"weights[{index}] must be a positive finite number, got {value!r}")
    return tuple(float(w) for w in weights)  # type: ignore[return-value]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (also for half-precision and integer inputs)."""
    return torch.float64 if any(tensor.dtype == torch.float64 for tensor in tensors) else torch.float32


def _centres_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def _check_positive_size(widths: Tensor, heights: Tensor, name: str) -> None:
    bad = ~((widths > 0) & (heights > 0) & torch.isfinite(widths) & torch.isfinite(heights))
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}[{index}] must have positive finite width and height to be encoded, got width "
            f"{float(widths[index])} and height {float(heights[index])}"
        )


def encode_boxes(
    reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Regression targets that move each proposal onto its reference (ground-truth) box.

    Args:
        reference_boxes: ``Tensor[N, 4]`` xyxy ground-truth boxes ``G`` (the argument order of torchvision).
        proposals: ``Tensor[N, 4]`` xyxy anchors / proposals ``P``, paired row by row with the references.
        weights: ``(wx, wy, ww, wh)``; Faster R-CNN uses ``(1, 1, 1, 1)`` in the RPN and
            ``(10, 10, 5, 5)`` in the box head.

    Returns:
        ``Tensor[N, 4]`` deltas ``(tx, ty, tw, th)``.

    Raises:
        ValueError: a box with zero, negative or non-finite width or height (its index is named) — its
            ``log`` would be ``-inf``/NaN; wrong shapes; the two tensors on different devices.

    Example:
        >>> encode_boxes(torch.tensor([[0.0, 0.0, 20.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
        tensor([[0.5000, 0.0000, 0.6931, 0.0000]])
    """
    check_boxes(reference_boxes, "reference_boxes")
    check_boxes(proposals, "proposals")
    check_same_device(("reference_boxes", reference_boxes), ("proposals", proposals))
    if reference_boxes.shape[0] != proposals.shape[0]:
        raise ValueError(
            f"reference_boxes and proposals must pair row by row, got {reference_boxes.shape[0]} and "
            f"{proposals.shape[0]} rows"
        )
    wx, wy, ww, wh = _check_weights(weights)
    check_same_dtype(("reference_boxes", reference_boxes), ("proposals", proposals))
    compute = _compute_dtype(reference_boxes, proposals)
    px, py, pw, ph = _centres_and_sizes(proposals.to(compute))
    gx, gy, gw, gh = _centres_and_sizes(reference_boxes.to(compute))
    _check_positive_size(pw, ph, "proposals")
    _check_positive_size(gw, gh, "reference_boxes")
    deltas = torch.stack(
        (wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)), dim=1
    )
    return deltas


def decode_boxes(
    deltas: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
) -> Tensor:
    """Apply regression deltas to reference boxes (inverse of :func:`encode_boxes`).

    Args:
        deltas: ``Tensor[N, 4 * C]``: ``(tx, ty, tw, th)`` for ``C >= 1`` classes (class-specific regression
            as in the Fast R-CNN box head; ``C = 1`` for the RPN).
        boxes: ``Tensor[N, 4]`` xyxy anchors / proposals.
        weights: ``(wx, wy, ww, wh)``, the ones used for encoding.
        bbox_xform_clip: upper clamp of ``tw / ww`` and ``th / wh`` before ``exp``; the default
            ``log(1000 / 16)`` keeps every output finite for finite deltas.

    Returns:
        ``Tensor[N, 4 * C]`` xyxy boxes, class ``c`` in columns ``4c .. 4c + 3``. A zero-size reference box
        decodes to a zero-size box (defined, no NaN).

    Example:
        >>> deltas = torch.tensor([[0.5, 0.0, math.log(2.0), 0.0]])
        >>> decode_boxes(deltas, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
        tensor([[ 0.,  0., 20., 10.]])
    """
    if (
        not isinstance(deltas, Tensor)
        or deltas.dim() != 2
        or deltas.shape[1] % 4 != 0
        or deltas.shape[1] == 0
    ):
        shape = list(deltas.shape) if isinstance(deltas, Tensor) else type(deltas).__name__
        raise ValueError(f"deltas must have shape [N, 4 * num_classes], got {shape}")
    check_boxes(boxes)
    check_same_device(("deltas", deltas), ("boxes", boxes))
    if deltas.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"deltas and boxes must pair row by row, got {deltas.shape[0]} and {boxes.shape[0]} rows"
        )
    if not math.isfinite(bbox_xform_clip):
        raise ValueError(f"bbox_xform_clip must be finite, got {bbox_xform_clip!r}")
    wx, wy, ww, wh = _check_weights(weights)
    compute = _compute_dtype(deltas, boxes)
    ctr_x, ctr_y, widths, heights = (v[:, None] for v in _centres_and_sizes(boxes.to(compute)))
    deltas = deltas.to(compute)
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    # Clamp before exp: exp(log(1000/16)) = 62.5, so a box can grow at most 62.5x and never overflows.
    dw = (deltas[:, 2::4] / ww).clamp(max=bbox_xform_clip)
    dh = (deltas[:, 3::4] / wh).clamp(max=bbox_xform_clip)
    pred_ctr_x, pred_ctr_y = dx * widths + ctr_x, dy * heights + ctr_y
    half_w, half_h = 0.5 * torch.exp(dw) * widths, 0.5 * torch.exp(dh) * heights
    decoded = torch.stack(
        (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2
    )
    return decoded.flatten(1)


class BoxCoder(nn.Module):
    """Encode / decode ``(tx, ty, tw, th)`` with fixed weights (thin wrapper of the two functions).

    Args:
        weights: ``(wx, wy, ww, wh)``.
        bbox_xform_clip: clamp of the log-size deltas before ``exp`` (default ``log(1000 / 16)``).

    Example:
        >>> coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> targets = coder.encode(torch.tensor([[1.0, 2.0, 9.0, 12.0]]), anchors)
        >>> coder.decode(targets, anchors)
        tensor([[ 1.,  2.,  9., 12.]])
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
    ) -> None:
        super().__init__()
        self.weights = _check_weights(weights)
        if not math.isfinite(bbox_xform_clip):
            raise ValueError(f"bbox_xform_clip must be finite, got {bbox_xform_clip!r}")
        self.bbox_xform_clip = float(bbox_xform_clip)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f}"

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """``Tensor[N, 4]`` targets for paired references and proposals; see :func:`encode_boxes`."""
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """``Tensor[N, 4C]`` boxes from ``Tensor[N, 4C]`` deltas; see :func:`decode_boxes`."""
        return decode_boxes(deltas, boxes, self.weights, self.bbox_xform_clip)

    def forward(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Same as :meth:`decode` (the inference direction)."""
        return self.decode(deltas, boxes)
