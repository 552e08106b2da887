"""§28 MobileNet: the width multiplier α and resolution multiplier ρ, in cost and in accuracy.

Costs are those of the real MobileNetV1 (``create_model("mobilenet_v1", width_multiplier=α)``) at
224·ρ pixels, counted by :func:`visionkit.analysis.summary`. The accuracy curve trains a small
MobileNet-style network of :class:`~visionkit.nn.blocks.DepthwiseSeparableConv` blocks (same α rule,
widths × α) on the digits at 16·ρ pixels with the engine's trainer: the full network at 224 px does not fit
the lab's CPU budget.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.analysis import summary
from visionkit.lab.experiments._common import digits_tensors, fit, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model
from visionkit.nn.blocks import ConvNormAct, DepthwiseSeparableConv

ALPHA = Claim(
    "§28",
    "模型大小近似下降到原来的$\\alpha^{2}$倍，计算量下降到原来的$\\alpha^{2}$倍",
    "with width multiplier α the model size and the compute fall to about α² of the original",
)
RHO = Claim(
    "§28",
    "模型大小不变，计算量下降到原来的$\\rho^{2}$倍",
    "with resolution multiplier ρ the model size is unchanged and the compute falls to ρ²",
)
STRIDE = Claim(
    "§28",
    "用 CONV/s2（步长2的卷积）代替 MaxPool+CONV：使得参数数量不变，计算量变为原来的 1/4 左右",
    "a stride-2 conv instead of conv + max-pool keeps the parameters and cuts compute to about 1/4",
    kind="fact",
)
ALPHAS = (1.0, 0.75, 0.5, 0.25)
RHOS = (1.0, 192 / 224, 160 / 224, 128 / 224)


def judge_mobilenet(
    alpha_rows: list[dict[str, float]], rho_rows: list[dict[str, float]], stride: dict[str, int]
) -> list[Verdict]:
    """``alpha_rows``: ``alpha``, ``params_ratio``, ``macs_ratio`` (to α = 1); ``rho_rows``: ``rho``,
    ``params_ratio``, ``macs_ratio``; "about" is read as within 25 % (ratio / α² in [0.8, 1.25]), ρ² within
    5 %; ``stride``: params and MACs of conv(s1) + max-pool and of conv(s2)."""

    def near(value: float, target: float, tolerance: float) -> bool:
        return 1 / (1 + tolerance) <= value / target <= 1 + tolerance

    def listing(rows: list[dict[str, float]], key: str, name: str) -> str:
        symbol = {"alpha": "α", "rho": "ρ"}[name]
        return "; ".join(f"{symbol}={r[name]:.3g}: {r[key] / r[name] ** 2:.2f}×{symbol}²" for r in rows)

    size_ok = all(near(r["params_ratio"], r["alpha"] ** 2, 0.25) for r in alpha_rows)
    compute_ok = all(near(r["macs_ratio"], r["alpha"] ** 2, 0.25) for r in alpha_rows)
    rho_params = all(r["params_ratio"] == 1.0 for r in rho_rows)
    rho_macs = all(near(r["macs_ratio"], r["rho"] ** 2, 0.05) for r in rho_rows)
    quarter = stride["params_s2"] == stride["params_pool"] and stride["macs_s2"] * 4 == stride["macs_pool"]
    return [
        judge(
            ALPHA,
            "params ratio within 25 % of α² for every α",
            listing(alpha_rows, "params_ratio", "alpha"),
            holds=size_ok,
        ),
        judge(
            ALPHA,
            "MACs ratio within 25 % of α² for every α",
            listing(alpha_rows, "macs_ratio", "alpha"),
            holds=compute_ok,
        ),
        judge(
            RHO,
            "params unchanged and MACs within 5 % of ρ² for every ρ",
            listing(rho_rows, "macs_ratio", "rho"),
            holds=rho_params and rho_macs,
        ),
        judge(
            STRIDE,
            "equal params; conv(s2) MACs == 1/4 of conv(s1) + 2×2 max-pool",
            f"params {stride['params_s2']:,} vs {stride['params_pool']:,}; MACs {stride['macs_s2']:,} vs "
            f"{stride['macs_pool']:,}",
            holds=quarter,
            correction=f"MAC ratio {stride['macs_s2'] / stride['macs_pool']:.3f}",
        ),
    ]


def _costs(alpha: float, size: int) -> tuple[int, int]:
    with torch.device("meta"):
        model = create_model("mobilenet_v1", width_multiplier=alpha)
    report = summary(model, (1, 3, size, size), device="meta")
    return report.total_params, report.total_macs


class _Resize(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.size:
            return images
        return nn.functional.interpolate(
            images, size=(self.size, self.size), mode="bilinear", align_corners=False
        )


def mini_mobilenet(alpha: float, size: int) -> nn.Sequential:
    """A five-layer MobileNetV1-style digits classifier: widths (32, 64, 128, 128, 256) × α, input
    ``size``."""
    w = [max(8, int(c * alpha)) for c in (32, 64, 128, 128, 256)]
    return nn.Sequential(
        _Resize(size),
        ConvNormAct(1, w[0], 3),
        DepthwiseSeparableConv(w[0], w[1]),
        DepthwiseSeparableConv(w[1], w[2], stride=2),
        DepthwiseSeparableConv(w[2], w[3]),
        DepthwiseSeparableConv(w[3], w[4], stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(w[4], 10),
    )


def _cost_rows() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """MobileNetV1 params and MACs per width multiplier (224 px) and per resolution multiplier (α = 1)."""
    base_params, base_macs = _costs(1.0, 224)
    alpha_rows, rho_rows = [], []
    for alpha in ALPHAS:
        params, macs = _costs(alpha, 224)
        alpha_rows.append(
            {
                "alpha": alpha,
                "params": params,
                "MACs": macs,
                "params_ratio": params / base_params,
                "macs_ratio": macs / base_macs,
            }
        )
    for rho in RHOS:
        params, macs = _costs(1.0, round(224 * rho))
        rho_rows.append(
            {
                "rho": rho,
                "pixels": round(224 * rho),
                "params": params,
                "MACs": macs,
                "params_ratio": params / base_params,
                "macs_ratio": macs / base_macs,
            }
        )
    return alpha_rows, rho_rows


def _stride_costs() -> dict[str, int]:
    conv_s1 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2))
    conv_s2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
    pool, s2 = summary(conv_s1, (1, 32, 112, 112)), summary(conv_s2, (1, 32, 112, 112))
    return {
        "params_pool": pool.total_params,
        "macs_pool": pool.total_macs,
        "params_s2": s2.total_params,
        "macs_s2": s2.total_macs,
    }


def _accuracy_curve(ctx: LabContext) -> list[dict[str, float]]:
    data = digits_tensors(ctx.seed)
    rows = []
    for alpha in ctx.pick((0.25, 1.0), (0.25, 0.5, 1.0)):
        for rho in ctx.pick((0.5,), (1.0, 0.75, 0.5)):
            size = round(16 * rho)
            torch.manual_seed(ctx.seed)
            model = mini_mobilenet(alpha, size)
            run = fit(
                model,
                data.train,
                data.val,
                epochs=ctx.pick(1, 6),
                lr=0.05,
                optimizer="momentum",
                seed=ctx.seed,
            )
            macs = summary(model, (1, 1, 8, 8)).total_macs
            rows.append(
                {
                    "alpha": alpha,
                    "rho": rho,
                    "pixels": size,
                    "MACs": macs,
                    "params": sum(p.numel() for p in model.parameters()),
                    "val accuracy": run.last("val_accuracy"),
                }
            )
    return rows


@register(
    "mobilenet-multipliers",
    "§28",
    "MobileNet width and resolution multipliers: cost and accuracy",
    errata=True,
)
def mobilenet_multipliers(ctx: LabContext) -> Findings:
    alpha_rows, rho_rows = _cost_rows()
    curve = _accuracy_curve(ctx)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for rho in sorted({row["rho"] for row in curve}, reverse=True):
        points = [(row["MACs"], row["val accuracy"]) for row in curve if row["rho"] == rho]
        axis.plot(*zip(*points, strict=True), marker="o", label=f"ρ = {rho:g} ({round(16 * rho)} px)")
        for row in (r for r in curve if r["rho"] == rho):
            axis.annotate(f"α={row['alpha']:g}", (row["MACs"], row["val accuracy"]), fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("MACs per image")
    axis.set_ylabel("validation accuracy")
    axis.legend()
    axis.set_title("mini MobileNet on the digits")
    figure.tight_layout()
    ctx.figure(figure, "cost_accuracy", "Cost–accuracy of the width (α) and resolution (ρ) multipliers.")
    return Findings(
        verdicts=judge_mobilenet(alpha_rows, rho_rows, _stride_costs()),
        tables=[
            Table.of("MobileNetV1 at 224 px by width multiplier α", alpha_rows),
            Table.of("MobileNetV1 (α = 1) by resolution multiplier ρ", rho_rows),
            Table.of("Mini MobileNet on the digits (cost–accuracy)", curve),
        ],
        numbers={f"params_ratio_alpha_{r['alpha']:g}": r["params_ratio"] for r in alpha_rows},
        notes=[
            "Parameters fall more slowly than α² at small α because the final fully connected layer "
            "(1024α × 1000) scales with α, not α².",
            "The handbook's 1/4 matches conv(stride 1) followed by a 2×2 max-pool; max-pool followed by a "
            "conv costs the same as the stride-2 conv.",
        ],
    )
