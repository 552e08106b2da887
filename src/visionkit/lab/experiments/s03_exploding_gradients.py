"""§3 exploding gradients and clipping: a 10-hidden-layer ReLU MLP initialised 2.5/√n (He's gain is √2)
trained on the digits with the engine's trainer — without clipping, with ``clip_norm=1``, and with He's
initialisation as the reference. :class:`~visionkit.engine.diagnostics.GradientFlowHook` classifies every
step's gradients; the trainer skips (and counts) steps whose gradient norm is not finite.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from visionkit.engine.diagnostics import GradientFlowHook, GradientNormMonitor
from visionkit.lab.experiments._common import FitResult, digits_tensors, fit, mlp, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

NO_LEARNING = Claim(
    "§3",
    "最好的结果是无法从训练数据中学习",
    "with exploding gradients the best outcome is that the model cannot learn from the data",
)
GROWING = Claim("§3", "训练过程中模型梯度快速变大", "the gradients grow quickly during training")
CLIPPING = Claim(
    "§3",
    "如果梯度爆炸仍然出现，你可以在训练过程中检查和限制梯度的大小",
    "if gradients still explode, check and limit their size during training (gradient clipping)",
)


def exploding_mlp(gain: float, seed: int) -> nn.Sequential:
    """64 → 10 × 64 → 10 ReLU MLP with weights N(0, gain²/fan_in) and zero biases."""
    torch.manual_seed(seed)
    model = mlp([64] + [64] * 10 + [10])
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, gain / math.sqrt(module.in_features))
            nn.init.zeros_(module.bias)
    return model


def judge_exploding(runs: dict[str, dict[str, float]]) -> list[Verdict]:
    """``runs``: ``unclipped``, ``clipped``, ``he`` → ``first_loss``, ``last_loss`` (train loss of the first
    and last epoch), ``skipped`` (non-finite gradient steps) and ``flagged`` (1 if the monitor reported
    exploding or non-finite gradients at some step)."""
    unclipped, clipped, he = runs["unclipped"], runs["clipped"], runs["he"]
    stuck = unclipped["last_loss"] >= unclipped["first_loss"] or unclipped["skipped"] > 0
    return [
        judge(
            NO_LEARNING,
            "without clipping the training loss does not fall (or steps are skipped as non-finite)",
            f"loss {unclipped['first_loss']:.3g} → {unclipped['last_loss']:.3g}, "
            f"{unclipped['skipped']:g} steps "
            "skipped",
            holds=stuck,
        ),
        judge(
            GROWING,
            "the gradient monitor flags exploding / non-finite gradients without clipping, and not "
            "with He's initialisation",
            f"unclipped flagged: {bool(unclipped['flagged'])}; He flagged: {bool(he['flagged'])}",
            holds=unclipped["flagged"] == 1 and he["flagged"] == 0,
        ),
        judge(
            CLIPPING,
            "with clip_norm = 1 the loss falls and no step is skipped",
            f"loss {clipped['first_loss']:.3g} → {clipped['last_loss']:.3g}, {clipped['skipped']:g} skipped",
            holds=clipped["last_loss"] < clipped["first_loss"] and clipped["skipped"] == 0,
        ),
    ]


def _run(gain: float, clip: float | None, ctx: LabContext) -> tuple[FitResult, bool]:
    data = digits_tensors(ctx.seed)
    model = exploding_mlp(gain, ctx.seed)
    hook = GradientFlowHook(GradientNormMonitor(model))
    result = fit(
        model,
        data.train,
        data.val,
        epochs=ctx.pick(2, 5),
        lr=0.01,
        clip_norm=clip,
        seed=ctx.seed,
        hooks=[hook],
    )
    hook.monitor.remove()
    return result, any(report.status in ("exploding", "nonfinite") for report in hook.reports)


@register("exploding-gradients", "§3", "Exploding gradients in a deep ReLU MLP, and gradient clipping")
def exploding_gradients(ctx: LabContext) -> Findings:
    runs, histories = {}, {}
    for name, gain, clip in (("unclipped", 2.5, None), ("clipped", 2.5, 1.0), ("he", math.sqrt(2), None)):
        result, flagged = _run(gain, clip, ctx)
        histories[name] = [record["train_loss"] for record in result.history]
        runs[name] = {
            "first_loss": histories[name][0],
            "last_loss": histories[name][-1],
            "skipped": result.skipped_steps,
            "flagged": float(flagged),
            "val_accuracy": result.last("val_accuracy"),
        }
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    labels = {"unclipped": "gain 2.5, no clipping", "clipped": "gain 2.5, clip_norm 1", "he": "He (gain √2)"}
    for name, losses in histories.items():
        axis.plot(range(1, len(losses) + 1), losses, marker="o", label=labels[name])
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss")
    axis.legend(fontsize=7)
    figure.tight_layout()
    ctx.figure(figure, "losses", "Training loss per epoch (log scale).")
    return Findings(
        verdicts=judge_exploding(runs),
        tables=[Table.of("Runs (SGD lr 0.01, batch 32)", [{"run": labels[k], **v} for k, v in runs.items()])],
        numbers={f"{k}_last_loss": v["last_loss"] for k, v in runs.items()},
    )
