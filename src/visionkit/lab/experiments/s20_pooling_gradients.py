"""§20 back-propagation through pooling: where :func:`visionkit.ops.max_pool2d` and
:func:`visionkit.ops.avg_pool2d` (explicit backward, equal to torch's) send the gradient.

An upstream gradient of random values goes back through 2×2/stride-2 pooling of a random map (with tied
maxima planted in some windows): max pooling must give each window's whole gradient to exactly one input
(the arg-max; on ties the first), mean pooling must give every input 1/n of it; both keep the sum.
Overlapping windows and zero padding are measured beside the handbook's case.
"""

from __future__ import annotations

import torch

from visionkit.lab.experiments._common import image_panels
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.ops import avg_pool2d, max_pool2d

MEAN = Claim(
    "§20",
    "把某个元素的梯度等分为n份分配给前一层，这样就保证池化前后的梯度（残差）之和保持不变",
    "mean pooling splits each gradient into n equal parts for the previous layer, so the gradient "
    "sum is unchanged",
    kind="fact",
)
MAX = Claim(
    "§20",
    "反向传播也就是把梯度直接传给前一层某一个像素，而其他像素不接受梯度，也就是为0",
    "max pooling passes the gradient to one pixel of the previous layer; the others get 0",
    kind="fact",
)


def _input_gradient(pool: object, x: torch.Tensor, upstream: torch.Tensor, **options: object) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    pool(x, **options).backward(upstream)  # type: ignore[operator]
    assert x.grad is not None
    return x.grad


def judge_pooling(mean: dict[str, float], maximum: dict[str, float]) -> list[Verdict]:
    """``mean``: ``share_error`` (max |grad − g/4|: exact, dividing by 4 is exact in binary), ``sum_error``
    (|Σ grad_in − Σ grad_out|) and ``sum_bound`` (its rounding bound); ``maximum``: ``receivers_min``/
    ``receivers_max`` (inputs with a non-zero gradient per window), ``value_error`` (|received − g|:
    exact, a copy), ``sum_error`` and ``sum_bound``."""
    return [
        judge(
            MEAN,
            "every input gets exactly g/4 and the sums agree within rounding",
            f"max share error {mean['share_error']:.1e}, sum error {mean['sum_error']:.1e} "
            f"(bound {mean['sum_bound']:.1e})",
            holds=mean["share_error"] == 0 and mean["sum_error"] <= mean["sum_bound"],
        ),
        judge(
            MAX,
            "exactly one input per window gets the whole g (ties included), others 0",
            f"receivers per window {maximum['receivers_min']:g}…{maximum['receivers_max']:g}, value error "
            f"{maximum['value_error']:.1e}, sum error {maximum['sum_error']:.1e}",
            holds=maximum["receivers_min"] == maximum["receivers_max"] == 1
            and maximum["value_error"] == 0
            and maximum["sum_error"] <= maximum["sum_bound"],
        ),
    ]


def _gamma(n: int) -> float:
    """Higham's γ_n = n·u / (1 − n·u), u = 2⁻⁵³: relative bound of a float64 sum of n terms in any order."""
    return n * 2**-53 / (1 - n * 2**-53)


def _sum_bound(grad: torch.Tensor, upstream: torch.Tensor) -> float:
    return _gamma(grad.numel()) * float(grad.abs().sum()) + _gamma(upstream.numel()) * float(
        upstream.abs().sum()
    )


def _sum_rows(x: torch.Tensor, generator: torch.Generator) -> list[dict[str, float]]:
    """Gradient sums through overlapping, padded and plain max / mean pooling of ``x``."""
    rows = []
    for name, pool, options in (
        ("mean 2×2 / 2", avg_pool2d, {"kernel_size": 2, "stride": 2}),
        ("mean 3×3 / 1 (overlapping)", avg_pool2d, {"kernel_size": 3, "stride": 1}),
        ("mean 3×3 / 1, zero padding 1", avg_pool2d, {"kernel_size": 3, "stride": 1, "padding": 1}),
        ("max 2×2 / 2", max_pool2d, {"kernel_size": 2, "stride": 2}),
        ("max 3×3 / 1 (overlapping)", max_pool2d, {"kernel_size": 3, "stride": 1}),
    ):
        g = torch.randn(pool(x, **options).shape, generator=generator, dtype=torch.float64)
        grad = _input_gradient(pool, x, g, **options)
        rows.append(
            {
                "pooling": name,
                "Σ upstream": float(g.sum()),
                "Σ input gradient": float(grad.sum()),
                "inputs with gradient": int((grad != 0).sum()),
                "inputs": x.numel(),
            }
        )
    return rows


@register("pooling-gradients", "§20", "Gradient routing through max and mean pooling", errata=True)
def pooling_gradients(ctx: LabContext) -> Findings:
    generator = ctx.generator()
    x = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    x[:, :, 0:2, 0:2] = 1.5  # a window of four tied maxima
    upstream = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    mean_grad = _input_gradient(avg_pool2d, x, upstream, kernel_size=2, stride=2)
    shares = upstream.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4
    mean = {
        "share_error": float((mean_grad - shares).abs().max()),
        "sum_error": float((mean_grad.sum() - upstream.sum()).abs()),
        "sum_bound": _sum_bound(mean_grad, upstream),
    }
    max_grad = _input_gradient(max_pool2d, x, upstream, kernel_size=2, stride=2)
    windows = max_grad.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 4, 4, 4)
    receivers = (windows != 0).sum(-1)
    maximum = {
        "receivers_min": float(receivers.min()),
        "receivers_max": float(receivers.max()),
        "value_error": float((windows.sum(-1) - upstream).abs().max()),
        "sum_error": float((max_grad.sum() - upstream.sum()).abs()),
        "sum_bound": _sum_bound(max_grad, upstream),
    }
    rows = _sum_rows(x, generator)
    panels = [
        (x[0, 0], "input (tied 2×2 top-left)"),
        (max_grad[0, 0], "max-pool gradient"),
        (mean_grad[0, 0], "mean-pool gradient"),
    ]
    ctx.figure(image_panels(panels), "routing", "Input gradients of 2×2/stride-2 pooling for one channel.")
    return Findings(
        verdicts=judge_pooling(mean, maximum),
        tables=[Table.of("Gradient sums (float64; padding takes a share of mean pooling's gradient)", rows)],
        numbers={**{f"mean_{k}": v for k, v in mean.items()}, **{f"max_{k}": v for k, v in maximum.items()}},
        notes=[
            "With zero padding (count_include_pad) part of each border window's gradient goes to the "
            "padding, so the input's sum is smaller: the handbook's sum rule holds without padding."
        ],
    )
