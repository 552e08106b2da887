"""§22 FCN: any input size without fully connected layers, and what the skip layers buy, measured.

The built ``fcn8s_small`` (the CPU-size FCN sharing the FCN code with the VGG16 ones) has its modules
counted (no ``nn.Linear``) and is run on inputs of several sizes, including sizes that are not multiples
of 32: the score map must come back at the input's size. FCN-32s (upsampling the stride-32 scores only) and
FCN-8s (adding the pool4 and pool3 skips) then train through the segmentation task
(:func:`visionkit.engine.segment.train_segmenter`, ``shapes``, one thread, the same wall-clock budget) and
are scored on the same validation images; mIoU, and mIoU in the 3-pixel band around class edges, are
compared with paired-bootstrap 95 % intervals over images
(:func:`visionkit.metrics.segmentation_compare.bootstrap_gain`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionkit.engine.segment import (
    SegmentRecipe,
    build_datasets,
    evaluate_segmenter,
    load_segmenter,
    train_segmenter,
)
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.metrics.segmentation_compare import bootstrap_gain
from visionkit.models import create_model

ANY_SIZE = Claim(
    "§22",
    "可以接受任意大小的输入图像（没有全连接层）",
    "it accepts input images of any size (there is no fully connected layer)",
    kind="fact",
)
SKIPS = Claim(
    "§22",
    "作者发现，仅对第5层做32倍反卷积（deconvolution），得到的结果不太精确。"
    "于是将第 4 层和第 3 层的输出也依次反卷积",
    "the authors found that upsampling only the 5th layer 32× is imprecise, so the outputs of layers 4 and 3 "
    "are upsampled too",
)
COARSE = Claim(
    "§22",
    "因为如果将全卷积之后的结果直接上采样得到的结果是很粗糙的",
    "because upsampling the fully convolutional result directly gives a very coarse result",
)
SIZES = ((64, 64), (96, 160), (77, 101), (150, 133))
MODELS = {"FCN-32s": "fcn32s_small", "FCN-8s": "fcn8s_small"}


@torch.no_grad()
def any_size(name: str, sizes: tuple[tuple[int, int], ...] = SIZES) -> dict[str, Any]:
    """Output sizes of the built segmenter ``name`` for inputs of ``sizes`` and its ``nn.Linear`` count."""
    model = create_model(name, num_classes=4).eval()
    outputs = [tuple(model(torch.rand(1, 3, h, w)).shape[-2:]) for h, w in sizes]
    linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    return {"inputs": list(sizes), "outputs": outputs, "linear": linear}


def judge_fcn(
    shapes: dict[str, Any], rows: dict[str, dict[str, float]], gains: dict[str, dict]
) -> list[Verdict]:
    """``shapes``: :func:`any_size`; ``rows``: model → ``mIoU``, ``boundary_mIoU``; ``gains``: paired
    intervals (``low``, ``high``) of FCN-8s − FCN-32s for ``mIoU`` and ``boundary``."""
    sizes = "; ".join(f"{h}×{w} → {oh}×{ow}" for (h, w), (oh, ow) in zip(shapes["inputs"], shapes["outputs"],
                                                                       strict=True))  # fmt: skip
    coarse, fine = rows["FCN-32s"], rows["FCN-8s"]
    return [
        judge(
            ANY_SIZE,
            "no nn.Linear in the model, and every input size gives a score map of that size",
            f"{shapes['linear']} Linear; {sizes}",
            holds=shapes["linear"] == 0 and shapes["outputs"] == shapes["inputs"],
            correction=f"the built FCN maps {sizes}",
        ),
        judge(
            SKIPS,
            "FCN-8s mIoU above FCN-32s's at the same training time, paired-bootstrap 95 % interval above 0",
            f"{fine['mIoU'] - coarse['mIoU']:+.4f} (95 % CI {gains['mIoU']['low']:+.4f} … "
            f"{gains['mIoU']['high']:+.4f})",
            holds=gains["mIoU"]["low"] > 0,
        ),
        judge(
            COARSE,
            "FCN-8s mIoU within 3 px of class edges above FCN-32s's, paired-bootstrap 95 % interval above 0",
            f"{fine['boundary_mIoU'] - coarse['boundary_mIoU']:+.4f} "
            f"(95 % CI {gains['boundary']['low']:+.4f} … {gains['boundary']['high']:+.4f})",
            holds=gains["boundary"]["low"] > 0,
        ),
    ]


@register("fcn-size-and-skips", "§22", "FCN: any input size, and FCN-32s vs FCN-8s, trained")
def fcn(ctx: LabContext) -> Findings:
    shapes = any_size("fcn8s_small")
    evaluations, rows = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for title, model in MODELS.items():
            recipe = SegmentRecipe(
                model=model, num_train=ctx.pick(8, 512), num_val=ctx.pick(4, 64), batch_size=ctx.pick(4, 8),
                epochs=ctx.pick(1, 1000), time_limit=ctx.pick(0.0, 35.0), eval_every=1000, seed=ctx.seed,
                threads=1, progress=False, tensorboard=False, warmup_steps=ctx.pick(1, 50),
            )  # fmt: skip
            metrics = train_segmenter(recipe, Path(folder) / model, log=lambda _: None)
            segmenter, labels = load_segmenter(Path(folder) / model / "model.pt")
            evaluations[title] = evaluate_segmenter(segmenter, build_datasets(recipe).val, labels.names)
            scores = evaluations[title].metrics
            rows[title] = {"steps": float(metrics["steps"]), "mIoU": scores["mIoU"],
                           "pixel accuracy": scores["pixel_accuracy"],
                           "boundary_mIoU": scores["boundary_mIoU"]}  # fmt: skip
    base, candidate = evaluations["FCN-32s"], evaluations["FCN-8s"]
    resamples = ctx.pick(50, 1000)
    gains = {
        "mIoU": bootstrap_gain(base.matrices, candidate.matrices, resamples=resamples, seed=ctx.seed),
        "boundary": bootstrap_gain(
            base.boundary_matrices, candidate.boundary_matrices, resamples=resamples, seed=ctx.seed
        ),
    }
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    for offset, key in ((-0.2, "mIoU"), (0.2, "boundary_mIoU")):
        axis.bar([i + offset for i in range(2)], [rows[t][key] for t in MODELS], width=0.4, label=key)
    axis.set_xticks(range(2), list(MODELS))
    axis.set_ylabel("mean IoU")
    axis.legend()
    figure.tight_layout()
    ctx.figure(figure, "miou", "FCN-32s vs FCN-8s, the same training time: mIoU overall and near edges.")
    return Findings(
        verdicts=judge_fcn(shapes, rows, gains),
        tables=[
            Table.of(
                "fcn8s_small on inputs of several sizes",
                [
                    {"input": f"{h}×{w}", "score map": f"{oh}×{ow}"}
                    for (h, w), (oh, ow) in zip(shapes["inputs"], shapes["outputs"], strict=True)
                ],
            ),
            Table.of(
                "Same wall-clock training budget, shapes validation images (boundary: 3 px band)",
                [{"model": t, **r} for t, r in rows.items()],
            ),
        ],
        numbers={
            **{f"{t}/{k}": float(v) for t, r in rows.items() for k, v in r.items()},
            **{f"gain_{k}_{e}": float(g[e]) for k, g in gains.items() for e in ("low", "high")},
        },
    )
