"""§19 what a CNN is — local connectivity and weight sharing plus pooling: parameters and translation
equivariance, measured.

Parameters of one 3×3, 1 → 16 layer on 28×28 inputs: convolution (local, shared), locally connected
(local, not shared: one kernel per output position) and fully connected. Equivariance: convolving a
circularly shifted input equals shifting the convolved output (float64, bound by rounding); max pooling
after it makes the response approximately invariant to shifts smaller than the window.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

ESSENCE = Claim("§19", "局部卷积+Pooling", "a CNN is local convolution plus pooling")
SIZE, CHANNELS, KERNEL = 28, 16, 3


def judge_cnn(
    params: dict[str, int], equivariance_error: float, bound: float, invariance: dict[str, float]
) -> list[Verdict]:
    """``params``: ``conv``, ``local`` (no sharing), ``dense``; equivariance error and its rounding bound;
    ``invariance``: fraction of max-pooled outputs unchanged by a 1-pixel shift, ``pooled`` vs ``raw``
    (convolution output without pooling)."""
    return [
        judge(
            ESSENCE,
            f"weight sharing divides the parameters by the {SIZE * SIZE} positions: conv × positions "
            "== locally connected, and local connectivity: locally connected < fully connected",
            f"conv {params['conv']:,}, local {params['local']:,}, dense {params['dense']:,}",
            holds=params["conv"] * SIZE * SIZE == params["local"] < params["dense"],
        ),
        judge(
            ESSENCE,
            "convolution is translation-equivariant: conv(shift x) == shift conv(x) within rounding",
            f"max |difference| {equivariance_error:.1e} (bound {bound:.1e})",
            holds=equivariance_error <= bound,
        ),
        judge(
            ESSENCE,
            "pooling adds invariance: a 1-pixel shift leaves more outputs unchanged after 2×2 "
            "max pooling than before",
            f"unchanged: pooled {invariance['pooled']:.3f}, raw {invariance['raw']:.3f}",
            holds=invariance["pooled"] > invariance["raw"],
        ),
    ]


@register("cnn-weight-sharing", "§19", "Weight sharing and translation equivariance of convolution")
def cnn_essence(ctx: LabContext) -> Findings:
    conv = nn.Conv2d(1, CHANNELS, KERNEL, padding=1, padding_mode="circular").double()
    positions = SIZE * SIZE
    params = {
        "conv": sum(p.numel() for p in conv.parameters()),
        "local": positions * CHANNELS * (KERNEL * KERNEL + 1),
        "dense": positions * positions * CHANNELS + positions * CHANNELS,
    }
    generator = ctx.generator()
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        x = torch.randn(ctx.pick(2, 16), 1, SIZE, SIZE, generator=generator, dtype=torch.float64)
        shift = (3, -5)
        left = conv(torch.roll(x, shift, dims=(2, 3)))
        right = torch.roll(conv(x), shift, dims=(2, 3))
        magnitude = nn.functional.conv2d(
            nn.functional.pad(x.abs(), (1, 1, 1, 1), mode="circular"), conv.weight.abs()
        ) + conv.bias.abs().view(1, -1, 1, 1)
        n = KERNEL * KERNEL + 1
        gamma = n * 2**-53 / (1 - n * 2**-53)  # γ_n for a sum of n terms in any order, on each side
        bound = float((2 * gamma * magnitude).max())
        error = float((left - right).abs().max())
        raw, moved = conv(x), conv(torch.roll(x, 1, dims=3))
        pooled, pooled_moved = nn.functional.max_pool2d(raw, 2), nn.functional.max_pool2d(moved, 2)
        invariance = {
            "raw": float((raw == moved).double().mean()),
            "pooled": float((pooled == pooled_moved).double().mean()),
        }
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(list(params), list(params.values()), color=["#4878a8", "#d08040", "#888"])
    axis.set_yscale("log")
    axis.set_ylabel("parameters")
    axis.set_title(f"{KERNEL}×{KERNEL}, 1 → {CHANNELS} channels on {SIZE}×{SIZE}")
    figure.tight_layout()
    ctx.figure(
        figure, "parameters", "Parameters: shared convolution vs locally connected vs fully connected."
    )
    rows = [{"layer": name, "parameters": value} for name, value in params.items()]
    return Findings(
        verdicts=judge_cnn(params, error, bound, invariance),
        tables=[
            Table.of("One layer, same input and output size", rows),
            Table.of("Outputs unchanged by a 1-pixel shift", [invariance]),
        ],
        numbers={"equivariance_error": error, **{f"unchanged_{k}": v for k, v in invariance.items()}},
    )
