"""§21 ResNet and §25 ResNet v1 vs v2: training accuracy against depth for plain, v1 and v2 (pre-activation)
networks of 3×3 convolutions on the digits, and where each version puts batch normalization.

Networks: a 3×3 stem (1 → 16 channels, BN, ReLU), then ``blocks`` blocks of two 3×3 convolutions of 16
channels — plain (conv-BN-ReLU twice, no shortcut), :class:`~visionkit.nn.residual.BasicBlock` (v1) or
:class:`~visionkit.nn.residual.PreActBasicBlock` (v2, with the final BN-ReLU of the paper) — global
average pooling and a linear classifier; the same epochs of SGD with momentum (lr 0.05) for every depth,
with the engine's trainer. Degradation is about *training* accuracy (not over-fitting).
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.lab.experiments._common import digits_tensors, fit, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model
from visionkit.nn.residual import BasicBlock, PreActBasicBlock, conv3x3

DEGRADATION = Claim(
    "§21",
    "随着网络的加深，出现了训练集准确率下降的现象",
    "as plain networks get deeper, the training accuracy drops",
)
NO_DEGRADATION = Claim(
    "§21",
    "网络的性能也就不会随着深度增加而降低了",
    "with residual connections the performance no longer falls as depth grows",
)
V2_BETTER = Claim(
    "§25",
    "新的残差学习单元比以前更容易训练且泛化性更强",
    "the v2 residual unit is easier to train and generalizes better than v1",
)
V2_BN = Claim(
    "§25",
    "同时，ResNet V2 在每一层中都使用了 Batch Normalization",
    "(a difference from v1:) ResNet v2 uses batch normalization in every layer",
    kind="fact",
)
WIDTH = 16


def network(kind: str, blocks: int) -> nn.Sequential:
    """``kind``: ``"plain"``, ``"v1"`` or ``"v2"`` (module docstring)."""
    body: list[nn.Module] = [conv3x3(1, WIDTH), nn.BatchNorm2d(WIDTH), nn.ReLU()]
    for _ in range(blocks):
        if kind == "plain":
            body += [
                conv3x3(WIDTH, WIDTH),
                nn.BatchNorm2d(WIDTH),
                nn.ReLU(),
                conv3x3(WIDTH, WIDTH),
                nn.BatchNorm2d(WIDTH),
                nn.ReLU(),
            ]
        else:
            body.append(BasicBlock(WIDTH, WIDTH) if kind == "v1" else PreActBasicBlock(WIDTH, WIDTH))
    if kind == "v2":
        body += [nn.BatchNorm2d(WIDTH), nn.ReLU()]
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, 10))


def judge_residual(
    results: dict[tuple[str, int], dict[str, float]], bn_counts: dict[str, tuple[int, int]]
) -> list[Verdict]:
    """``results``: (kind, blocks) → ``train_accuracy``, ``train_loss``, ``val_accuracy``; ``bn_counts``:
    ``"v1"``/``"v2"`` → (BatchNorm layers, conv layers) of ResNet-18."""
    depths = sorted({blocks for _, blocks in results})
    shallow, deep = depths[0], depths[-1]

    def accuracy(kind: str, blocks: int) -> float:
        return results[(kind, blocks)]["train_accuracy"]

    v1, v2 = results[("v1", deep)], results[("v2", deep)]
    (bn1, conv1), (bn2, conv2) = bn_counts["v1"], bn_counts["v2"]
    return [
        judge(
            DEGRADATION,
            f"plain: training accuracy with {deep} blocks < with {shallow}",
            f"{accuracy('plain', deep):.3f} vs {accuracy('plain', shallow):.3f}",
            holds=accuracy("plain", deep) < accuracy("plain", shallow),
        ),
        judge(
            NO_DEGRADATION,
            f"v1 residual: training accuracy with {deep} blocks ≥ with {shallow}",
            f"{accuracy('v1', deep):.3f} vs {accuracy('v1', shallow):.3f}",
            holds=accuracy("v1", deep) >= accuracy("v1", shallow),
        ),
        judge(
            V2_BETTER,
            f"{deep} blocks: v2's training loss ≤ v1's and its validation accuracy ≥ v1's",
            f"loss {v2['train_loss']:.4f} vs {v1['train_loss']:.4f}; val {v2['val_accuracy']:.3f} vs "
            f"{v1['val_accuracy']:.3f}",
            holds=v2["train_loss"] <= v1["train_loss"] and v2["val_accuracy"] >= v1["val_accuracy"],
        ),
        judge(
            V2_BN,
            "ResNet-18: BatchNorm layers per conv, v2 > v1 (v1 lacking BN somewhere)",
            f"v1 {bn1}/{conv1}, v2 {bn2}/{conv2}",
            holds=bn2 * conv1 > bn1 * conv2,
            correction=f"v1 already has a BN after every conv ({bn1} of {conv1}); "
            f"v2 has {bn2} for {conv2} convs "
            "(none on its projection shortcuts): the difference is where BN and ReLU sit (before the conv)",
        ),
    ]


def _bn_counts() -> dict[str, tuple[int, int]]:
    counts = {}
    for kind, name in (("v1", "resnet18"), ("v2", "resnet18_v2")):
        with torch.device("meta"):
            model = create_model(name)
        counts[kind] = (
            sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
            sum(isinstance(m, nn.Conv2d) for m in model.modules()),
        )
    return counts


@register(
    "residual-depth",
    ("§21", "§25"),
    "Plain vs residual (v1, v2) networks by depth on the digits",
    errata=True,
)
def residual_depth(ctx: LabContext) -> Findings:
    data = digits_tensors(ctx.seed)
    depths = ctx.pick((1, 4), (1, 4, 12))
    results = {}
    for kind in ("plain", "v1", "v2"):
        for blocks in depths:
            torch.manual_seed(ctx.seed)
            run = fit(
                network(kind, blocks),
                data.train,
                data.val,
                epochs=ctx.pick(1, 5),
                lr=0.05,
                optimizer="momentum",
                seed=ctx.seed,
            )
            last = run.history[-1]
            results[(kind, blocks)] = {k: last[k] for k in ("train_accuracy", "train_loss", "val_accuracy")}
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for kind, marker in (("plain", "o"), ("v1", "s"), ("v2", "^")):
        axis.plot(
            [2 * b + 1 for b in depths],
            [results[(kind, b)]["train_accuracy"] for b in depths],
            marker=marker,
            label=kind,
        )
    axis.set_xlabel("3×3 conv layers")
    axis.set_ylabel("training accuracy")
    axis.legend(fontsize=8)
    axis.set_title("digits, same epochs for every depth")
    figure.tight_layout()
    ctx.figure(figure, "depth", "Training accuracy against depth: plain vs residual v1 and v2.")
    rows = [{"network": kind, "blocks": blocks, **values} for (kind, blocks), values in results.items()]
    return Findings(
        verdicts=judge_residual(results, _bn_counts()),
        tables=[Table.of("Training results", rows)],
        numbers={
            f"{kind} {blocks} train_accuracy": v["train_accuracy"] for (kind, blocks), v in results.items()
        },
    )
