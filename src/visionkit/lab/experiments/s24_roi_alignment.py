"""§24 RoI Pooling vs RoI Align: where each bin really looks, in pixels.

A feature map whose value is its own x (or y) coordinate tells where an op samples: ``roi_pool``'s max over
a bin of ``x`` is the bin's last covered column, of ``-x`` its first; ``roi_align`` (average, half-pixel
``aligned=True``) returns the mean sampled x, exact because bilinear interpolation reproduces a linear
ramp. Comparing each bin's centre with the exact one gives the misalignment in image pixels, for the
handbook's example (800×800 image, stride 32, a 665×665 proposal) and for random small and large RoIs.

RoI Pool as implemented by Fast R-CNN, Caffe and torchvision (and :func:`visionkit.ops.roi_pool`, equal to
torchvision) rounds the RoI to the nearest cells (inclusive: 665/32 = 20.78 → 22 cells) and splits them
into bins with floor/ceil, so it covers 22×22 cells — not the handbook's 14×14. The AP comparison on a
trained detector is the part left for the detection task module.
"""

from __future__ import annotations

import statistics

import torch
from torch import Tensor

from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.ops import roi_align, roi_pool

QUANTIZED = Claim(
    "§24",
    "经过两次量化，即将浮点数取整，原本在特征图上映射的20*20 大小的region proposal，偏差成大小为14*14的",
    "after the two quantizations the 20×20-cell proposal ends up covering only 14×14 cells",
    kind="fact",
)
SMALL_OBJECTS = Claim(
    "§24",
    "如果是图片中有较多小目标物体需要检测，则优先选择RoiAlign，更精准些",
    "with many small objects prefer RoI Align: it is more precise (for large objects the two differ little)",
)
STRIDE, BINS = 32, 7


def _ramp(size: int, axis: int) -> Tensor:
    line = torch.arange(size, dtype=torch.float64)
    grid = line.view(1, -1) if axis == 0 else line.view(-1, 1)
    return grid.expand(size, size).reshape(1, 1, size, size).contiguous()


def bin_centres(rois: Tensor, size: int, stride: int) -> dict[str, Tensor]:
    """Per RoI and bin, the x centre (image pixels) of what ``roi_pool`` and ``roi_align`` see, the exact
    centre, and RoI Pool's covered extent. ``rois``: ``[K, 4]`` xyxy pixels; returns ``[K, BINS]`` tensors."""
    boxes = torch.cat([torch.zeros(len(rois), 1, dtype=rois.dtype), rois], dim=1)
    x = _ramp(size, 0)
    last = roi_pool(x, boxes, BINS, 1 / stride)[:, 0, 0, :]  # last covered column of each bin
    first = -roi_pool(-x, boxes, BINS, 1 / stride)[:, 0, 0, :]
    sampled = roi_align(x, boxes, BINS, 1 / stride, sampling_ratio=2, aligned=True)[:, 0, 0, :]
    width = (rois[:, 2] - rois[:, 0]).unsqueeze(1)
    exact = rois[:, :1] + (torch.arange(BINS, dtype=rois.dtype) + 0.5) * width / BINS
    return {
        "pool": (first + last + 1) / 2 * stride,
        "align": (sampled + 0.5) * stride,
        "exact": exact,
        "pool_first": first[:, 0] * stride,
        "pool_last": (last[:, -1] + 1) * stride,
    }


def judge_roi(covered_cells: float, small: dict[str, float], large: dict[str, float]) -> list[Verdict]:
    """``covered_cells``: RoI Pool's coverage of the handbook's proposal (cells per side); ``small`` /
    ``large``: mean |bin-centre error| relative to the RoI width for ``pool`` and ``align``. "More
    precise" is read as RoI Align's error ≤ 1/10 of RoI Pool's on small RoIs, and RoI Pool's relative
    error on small RoIs ≥ 3× that on large ones."""
    return [
        judge(
            QUANTIZED,
            "cells covered per side == 14",
            f"{covered_cells:g} cells",
            holds=covered_cells == 14,
            correction=f"RoI Pool (Fast R-CNN/Caffe/torchvision rounding) covers "
            f"{covered_cells:g}×{covered_cells:g} cells "
            f"({covered_cells * STRIDE:g} px for a 665 px proposal)",
        ),
        judge(
            SMALL_OBJECTS,
            "small RoIs: align error ≤ pool error / 10, and pool's relative error on small "
            "RoIs ≥ 3× on large",
            f"small: pool {small['pool']:.3f}, align {small['align']:.2e}; large: pool "
            f"{large['pool']:.3f} (fraction of RoI width)",
            holds=small["align"] * 10 <= small["pool"] and small["pool"] >= 3 * large["pool"],
        ),
    ]


