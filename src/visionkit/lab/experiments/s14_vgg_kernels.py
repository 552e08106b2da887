"""§14 why VGG stacks 3×3 kernels: receptive field, parameters, and accuracy at equal training.

Receptive fields and parameter counts come from :func:`visionkit.analysis.summary`; the accuracy
comparison trains a stack of three 3×3 convolutions (ReLU after each) and one 7×7 convolution with the
same width on the digits, with the engine's trainer, the same budget and the same seeds.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from visionkit.analysis import summary
from visionkit.lab.experiments._common import digits_tensors, fit, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

FIELD = Claim(
    "§14",
    "两个3x3的堆叠卷积层的有限感受野是5x5；三个3x3的堆叠卷积层的感受野是7x7",
    "two stacked 3×3 convolutions see 5×5, three see 7×7",
    kind="fact",
)
PARAMS = Claim(
    "§14",
    "三个3x3的卷积层参数个数3x（3x3xCxC）$=27 \\mathrm{C}^{2}$；一个7x7的卷积层参数为$=49 \\mathrm{C}^{2}$",
    "three 3×3 layers have 27C² weights, one 7×7 layer 49C²",
    kind="fact",
)
ACCURACY = Claim(
    "§14",
    "多个3x3的卷基层比一个大尺寸filter卷基层有更多的非线性（更多层的非线性函数），使得判决函数更加具有判决性",
    "several 3×3 layers have more non-linearity than one large filter, making the decision "
    "function more discriminative",
)

WIDTH = 16


def judge_vgg(
    fields: dict[str, int], params: dict[str, int], channels: int, accuracy: dict[str, float]
) -> list[Verdict]:
    """``fields``/``params`` keyed ``"2x3x3"``, ``"3x3x3"``, ``"7x7"``; ``accuracy``: mean validation
    accuracy of ``"3x3x3"`` and ``"7x7"`` (the stack must be at least as accurate)."""
    c2 = channels * channels
    return [
        judge(
            FIELD,
            "receptive field of 2 and 3 stacked 3×3 == 5 and 7",
            f"{fields['2x3x3']} and {fields['3x3x3']}",
            holds=(fields["2x3x3"], fields["3x3x3"]) == (5, 7),
            correction=f"{fields['2x3x3']}×{fields['2x3x3']} and {fields['3x3x3']}×{fields['3x3x3']}",
        ),
        judge(
            PARAMS,
            f"weights == 27C² and 49C² (C = {channels})",
            f"{params['3x3x3']:,} and {params['7x7']:,}",
            holds=(params["3x3x3"], params["7x7"]) == (27 * c2, 49 * c2),
            correction=f"{params['3x3x3'] / c2:g}C² and {params['7x7'] / c2:g}C²",
        ),
        judge(
            ACCURACY,
            "three 3×3 (fewer weights) reach ≥ the validation accuracy of one 7×7",
            f"{accuracy['3x3x3']:.4f} vs {accuracy['7x7']:.4f}",
            holds=accuracy["3x3x3"] >= accuracy["7x7"],
        ),
    ]


def _stack(kernel: int, layers: int) -> nn.Sequential:
    body: list[nn.Module] = []
    for _ in range(layers):
        body += [nn.Conv2d(WIDTH, WIDTH, kernel, padding=kernel // 2, bias=False), nn.ReLU()]
    return nn.Sequential(*body)


def _classifier(kernel: int, layers: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, WIDTH, 1), nn.ReLU(), _stack(kernel, layers), nn.Flatten(), nn.Linear(WIDTH * 64, 10)
    )


def _plot(ctx: LabContext, curves: dict[str, list[list[float]]], params: dict[str, int], epochs: int) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    for name, runs in curves.items():
        mean = [statistics.mean(values) for values in zip(*runs, strict=True)]
        axis.plot(range(1, epochs + 1), mean, marker="o", label=f"{name} ({params[name]:,} weights)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.legend()
    axis.set_title(f"digits, mean of {len(next(iter(curves.values())))} seed(s)")
    figure.tight_layout()
    ctx.figure(
        figure, "accuracy", "Validation accuracy: three 3×3 convolutions vs one 7×7 of the same width."
    )


@register("vgg-3x3", "§14", "Stacked 3×3 vs one large kernel: receptive field, weights, accuracy")
def vgg_kernels(ctx: LabContext) -> Findings:
    shapes = {"2x3x3": (3, 2), "3x3x3": (3, 3), "7x7": (7, 1)}
    fields, params = {}, {}
    for name, (kernel, layers) in shapes.items():
        report = summary(_stack(kernel, layers), (1, WIDTH, 16, 16))
        fields[name] = report.layers[-1].receptive_field
        params[name] = report.total_params
    data = digits_tensors(ctx.seed)
    seeds = range(ctx.pick(1, 3))
    epochs = ctx.pick(2, 12)
    curves: dict[str, list[list[float]]] = {"3x3x3": [], "7x7": []}
    for seed in seeds:
        for name in curves:
            torch.manual_seed(ctx.seed + seed)
            run = fit(
                _classifier(*shapes[name]),
                data.train,
                data.val,
                epochs=epochs,
                lr=3e-3,
                optimizer="adam",
                seed=ctx.seed + seed,
            )
            curves[name].append([record["val_accuracy"] for record in run.history])
    accuracy = {name: statistics.mean(c[-1] for c in runs) for name, runs in curves.items()}
    _plot(ctx, curves, params, epochs)
    rows = [
        {
            "stack": name,
            "receptive field": fields[name],
            "weights": params[name],
            "val accuracy": accuracy.get(name, ""),
        }
        for name in shapes
    ]
    return Findings(
        verdicts=judge_vgg(fields, params, WIDTH, accuracy),
        tables=[Table.of(f"Stacks of width C = {WIDTH}", rows)],
        numbers={f"accuracy_{k}": v for k, v in accuracy.items()},
        notes=[
            f"{epochs} epochs of Adam (lr 3e-3, batch 32) per run, seeds {list(seeds)}; a 1×1 stem "
            "maps the gray image to C channels and a linear layer classifies."
        ],
    )
