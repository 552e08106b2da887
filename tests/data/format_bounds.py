"""Derived bounds of annotation round trips through COCO JSON, VOC XML and YOLO txt (data format tests).

Records hold float64 xyxy pixels; each bound below is per coordinate, from the writer's and reader's float64
operations (tests/tolerances.py: one rounding ``u·|result|`` per ``+ − × /``), the decimal formatting
(Python's ``f"{v:.6f}"`` is correctly rounded: within 5e-7 of ``v``) and the parsing (correctly rounded:
``u·|s|``). Clipping to the image only moves a coordinate towards its (in-image) original.
"""

from __future__ import annotations

import torch

from tolerances import gamma, unit_roundoff

U = unit_roundoff(torch.float64)
HALF_DECIMAL = 5e-7  # half a unit of the 6th decimal


def coco_round_trip(boxes: torch.Tensor) -> torch.Tensor:
    """``[x1, y1, x2 − x1, y2 − y1]`` written exactly (JSON repr), read back as ``x + w``:
    ``x1, y1`` exact, ``x2' = fl(x1 + fl(x2 − x1))`` within ``u(|x2 − x1|(1 + u) + |x2|)``; exact for
    integers (below 2⁵³ every step is exact)."""
    boxes = boxes.double()
    bound = torch.zeros_like(boxes)
    width = (boxes[:, 2:] - boxes[:, :2]).abs()
    bound[:, 2:] = U * (width * (1 + U) + boxes[:, 2:].abs())
    integral = (boxes == boxes.round()).all(1, keepdim=True)
    return torch.where(integral, 0.0, bound)


def voc_round_trip(boxes: torch.Tensor) -> torch.Tensor:
    """VOC writes ``x1 + 1, y1 + 1, x2, y2`` (1-based), integers as integers and others with 6 decimals,
    and reads ``xmin − 1``...: ``HALF_DECIMAL`` from the decimals plus ``u`` for the ``+ 1``, the parse and
    the ``− 1`` (``3u(|x| + 1)`` covers them); integers are exact."""
    boxes = boxes.double()
    bound = HALF_DECIMAL + 3 * U * (boxes.abs() + 1 + HALF_DECIMAL)
    return torch.where(boxes == boxes.round(), 0.0, bound)


def yolo_round_trip(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """YOLO writes ``c = fl(fl(x1 + x2)/2/W)`` and ``w = fl(fl(x2 − x1)/W)`` (each within ``γ₂`` of the
    exact value) with 6 decimals (``HALF_DECIMAL``) and reads them back (``u``): each value within
    ``e = γ₂·v + HALF_DECIMAL + u(v + γ₂v + HALF_DECIMAL)`` of the exact normalized one; the reader's
    ``fl(fl(c ∓ w/2)·W)`` is then within ``W(e_c + e_w/2) + γ₂(|x| + W(e_c + e_w/2))`` of the original."""
    return _normalized_round_trip(boxes, width, height, HALF_DECIMAL)


def yolo_reread_bound(boxes: torch.Tensor, width: float, height: float, value_error: float) -> torch.Tensor:
    """Pixel bound of :func:`yolo_round_trip`'s reader when each normalized value in the file is within
    ``value_error`` (instead of the writer's own ``HALF_DECIMAL``) plus the writer's float rounding of the
    exact normalized value."""
    return _normalized_round_trip(boxes, width, height, value_error)


def _normalized_round_trip(boxes: torch.Tensor, width: float, height: float, decimal: float) -> torch.Tensor:
    boxes = boxes.double()
    side = torch.tensor([width, height, width, height], dtype=torch.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]).abs() / 2 / side[:2]
    size = (boxes[:, 2:] - boxes[:, :2]).abs() / side[:2]

    def value_error(v: torch.Tensor) -> torch.Tensor:
        g2 = gamma(2, torch.float64)
        return g2 * v + decimal + U * (v + g2 * v + decimal)

    shift = side[:2] * (value_error(centre) + value_error(size) / 2)  # (N, 2): x and y
    shift = torch.cat([shift, shift], 1)
    return shift + gamma(2, torch.float64) * (boxes.abs() + shift)


def float32_rounding(values: torch.Tensor) -> torch.Tensor:
    """Half an ulp of float32 at ``|v|``: storing a float64 coordinate in a float32 target."""
    return unit_roundoff(torch.float32) * values.double().abs()
