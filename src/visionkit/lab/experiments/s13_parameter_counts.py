"""§13 counting parameters: the handbook's AlexNet examples, recomputed by the analyzer.

The handbook's conv example is the original AlexNet's first layer (96 kernels of 11×11×3; torchvision's
single-GPU AlexNet has 64), so that layer is built as printed; the fully connected layers are those of
``create_model("alexnet")``. Every count comes from :func:`visionkit.analysis.summary`.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.analysis import summary
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model

CONV1 = Claim(
    "§13",
    r"P_{c} &=(11 \times 11 \times 3+1) \times 96=34944",
    "AlexNet's first conv layer (96 kernels of 11×11×3) has (11·11·3 + 1)·96 = 34,944 parameters",
    kind="fact",
)
FC1 = Claim(
    "§13",
    r"P_{c f}=(6 \times 6 \times 256+1) \times 4096=37752832",
    "AlexNet's first FC layer (6×6×256 inputs, 4096 neurons) has 37,752,832 parameters",
    kind="fact",
)
FC3 = Claim(
    "§13",
    r"P_{f f}=4096000+1000=4097000",
    "AlexNet's last FC layer (4096 → 1000) has 4,097,000 parameters",
    kind="fact",
)
FC_DOMINATES = Claim(
    "§13",
    "参数数目远大于所有Conv Layer的参数和",
    "the first FC layer has far more parameters than all conv layers together",
)


def judge_counts(conv1: int, fc1: int, fc3: int, conv_total: int) -> list[Verdict]:
    """The three printed counts must equal the measured ones; "far more" is read as at least 10×."""
    return [
        judge(CONV1, "measured == 34,944", conv1, holds=conv1 == 34_944, correction=f"{conv1:,}"),
        judge(FC1, "measured == 37,752,832", fc1, holds=fc1 == 37_752_832, correction=f"{fc1:,}"),
        judge(FC3, "measured == 4,097,000", fc3, holds=fc3 == 4_097_000, correction=f"{fc3:,}"),
        judge(
            FC_DOMINATES,
            "FC1 params ≥ 10 × all conv params",
            f"{fc1:,} vs {conv_total:,} ({fc1 / conv_total:.1f}×)",
            holds=fc1 >= 10 * conv_total,
        ),
    ]


@register("alexnet-params", "§13", "AlexNet parameter counts by the analyzer", errata=True)
def alexnet_params(ctx: LabContext) -> Findings:
    with torch.device("meta"):
        first = nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2)
        model = create_model("alexnet")
    conv1 = summary(first, (1, 3, 224, 224), device="meta").total_params
    layers = summary(model, (1, 3, 224, 224), device="meta").layers
    counted = [layer for layer in layers if layer.params]
    linears = [layer for layer in counted if layer.type == "Linear"]
    conv_total = sum(layer.params for layer in counted if layer.type == "Conv2d")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.bar([layer.name for layer in counted], [layer.params for layer in counted], color="#4878a8")
    axis.set_yscale("log")
    axis.set_ylabel("parameters")
    axis.tick_params(axis="x", rotation=60, labelsize=7)
    axis.set_title("AlexNet (torchvision layout): parameters per layer")
    figure.tight_layout()
    ctx.figure(figure, "alexnet_params", "Parameters per AlexNet layer (log scale): the FC layers dominate.")
    rows = [
        {"layer": f"{layer.name} ({layer.type})", "params": layer.params, "MACs": layer.macs}
        for layer in counted
    ]
    return Findings(
        verdicts=judge_counts(conv1, linears[0].params, linears[-1].params, conv_total),
        tables=[Table.of("AlexNet layers (torchvision: conv1 has 64 kernels, not 96)", rows)],
        numbers={
            "conv1_96": conv1,
            "fc1": linears[0].params,
            "fc3": linears[-1].params,
            "conv_total": conv_total,
        },
    )
