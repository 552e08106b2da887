"""§2 vanishing gradients: per-layer gradient norms of 20-layer MLPs on a batch of digits, recorded by
:class:`visionkit.engine.diagnostics.GradientNormMonitor`.

The handbook's bound multiplies sigmoid's largest slope, 0.25, once per layer. The weights multiply in as
well: with PyTorch's default initialization (|w| ≤ 1/√64) the first layer's gradient falls even below
0.25¹⁹ of the last hidden layer's, with N(0, 1) weights it does not come near it. The remedies — ReLU
with He initialization, batch normalization, residual connections — keep the first layer's gradient
within the monitor's vanishing ratio (1/100) of the last hidden layer's. One backward pass, no training.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.engine.diagnostics import GradientNormMonitor
from visionkit.lab.experiments._common import digits_tensors, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

BOUND = Claim(
    "§2",
    "假设每层学习梯度都小于最大值0.25，网络有n层，因为链式求导的原因，第一层的梯度小于0.25的n次方",
    "if every layer's gradient factor is below sigmoid's maximum slope 0.25, the first layer's gradient "
    "of an n-layer network is below 0.25ⁿ",
)
RELU = Claim("§2", "引入RELU代替sigmoid激活函数", "ReLU instead of sigmoid (remedies vanishing gradients)")
RESNET = Claim("§2", "进一步避免了梯度消失", "ResNet's residual learning further avoids vanishing gradients")
VARIANTS = ("sigmoid", "sigmoid, N(0, 1) weights", "ReLU + He", "sigmoid + BN", "sigmoid, residual")
DEPTH, WIDTH = 20, 64
VANISHING_RATIO = 1e-2  # GradientNormMonitor's default


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.activation = nn.Sigmoid()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.activation(self.linear(hidden))


def deep_mlp(variant: str) -> nn.Sequential:
    """A ``DEPTH``-hidden-layer MLP, 64 → ``WIDTH`` → … → 10, in one of :data:`VARIANTS`."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, WIDTH)]
    for _ in range(DEPTH - 1):
        if variant == "sigmoid, residual":
            layers.append(_Residual(WIDTH))
            continue
        layers += [nn.BatchNorm1d(WIDTH)] if variant == "sigmoid + BN" else []
        layers += [nn.ReLU() if variant == "ReLU + He" else nn.Sigmoid(), nn.Linear(WIDTH, WIDTH)]
    layers += [nn.Sigmoid(), nn.Linear(WIDTH, 10)]
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, nn.Linear) and variant == "ReLU + He":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and variant == "sigmoid, N(0, 1) weights":
            nn.init.normal_(module.weight, 0.0, 1.0)
    return model


def judge_vanishing(ratios: dict[str, float]) -> list[Verdict]:
    """``ratios``: variant → ‖∂L/∂W_first‖ / ‖∂L/∂W_last hidden‖ over ``DEPTH`` hidden layers."""
    bound = 0.25 ** (DEPTH - 1)
    return [
        judge(
            BOUND,
            f"sigmoid, default init: first/last hidden-layer gradient ≤ 0.25^{DEPTH - 1} = {bound:.2g}",
            f"{ratios['sigmoid']:.2g}",
            holds=ratios["sigmoid"] <= bound,
        ),
        judge(
            BOUND,
            f"sigmoid, N(0, 1) weights: first/last hidden-layer gradient ≤ 0.25^{DEPTH - 1}",
            f"{ratios['sigmoid, N(0, 1) weights']:.2g}",
            holds=ratios["sigmoid, N(0, 1) weights"] <= bound,
        ),
        judge(
            RELU,
            f"ReLU + He: first/last ≥ {VANISHING_RATIO:g} (not vanishing) while sigmoid's is below",
            f"ReLU {ratios['ReLU + He']:.3g}, sigmoid {ratios['sigmoid']:.2g}",
            holds=ratios["ReLU + He"] >= VANISHING_RATIO > ratios["sigmoid"],
        ),
        judge(
            RESNET,
            f"residual sigmoid blocks: first/last ≥ {VANISHING_RATIO:g} while the plain stack's is below",
            f"residual {ratios['sigmoid, residual']:.3g}, plain {ratios['sigmoid']:.2g}",
            holds=ratios["sigmoid, residual"] >= VANISHING_RATIO > ratios["sigmoid"],
        ),
    ]


@register("vanishing-gradients", "§2", "Per-layer gradient norms of 20-layer MLPs, and the remedies")
def vanishing_gradients(ctx: LabContext) -> Findings:
    images, labels = digits_tensors(ctx.seed).train
    batch = ctx.pick(64, 512)
    norms: dict[str, list[float]] = {}
    status: dict[str, str] = {}
    for variant in VARIANTS:
        torch.manual_seed(ctx.seed)
        model = deep_mlp(variant)
        monitor = GradientNormMonitor(model)
        nn.functional.cross_entropy(model(images[:batch]), labels[:batch]).backward()
        norms[variant] = list(monitor.record().values())
        status[variant] = monitor.check().status
        monitor.remove()
    ratios = {variant: values[0] / values[-2] for variant, values in norms.items()}
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for variant, values in norms.items():
        axis.plot(range(1, len(values) + 1), [max(v, 1e-30) for v in values], marker=".", label=variant)
    axis.set_yscale("log")
    axis.set_xlabel("linear layer (input → output)")
    axis.set_ylabel("gradient 2-norm")
    axis.legend(fontsize=7)
    axis.set_title(f"{DEPTH} hidden layers of width {WIDTH}, one batch of {batch} digits")
    figure.tight_layout()
    ctx.figure(figure, "gradient_norms", "Gradient norm of every weight matrix, first to last layer.")
    rows = [
        {
            "network": v,
            "first/last hidden": ratios[v],
            "per-layer factor": ratios[v] ** (1 / (DEPTH - 1)),
            "monitor's status": status[v],
        }
        for v in VARIANTS
    ]
    return Findings(
        verdicts=judge_vanishing(ratios),
        tables=[
            Table.of(
                "Gradient ratios (the monitor compares the first and last quarter of all layers, "
                "output layer included)",
                rows,
            )
        ],
        numbers={f"ratio {v}": r for v, r in ratios.items()},
    )
