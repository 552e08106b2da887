"""Derived bounds for comparing two RoI Align evaluations, and the bin precondition of RoI Pool.

RoI Align (ours, torchvision's C++ kernel, the loop reference of test_ops_roi.py) samples the bilinear
interpolant ``g`` of a feature plane at positions that each implementation computes with its own
operation order:

* ours:        ``start + b·bin + (p + 0.5)·(bin / grid)``
* torchvision: ``(start + b·bin) + ((p + 0.5)·bin) / grid``
* the loop:    ``(start + (b·size) / bins) + (((p + 0.5)·size) / bins) / grid``

with ``start = x1·scale − offset``, ``size = (x2·scale − offset) − start`` (at least 1 unless aligned) and
``bin = size / bins`` computed alike everywhere, so the grid ``ceil(size / bins)`` is the same everywhere.
These are ``+ − × /`` only: the test recomputes ours and the loop's positions exactly (the float64 value of
the same operations); torchvision's are within their running error bound (tests/running_error.py) of
that, should its compiler fuse a multiply-add. Then, per sample:

* ``g`` is Lipschitz in the position with constant ``L`` = the largest difference of two neighbouring
  cells along that axis (clamping at the borders only flattens it), as long as both positions lie on the
  same side of the two jumps at ``−1`` and ``H`` (``W``), where a sample starts reading 0: asserted from
  the data (:func:`_position_gap`);
* evaluating ``g`` at a given position (weights ``(1 − l)``, ``l``, their products, four products with the
  cells, the division by the sample count) is a sum of ``N = 4·samples`` products of at most 5 rounded
  factors: within ``γ(N + 4)·M`` of exact, ``M = max|f|`` (the weights of a sample sum to 1).

Average mode: the bin is the mean over its samples, so the bound is the mean of the per-sample position
terms plus both evaluation errors; max mode: the maximum is 1-Lipschitz in the sup norm, so the largest
per-sample term. The input gradient: every tap's weight, a product of two hat functions of the position,
is 1-Lipschitz per axis, and a pixel is one of the four corners of a sample at most 4 times; so the
gradient of a pixel moves by at most ``4·(Δy + Δx)·Σ|g_bin|`` (over the bins of its image) plus the
rounding of sums of ``T`` tap products, ``γ(T + 4)·Σ|g_bin|``.
"""

from __future__ import annotations

import math

import torch

from running_error import Bounded, exact
from tolerances import gamma
from visionkit.ops.roi_pool import _bins

ORDERS = ("ours", "torchvision", "loop")


def _axis_positions(x1, x2, scale, bins, ratio, aligned, order) -> tuple[Bounded, int]:
    """Positions ``[bins, grid]`` of one RoI along one axis (float64) and the grid."""
    offset = 0.5 if aligned else 0.0
    corners = exact(torch.tensor([x1, x2], dtype=torch.float64), torch.float64) * scale - offset
    start, size = corners[0], corners[1] - corners[0]
    if not aligned:
        size = size.clamp(min=1.0)
    grid = ratio if ratio > 0 else max(math.ceil(float(size.value) / bins), 0)
    bin_index = exact(
        torch.arange(bins, dtype=torch.float64)[:, None].expand(bins, max(grid, 1)), torch.float64
    )
    point = exact(
        torch.arange(max(grid, 1), dtype=torch.float64)[None, :].expand(bins, max(grid, 1)), torch.float64
    )
    if order in ("ours", "exact"):  # "exact": the exact positions, within ours' running bound of its value
        bin_size = size / bins
        position = start + bin_index * bin_size + (point + 0.5) * (bin_size / max(grid, 1))
    elif order == "torchvision":
        bin_size = size / bins
        position = (start + bin_index * bin_size) + ((point + 0.5) * bin_size) / max(grid, 1)
    else:
        position = (start + (bin_index * size) / bins) + (((point + 0.5) * size) / bins) / max(grid, 1)
    return position, grid


def _position_gap(first: tuple[Bounded, str], second: tuple[Bounded, str], limit: int) -> torch.Tensor:
    """``|p̂_A − p̂_B|`` per sample, after asserting that both read (or skip) every sample alike.

    Positions use only ``+ − × /``, so ours and the loop's are exactly the float64 ``value`` of the same
    operations; torchvision's C++ could in principle fuse a multiply-add, so its position is only known to
    be within its running error bound of that value (0 when every step is exact); the order "exact"
    stands for the exact positions, within the running bound of ours."""
    uncertainty = [
        p.error if order in ("torchvision", "exact") else torch.zeros_like(p.value)
        for p, order in (first, second)
    ]
    values = [first[0].value, second[0].value]
    for edge in (-1.0, float(limit)):
        inside = []
        for value, slack in zip(values, uncertainty, strict=True):
            certain = ((value - edge).abs() > slack) | (slack == 0)
            assert bool(certain.all()), f"a sampling point may lie on either side of the edge {edge}"
            inside.append(value >= edge if edge < 0 else value <= edge)
        assert torch.equal(inside[0], inside[1]), f"the evaluations disagree about the edge {edge}"
    return (values[0] - values[1]).abs() + uncertainty[0] + uncertainty[1]