def _random_rois(count: int, low: float, high: float, size: int, generator: torch.Generator) -> Tensor:
    sides = low + (high - low) * torch.rand(count, 1, generator=generator, dtype=torch.float64)
    corners = torch.rand(count, 2, generator=generator, dtype=torch.float64) * (size * STRIDE - sides)
    return torch.cat([corners, corners + sides], dim=1)


def _relative_errors(centres: dict[str, Tensor], rois: Tensor) -> dict[str, float]:
    width = (rois[:, 2] - rois[:, 0]).unsqueeze(1)
    return {
        name: float(((centres[name] - centres["exact"]).abs() / width).mean()) for name in ("pool", "align")
    }


@register("roi-pool-vs-align", "§24", "RoI Pool vs RoI Align: misalignment in pixels", errata=True)
def roi_alignment(ctx: LabContext) -> Findings:
    example = torch.tensor([[0.0, 0.0, 665.0, 665.0]], dtype=torch.float64)
    centres = bin_centres(example, 25, STRIDE)
    covered = float((centres["pool_last"] - centres["pool_first"])[0]) / STRIDE
    count = ctx.pick(64, 1024)
    generator = ctx.generator()
    small_rois = _random_rois(count, 32, 96, 40, generator)
    large_rois = _random_rois(count, 320, 640, 40, generator)
    small = _relative_errors(bin_centres(small_rois, 40, STRIDE), small_rois)
    large = _relative_errors(bin_centres(large_rois, 40, STRIDE), large_rois)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 2.6))
    for name, marker in (("exact", "|"), ("pool", "o"), ("align", "x")):
        axis.scatter(centres[name][0].tolist(), [name] * BINS, marker=marker, s=60)
    axis.axvspan(0, 665, color="#ddd", zorder=0, label="proposal 0…665 px")
    axis.axvline(float(centres["pool_last"][0]), color="r", linestyle="--", label="RoI Pool coverage ends")
    axis.set_xlabel("x (image pixels)")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.set_title("bin centres, 665 px proposal, stride 32, 7 bins")
    figure.tight_layout()
    ctx.figure(figure, "bin_centres", "Where the 7 bins of each op look on the handbook's 665×665 proposal.")
    example_rows = [
        {
            "bin": b,
            "exact px": centres["exact"][0, b],
            "RoI Pool px": centres["pool"][0, b],
            "RoI Align px": centres["align"][0, b],
        }
        for b in range(BINS)
    ]
    pixel_error = statistics.mean((centres["pool"][0] - centres["exact"][0]).abs().tolist())
    size_rows = [
        {"RoIs": f"{count} small (32–96 px)", **small},
        {"RoIs": f"{count} large (320–640 px)", **large},
    ]
    return Findings(
        verdicts=judge_roi(covered, small, large),
        tables=[
            Table.of("Bin centres on the handbook's proposal (x, image pixels)", example_rows),
            Table.of("Mean |bin-centre error| / RoI width, stride 32", size_rows),
        ],
        numbers={
            "covered_cells": covered,
            "pool_mean_error_px": pixel_error,
            "small_pool": small["pool"],
            "small_align": small["align"],
            "large_pool": large["pool"],
        },
        notes=[
            f"RoI Pool's bins on the example are off by {pixel_error:.1f} px on average; RoI Align's by "
            f"{statistics.mean((centres['align'][0] - centres['exact'][0]).abs().tolist()):.2e} px."
        ],
    )
