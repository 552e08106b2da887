"""§4 batch normalization and the learning rate: a learning-rate sweep of a 4-hidden-layer ReLU MLP on the
digits, with and without BatchNorm before each activation (the handbook's placement), He initialisation,
same epochs, same seed, the engine's trainer (SGD with momentum 0.9). A run whose loss becomes NaN/Inf
counts as failed (accuracy 0).
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.errors import NonFiniteLossError
from visionkit.lab.experiments._common import digits_tensors, fit, mlp, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

LARGER_LR = Claim("§4", "能够增大学习率", "batch normalization allows a larger learning rate")
SMALL_LR = Claim(
    "§4",
    "即使小的学习率也能够有快速的学习速率",
    "even with a small learning rate, training with batch normalization is fast",
)
RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
TRAINS = 0.9  # validation accuracy that counts as "trains"


def judge_batch_norm(plain: dict[float, float], normalized: dict[float, float]) -> list[Verdict]:
    """``plain``/``normalized``: learning rate → final validation accuracy (0 for a failed run). The
    largest rate reaching 90 % must be larger with BN; at the smallest rate BN must be ahead."""

    def largest(curve: dict[float, float]) -> float:
        good = [rate for rate, accuracy in curve.items() if accuracy >= TRAINS]
        return max(good) if good else 0.0

    small = min(plain)
    return [
        judge(
            LARGER_LR,
            f"largest learning rate reaching {TRAINS:.0%} validation accuracy: BN > no BN",
            f"BN {largest(normalized):g}, no BN {largest(plain):g}",
            holds=largest(normalized) > largest(plain),
        ),
        judge(
            SMALL_LR,
            f"at lr {small:g}, validation accuracy with BN > without (same epochs)",
            f"BN {normalized[small]:.3f}, no BN {plain[small]:.3f}",
            holds=normalized[small] > plain[small],
        ),
    ]


def _sweep(batch_norm: bool, ctx: LabContext, epochs: int) -> dict[float, float]:
    data = digits_tensors(ctx.seed)
    curve = {}
    for rate in RATES:
        torch.manual_seed(ctx.seed)
        model = mlp([64, 128, 128, 128, 128, 10], nn.ReLU, batch_norm=batch_norm)
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        try:
            run = fit(
                model, data.train, data.val, epochs=epochs, lr=rate, optimizer="momentum", seed=ctx.seed
            )
            curve[rate] = run.last("val_accuracy")
        except NonFiniteLossError:
            curve[rate] = 0.0
    return curve


@register("batch-norm-learning-rate", "§4", "Batch normalization and the usable learning rate")
def batch_norm_learning_rate(ctx: LabContext) -> Findings:
    epochs = ctx.pick(1, 6)
    plain, normalized = _sweep(False, ctx, epochs), _sweep(True, ctx, epochs)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(list(plain), list(plain.values()), marker="o", label="no BN")
    axis.plot(list(normalized), list(normalized.values()), marker="s", label="BN before each ReLU")
    axis.axhline(TRAINS, color="k", linestyle=":")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (SGD, momentum 0.9)")
    axis.set_ylabel("validation accuracy")
    axis.legend(fontsize=8)
    axis.set_title(f"digits, {epochs} epochs")
    figure.tight_layout()
    ctx.figure(figure, "lr_sweep", "Validation accuracy after the same epochs, by learning rate.")
    rows = [{"learning rate": rate, "no BN": plain[rate], "BN": normalized[rate]} for rate in RATES]
    return Findings(
        verdicts=judge_batch_norm(plain, normalized),
        tables=[Table.of("Validation accuracy", rows)],
        numbers={f"bn_{r:g}": a for r, a in normalized.items()}
        | {f"plain_{r:g}": a for r, a in plain.items()},
    )