def _plane_constants(plane: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel of ``plane[C, H, W]``: Lipschitz constants along y and x, and ``max|f|``."""
    plane = plane.detach().double()
    zero = torch.zeros(plane.shape[0], dtype=torch.float64)
    along_y = plane.diff(dim=1).abs().amax(dim=(1, 2)) if plane.shape[1] > 1 else zero
    along_x = plane.diff(dim=2).abs().amax(dim=(1, 2)) if plane.shape[2] > 1 else zero
    return along_y, along_x, plane.abs().amax(dim=(1, 2))


def roi_align_bounds(features, rois, output_size, scale, ratio, aligned, mode="avg", orders=("ours", "loop")):
    """Forward bound ``[K, C, PH, PW]`` between the two ``orders``, and per image the largest position gap
    ``Δy + Δx``, the number of taps and the RoIs (for :func:`roi_align_grad_bound`)."""
    out_h, out_w = output_size
    height, width = features.shape[-2:]
    bound = torch.zeros(len(rois), features.shape[1], out_h, out_w, dtype=torch.float64)
    per_image = {}
    for k, (batch, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        along_y, along_x, largest = _plane_constants(features[int(batch)])
        ys = [_axis_positions(y1, y2, scale, out_h, ratio, aligned, order) for order in orders]
        xs = [_axis_positions(x1, x2, scale, out_w, ratio, aligned, order) for order in orders]
        grid_y, grid_x = ys[0][1], xs[0][1]
        if grid_y <= 0 or grid_x <= 0:
            continue  # no samples: both give 0
        gap_y = _position_gap((ys[0][0], orders[0]), (ys[1][0], orders[1]), height)  # [PH, Gy]
        gap_x = _position_gap((xs[0][0], orders[0]), (xs[1][0], orders[1]), width)  # [PW, Gx]
        terms = 4 * grid_y * grid_x
        if mode == "avg":
            moved = along_y[:, None, None] * gap_y.mean(1)[None, :, None] + along_x[
                :, None, None
            ] * gap_x.mean(1)
            rounding = 2 * gamma(terms + 4, torch.float64) * largest
        else:
            moved = along_y[:, None, None] * gap_y.amax(1)[None, :, None] + along_x[
                :, None, None
            ] * gap_x.amax(1)
            rounding = 2 * gamma(8, torch.float64) * largest
        bound[k] = moved + rounding[:, None, None]
        image = per_image.setdefault(int(batch), {"gap": 0.0, "taps": 0, "rois": []})
        image["gap"] = max(image["gap"], float(gap_y.max()) + float(gap_x.max()))
        image["taps"] += terms * out_h * out_w
        image["rois"].append(k)
    return bound, per_image


def roi_align_grad_bound(features, per_image, grad_output) -> torch.Tensor:
    """Bound ``[N, C, H, W]`` between the input gradients of two average-mode evaluations for the output
    gradient ``grad_output`` (see the module docstring)."""
    bound = torch.zeros(features.shape, dtype=torch.float64)
    for batch, image in per_image.items():
        total = grad_output[image["rois"]].double().abs().sum(dim=(0, 2, 3))  # Σ|g_bin| per channel
        total = total * (1 + gamma(grad_output[0].numel() * len(image["rois"]), torch.float64))
        coefficient = 4 * image["gap"] + 2 * gamma(image["taps"] + 4, torch.float64)
        bound[batch] = (coefficient * total)[:, None, None]
    return bound


def assert_same_pool_bins(
    rois: torch.Tensor, reference_rois: torch.Tensor, scale, output_size, height, width
):
    """RoI Pool's bins (``round(x·scale)``, ``floor(p·size/P)``, ``ceil((p + 1)·size/P)``) computed with the
    library's IEEE operations from ``rois`` in their dtype and from ``reference_rois`` in float64 (the
    arithmetic of the loop reference and of torchvision's kernel) agree. These operations are correctly
    rounded, so this holds on every CPU; then both pool the same cells, and as rounding to float32 is
    monotone, the float32 maximum of a bin is its rounded float64 maximum."""
    for axis, (bins, limit) in enumerate(((output_size[1], width), (output_size[0], height))):
        ours = _bins(rois, scale, bins, axis, limit)
        reference = _bins(reference_rois.double(), scale, bins, axis, limit)
        for a, b in zip(ours, reference, strict=True):
            assert torch.equal(a, b), "the bins of the float32 RoIs differ from the float64 ones"
