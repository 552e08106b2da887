"""§10 anchors (and §9 FPN on small objects): how well anchors cover the ``shapes`` ground truth.

For every ground-truth box the best IoU with any anchor (:func:`visionkit.ops.box_iou` over
:func:`visionkit.ops.generate_anchors`) says whether an anchor can become its positive. 128-px images,
objects 16–48 px: an RPN-style level at stride 8 with k = 9 anchors (sizes 16/32/64 × ratios 1:2, 1:1,
2:1) against a single 32-px square anchor. For §9, a small-object split (8–16 px) with one coarse level
(stride 16, sizes 32/64/128: the top-level design) against FPN levels P2–P5 (strides 4–32, one size per
level, three ratios). This measures the anchors a detector can learn from, not AP: the AP comparison of FPN
and a single level on trained RetinaNets is ``fpn-small-objects`` (:mod:`.s09_fpn_small_objects`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from visionkit.data.shapes import ShapesConfig
from visionkit.lab.experiments._common import pyplot, shapes_boxes
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.ops import box_iou, generate_anchors

NINE = Claim(
    "§10",
    "九个大小形状不一的框，致力于使目标对象能出现在某个框中",
    "nine boxes of different sizes and shapes try to make every object appear in one of them",
)
LOW_LEVELS = Claim(
    "§9",
    "足够低层的特征对于检测小物体是很有帮助的",
    "low enough feature levels help a lot to detect small objects",
)
IMAGE = 128
RATIOS = (0.5, 1.0, 2.0)


def anchors_for(levels: list[tuple[int, tuple[float, ...], tuple[float, ...]]]) -> Tensor:
    """Anchors of one ``IMAGE``² image for levels ``(stride, sizes, ratios)``."""
    feature_sizes = [(IMAGE // stride, IMAGE // stride) for stride, _, _ in levels]
    return generate_anchors(
        feature_sizes, (IMAGE, IMAGE), [s for _, s, _ in levels], [r for _, _, r in levels]
    )


def best_ious(boxes: list[Tensor], anchors: Tensor) -> Tensor:
    """The best anchor IoU of every ground-truth box, concatenated over images."""
    return torch.cat([box_iou(b, anchors).amax(1) for b in boxes if len(b)])


def positives_per_object(boxes: list[Tensor], anchors: Tensor, threshold: float = 0.5) -> Tensor:
    """Anchors with IoU ≥ ``threshold`` per ground-truth box."""
    return torch.cat([(box_iou(b, anchors) >= threshold).sum(1) for b in boxes if len(b)])


def judge_anchors(nine: dict[str, float], one: dict[str, float], small: dict[str, float]) -> list[Verdict]:
    """``nine``/``one``: ``covered`` (fraction of objects with best IoU ≥ 0.5) and ``median`` best IoU;
    ``small``: fraction of small objects with ≥ 1 positive anchor for ``single`` level and ``fpn``."""
    return [
        judge(
            NINE,
            "k = 9 covers more objects at IoU ≥ 0.5 than one anchor",
            f"9 anchors: {nine['covered']:.3f} covered; 1 anchor: {one['covered']:.3f}",
            holds=nine["covered"] > one["covered"],
        ),
        judge(
            NINE,
            "at the RPN's positive threshold: the median object's best IoU with the 9 anchors ≥ 0.7 "
            "(a positive without the RPN's low-quality-match rule)",
            f"median best IoU {nine['median']:.3f}",
            holds=nine["median"] >= 0.7,
        ),
        judge(
            LOW_LEVELS,
            "more small objects (8–16 px) get a positive anchor (IoU ≥ 0.5) with P2–P5 than with "
            "one stride-16 level",
            f"FPN {small['fpn']:.3f}, single level {small['single']:.3f}",
            holds=small["fpn"] > small["single"],
        ),
    ]


def _coverage(ious: Tensor) -> dict[str, float]:
    return {"covered": float((ious >= 0.5).float().mean()), "median": float(ious.median())}


def _plot(ctx: LabContext, nine_ious: Tensor, one_ious: Tensor, positives: dict[str, Tensor]) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    bins = [i / 20 for i in range(21)]
    axes[0].hist(
        [nine_ious.numpy(), one_ious.numpy()], bins=bins, label=["k = 9 (3 sizes × 3 ratios)", "k = 1"]
    )
    axes[0].axvline(0.5, color="k", linestyle="--")
    axes[0].set_xlabel("best anchor IoU per object")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"{len(nine_ious)} shapes objects (16–48 px)")
    top = int(max(v.max() for v in positives.values())) + 1
    axes[1].hist(
        [positives["single"].numpy(), positives["fpn"].numpy()],
        bins=range(top + 1),
        label=["one level, stride 16", "FPN P2–P5"],
    )
    axes[1].set_xlabel("positive anchors (IoU ≥ 0.5) per small object")
    axes[1].legend(fontsize=7)
    axes[1].set_title(f"{len(positives['fpn'])} small objects (8–16 px)")
    figure.tight_layout()
    ctx.figure(figure, "coverage", "Best-anchor IoU of each object, and positive anchors per small object.")


@register("anchor-coverage", ("§10", "§9"), "Anchor coverage of the shapes ground truth (k = 9, FPN levels)")
def anchor_coverage(ctx: LabContext) -> Findings:
    count = ctx.pick(24, 256)
    boxes = shapes_boxes(count, ctx.seed + 10)
    nine_anchors = anchors_for([(8, (16.0, 32.0, 64.0), RATIOS)])
    one_anchor = anchors_for([(8, (32.0,), (1.0,))])
    nine_ious, one_ious = best_ious(boxes, nine_anchors), best_ious(boxes, one_anchor)
    small_boxes = shapes_boxes(count, ctx.seed + 11, ShapesConfig(min_size=8, max_size=16, max_objects=6))
    single = anchors_for([(16, (32.0, 64.0, 128.0), RATIOS)])
    fpn = anchors_for(
        [(4, (8.0,), RATIOS), (8, (16.0,), RATIOS), (16, (32.0,), RATIOS), (32, (64.0,), RATIOS)]
    )
    positives = {
        "single": positives_per_object(small_boxes, single),
        "fpn": positives_per_object(small_boxes, fpn),
    }
    small = {name: float((value >= 1).float().mean()) for name, value in positives.items()}
    _plot(ctx, nine_ious, one_ious, positives)
    nine, one = _coverage(nine_ious), _coverage(one_ious)
    rows = [
        {"anchors": "k = 9, stride 8", "anchors per image": len(nine_anchors), **nine},
        {"anchors": "k = 1, stride 8", "anchors per image": len(one_anchor), **one},
    ]
    small_rows = [
        {
            "anchors": name,
            "anchors per image": len(a),
            "with ≥ 1 positive": small[name],
            "mean positives": float(positives[name].float().mean()),
        }
        for name, a in (("single", single), ("fpn", fpn))
    ]
    return Findings(
        verdicts=judge_anchors(nine, one, small),
        tables=[
            Table.of("Objects whose best anchor has IoU ≥ 0.5 (covered) and the median best IoU", rows),
            Table.of("Small objects (8–16 px): positive anchors", small_rows),
        ],
        numbers={
            "nine_covered": nine["covered"],
            "one_covered": one["covered"],
            "small_fpn": small["fpn"],
            "small_single": small["single"],
        },
    )
