"""§5 weight initialization: activation statistics through 50 layers per scheme (:mod:`visionkit.nn.init`),
and the symmetry that all-zero weights never break.

A 50-layer, 256-wide MLP (no biases) takes a batch of N(0, 1) inputs; the standard deviation of every
layer's activations is recorded with tanh and with ReLU for: zeros, small random (0.01·N(0, 1)),
1/√n (LeCun), Xavier, He and sparse (10 connections, N(0, 1)). "About the same output distribution" is
read as the last layer's standard deviation within a factor 10 of the first layer's. The symmetry check
trains a 2-hidden-layer MLP from all-zero weights on the digits with the engine's trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.lab.experiments._common import digits_tensors, fit, mlp, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.nn import init

ZEROS = Claim(
    "§5",
    "如果权重被初始化为同样的值，神经元之间就失去了不对称性的源头",
    "if all weights start at the same value, nothing breaks the symmetry between neurons",
    kind="fact",
)
SMALL = Claim(
    "§5",
    "在深度网络中，就会出现问题",
    "with very small weights the signal (and the gradient) shrinks: a problem in deep networks",
)
LECUN = Claim(
    "§5",
    "这样就保证了网络中所有神经元起始时有近似同样的输出分布",
    "dividing by √n gives every neuron about the same output distribution at the start",
)
HE = Claim(
    "§5",
    "这个形式是神经网络算法使用ReLU神经元时的当前最佳推荐",
    "w = randn(n)·√(2/n) (He) is the current recommendation for ReLU networks",
)
SCHEMES = ("zeros", "small random", "1/√n", "xavier", "he", "sparse")
DEPTH, WIDTH = 50, 256


def initialize(weight: torch.Tensor, scheme: str, generator: torch.Generator) -> None:
    """Fill a ``[out, in]`` weight with one of :data:`SCHEMES`."""
    if scheme == "zeros":
        init.zeros_(weight)
    elif scheme == "small random":
        init.small_normal_(weight, 0.01, generator=generator)
    elif scheme == "1/√n":
        init.lecun_normal_(weight, generator=generator)
    elif scheme == "xavier":
        init.xavier_normal_(weight, generator=generator)
    elif scheme == "he":
        init.kaiming_normal_(weight, generator=generator)
    else:
        init.sparse_(weight, connections=10, std=1.0, generator=generator)


@torch.no_grad()
def layer_stds(scheme: str, activation: str, batch: int, generator: torch.Generator) -> list[float]:
    """Standard deviation of the activations after each of ``DEPTH`` layers."""
    hidden = torch.randn(batch, WIDTH, generator=generator)
    weight = torch.empty(WIDTH, WIDTH)
    stds = []
    for _ in range(DEPTH):
        initialize(weight, scheme, generator)
        hidden = hidden @ weight.T
        hidden = torch.tanh(hidden) if activation == "tanh" else torch.relu(hidden)
        stds.append(float(hidden.std()))
    return stds


def judge_init(distinct_rows: int, ratios: dict[tuple[str, str], float]) -> list[Verdict]:
    """``distinct_rows``: distinct rows among the hidden weight matrices after training from zeros (the
    most over both layers); ``ratios``: (scheme, activation) → std(last layer) / std(first layer)."""

    def within(value: float) -> bool:
        return 0.1 <= value <= 10.0

    return [
        judge(
            ZEROS,
            "after training from all-zero weights every hidden layer's rows are identical",
            f"at most {distinct_rows} distinct row(s) per hidden layer",
            holds=distinct_rows == 1,
        ),
        judge(
            SMALL,
            f"small random (0.01): std after {DEPTH} tanh layers < 1e-6 × after the first",
            f"{ratios[('small random', 'tanh')]:.2g}",
            holds=ratios[("small random", "tanh")] < 1e-6,
        ),
        judge(
            LECUN,
            f"1/√n with tanh: std after {DEPTH} layers within 10× of the first layer's",
            f"{ratios[('1/√n', 'tanh')]:.3g}",
            holds=within(ratios[("1/√n", "tanh")]),
        ),
        judge(
            HE,
            f"with ReLU, He keeps the std within 10× over {DEPTH} layers while 1/√n does not",
            f"He {ratios[('he', 'relu')]:.3g}, 1/√n {ratios[('1/√n', 'relu')]:.2g}",
            holds=within(ratios[("he", "relu")]) and not within(ratios[("1/√n", "relu")]),
        ),
    ]


def _zeros_symmetry(ctx: LabContext) -> int:
    data = digits_tensors(ctx.seed)
    model = mlp([64, 32, 32, 10], nn.Tanh)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
    fit(model, data.train, data.val, epochs=ctx.pick(1, 3), lr=0.1, seed=ctx.seed)
    hidden = [m.weight for m in model.modules() if isinstance(m, nn.Linear)][:-1]
    return max(len(torch.unique(weight.detach(), dim=0)) for weight in hidden)


@register("weight-initialization", "§5", "Activation statistics through 50 layers per initialization")
def weight_initialization(ctx: LabContext) -> Findings:
    batch = ctx.pick(64, 512)
    curves = {
        (scheme, activation): layer_stds(scheme, activation, batch, ctx.generator())
        for scheme in SCHEMES
        for activation in ("tanh", "relu")
    }
    ratios = {key: (values[-1] / values[0] if values[0] > 0 else 0.0) for key, values in curves.items()}
    distinct = _zeros_symmetry(ctx)
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
    for axis, activation in zip(axes, ("tanh", "relu"), strict=True):
        for scheme in SCHEMES:
            axis.plot(
                range(1, DEPTH + 1), [max(v, 1e-40) for v in curves[(scheme, activation)]], label=scheme
            )
        axis.set_yscale("log")
        axis.set_xlabel("layer")
        axis.set_title(activation)
    axes[0].set_ylabel("activation std")
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    ctx.figure(
        figure, "activation_std", f"Activation standard deviation through {DEPTH} layers of width {WIDTH}."
    )
    rows = [
        {"scheme": scheme, **{f"{a}: std last / first": ratios[(scheme, a)] for a in ("tanh", "relu")}}
        for scheme in SCHEMES
    ]
    return Findings(
        verdicts=judge_init(distinct, ratios),
        tables=[Table.of(f"Std of layer {DEPTH} over std of layer 1 (0 for zeros)", rows)],
        numbers={f"{s} {a}": r for (s, a), r in ratios.items()},
        notes=[
            "Xavier equals 1/√n here: for square layers √(2/(n_in + n_out)) = 1/√n (same draws, same seed)."
        ],
    )
