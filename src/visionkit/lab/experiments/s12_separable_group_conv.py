"""§12 depthwise separable convolution and §31 group convolution: cost in MACs and in CPU time.

MACs come from :func:`visionkit.analysis.summary`; CPU time is the median of repeated forward passes
(torch's kernels, one process, both sides interleaved). The handbook's cost ratio is about compute; the
time ratio shows how much of it a CPU turns into speed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from visionkit.analysis import summary
from visionkit.lab.experiments._common import median_seconds, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

RATIO = Claim(
    "§12",
    r"\frac{3 \times 3+256}{3 \times 3 \times 256}=0.1150",
    "for a 28×28×192 → 28×28×256 3×3 layer, separable/standard compute = (9 + 256)/(9·256) = 0.1150",
    kind="fact",
)
NINTH = Claim(
    "§12",
    "深度可分离卷积的计算量缩减为传统卷积的 1/9 左右",
    "a depthwise separable convolution needs about 1/9 of the compute of a standard one",
)
GROUPS = Claim(
    "§31",
    "Group convolution的实质就是将convolution分为$g$个独立的组，分别计算",
    "a group convolution splits the convolution into g independent groups computed separately",
    kind="fact",
)


def judge_separable(mac_ratio: float, time_ratio: float) -> list[Verdict]:
    """The MAC ratio must print as 0.1150; "about 1/9" is read as within 10 % of 1/9 (0.1111); the same
    claim read as CPU speed: the time ratio at most twice 1/9."""
    return [
        judge(
            RATIO,
            "measured MAC ratio rounds to 0.1150",
            f"{mac_ratio:.4f}",
            holds=round(mac_ratio, 4) == 0.1150,
            correction=f"{mac_ratio:.4f}",
        ),
        judge(NINTH, "MAC ratio within 10 % of 1/9", mac_ratio, holds=abs(mac_ratio * 9 - 1) <= 0.10),
        judge(
            NINTH,
            "CPU time ratio ≤ 2/9 (the compute saving shows up as speed)",
            time_ratio,
            holds=time_ratio <= 2 / 9,
        ),
    ]


def judge_groups(params_ratios: dict[int, float], bound_fraction: float) -> Verdict:
    """Params of a g-group conv are 1/g of the dense one, and the grouped output equals g separate convs
    on the channel slices: ``bound_fraction`` = max |difference| / rounding bound must be ≤ 1."""
    exact = all(math.isclose(ratio, 1 / g, rel_tol=0, abs_tol=1e-15) for g, ratio in params_ratios.items())
    return judge(
        GROUPS,
        "params ratio == 1/g for every g, and grouped == separate convs (within rounding)",
        f"ratios {', '.join(f'g={g}: {r:.4g}' for g, r in params_ratios.items())}; "
        f"max |difference| = {bound_fraction:.3g} × the rounding bound",
        holds=exact and bound_fraction <= 1.0,
    )


def _grouped_equals_separate(groups: int, generator: torch.Generator) -> tuple[float, float]:
    """Max |grouped − separate| in float64 and its bound γ_n·Σ|w||x| (n = terms per output)."""
    x = torch.randn(2, 16, 9, 9, generator=generator, dtype=torch.float64)
    weight = torch.randn(32, 16 // groups, 3, 3, generator=generator, dtype=torch.float64)
    grouped = nn.functional.conv2d(x, weight, padding=1, groups=groups)
    parts = [
        nn.functional.conv2d(xs, ws, padding=1)
        for xs, ws in zip(x.chunk(groups, 1), weight.chunk(groups, 0), strict=True)
    ]
    separate = torch.cat(parts, dim=1)
    magnitude = nn.functional.conv2d(x.abs(), weight.abs(), padding=1, groups=groups)
    n = weight[0].numel()
    gamma = n * 2**-53 / (1 - n * 2**-53)  # Higham's γ_n: a sum of n products in any order, both sides
    bound = float((2 * gamma * magnitude).max())
    return float((grouped - separate).abs().max()), bound


@register(
    "separable-conv-cost",
    ("§12", "§31"),
    "Depthwise separable and group convolution: MACs and CPU time",
    errata=True,
)
def separable_cost(ctx: LabContext) -> Findings:
    standard = nn.Conv2d(192, 256, 3, padding=1, bias=False)
    separable = nn.Sequential(
        nn.Conv2d(192, 192, 3, padding=1, groups=192, bias=False), nn.Conv2d(192, 256, 1, bias=False)
    )
    macs = {
        name: summary(m, (1, 192, 28, 28)).total_macs
        for name, m in (("standard", standard), ("separable", separable))
    }
    x = torch.randn(ctx.pick(2, 8), 192, 28, 28, generator=ctx.generator())
    repeats = ctx.pick(3, 15)
    with torch.no_grad():
        times = {
            name: median_seconds(lambda m=m: m(x), repeats)
            for name, m in (("standard", standard), ("separable", separable))
        }
    mac_ratio, time_ratio = macs["separable"] / macs["standard"], times["separable"] / times["standard"]
    groups = (1, 2, 4, 8)
    dense = sum(p.numel() for p in nn.Conv2d(64, 128, 3, bias=False).parameters())
    params_ratios = {
        g: sum(p.numel() for p in nn.Conv2d(64, 128, 3, groups=g, bias=False).parameters()) / dense
        for g in groups
    }
    checks = [_grouped_equals_separate(g, ctx.generator(g)) for g in (2, 4)]
    bound_fraction = max(difference / bound for difference, bound in checks)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(["MACs", "CPU time"], [mac_ratio, time_ratio], color=["#4878a8", "#d08040"])
    axis.axhline(1 / 9, color="k", linestyle="--", label="1/9")
    axis.set_ylabel("separable / standard")
    axis.legend()
    axis.set_title("28×28, 192 → 256 channels, 3×3")
    figure.tight_layout()
    ctx.figure(
        figure, "separable_ratio", "Depthwise separable over standard convolution: compute vs CPU time."
    )
    rows = [
        {"layer": name, "MACs": macs[name], "ms / forward": times[name] * 1e3, "batch": x.shape[0]}
        for name in macs
    ]
    group_rows = [{"groups g": g, "params / dense": params_ratios[g]} for g in groups]
    return Findings(
        verdicts=[*judge_separable(mac_ratio, time_ratio), judge_groups(params_ratios, bound_fraction)],
        tables=[
            Table.of("Standard vs depthwise separable 3×3 (28×28×192 → 256)", rows),
            Table.of("Group convolution, 64 → 128 channels, 3×3", group_rows),
        ],
        numbers={"mac_ratio": mac_ratio, "time_ratio": time_ratio},
        notes=[
            f"CPU times: median of {repeats} forward passes on {torch.get_num_threads()} thread(s); "
            "a shared machine makes them noisy, the MAC ratio is exact."
        ],
    )
