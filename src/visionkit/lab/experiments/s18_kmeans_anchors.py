"""§18 YOLOv2 vs YOLOv3, the anchor count: k-means anchors (1 − IoU distance,
:func:`visionkit.ops.kmeans_anchors`) on the ``shapes`` training boxes, and their average best IoU
(:func:`visionkit.ops.anchor_fitness`, YOLOv2's "Avg IOU") for k = 1…9.

YOLOv2 uses 5 anchors at one scale; YOLOv3 uses 9, three per scale at three scales — the handbook's
"5 → 3" is the per-scale count, and fewer anchors lower the IoU, they do not raise it. The YOLOv3 head
itself (its concatenation of the upsampled map, not an "eltwise sum") is measured by the YOLO task that
builds it.
"""

from __future__ import annotations

import torch

from visionkit.lab.experiments._common import pyplot, shapes_boxes
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.ops import anchor_fitness, kmeans_anchors

FEWER = Claim(
    "§18",
    "anchor的数量由5个变为3个，提高了IOU",
    "the anchor count went from 5 to 3, which raised the IoU",
    kind="fact",
)


def judge_anchor_count(fitness: dict[int, float]) -> Verdict:
    """``fitness``: k → average best IoU of the k-means anchors; the claim needs k = 3 above k = 5."""
    return judge(
        FEWER,
        "average best IoU with 3 k-means anchors > with 5",
        f"k=3: {fitness[3]:.4f}, k=5: {fitness[5]:.4f}, k=9: {fitness[9]:.4f}",
        holds=fitness[3] > fitness[5],
        correction=f"fewer anchors lower the average IoU ({fitness[5]:.3f} with 5 → "
        f"{fitness[3]:.3f} with 3); "
        f"YOLOv3 has 9 anchors ({fitness[9]:.3f}), 3 per scale at 3 scales",
    )


@register(
    "kmeans-anchor-count", "§18", "YOLO anchors: how the k-means anchor count changes the IoU", errata=True
)
def kmeans_anchor_count(ctx: LabContext) -> Findings:
    boxes = torch.cat(shapes_boxes(ctx.pick(64, 512), ctx.seed + 18))
    wh = boxes[:, 2:] - boxes[:, :2]
    fitness, anchors = {}, {}
    for k in range(1, 10):
        anchors[k] = kmeans_anchors(wh, k, seed=ctx.seed)
        fitness[k] = anchor_fitness(wh, anchors[k])
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.plot(list(fitness), list(fitness.values()), marker="o")
    for k in (3, 5, 9):
        axis.annotate(f"k={k}", (k, fitness[k]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    axis.set_xlabel("number of k-means anchors")
    axis.set_ylabel("average best IoU")
    axis.set_title(f"{len(wh)} shapes boxes")
    figure.tight_layout()
    ctx.figure(figure, "avg_iou", "Average best IoU of the ground-truth boxes with k k-means anchors.")
    rows = [
        {
            "k": k,
            "avg IoU": fitness[k],
            "anchors (w×h)": ", ".join(f"{w:.0f}×{h:.0f}" for w, h in anchors[k].tolist()),
        }
        for k in fitness
    ]
    return Findings(
        verdicts=[judge_anchor_count(fitness)],
        tables=[Table.of("k-means anchors", rows)],
        numbers={f"avg_iou_k{k}": v for k, v in fitness.items()},
    )
