"""§16 (and §11) the class imbalance of dense detectors, counted with visionkit's anchor matcher.

On ``shapes`` ground truth (128-px images): RetinaNet-style anchors (P3–P7, 3 scales × 3 ratios per
location) matched at IoU 0.5 / 0.4, and RPN-style anchors (one stride-8 level, k = 9) matched at 0.7 / 0.3
before and after the RPN's 256-anchor minibatch (:func:`visionkit.ops.sample_balanced`, at most half
positive). No detector is trained: these are the ratios any detector with these anchors trains on. The
handbook's two-stage argument (the RPN's proposals cut the background before the second stage, "从 “类别 极
不平衡” 变成了 “类别 较 不平衡”") and the one-stage vs two-stage accuracy and speed need trained detectors:
they are the detection task module's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from visionkit.lab.experiments._common import pyplot, shapes_boxes
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.ops import Matcher, box_iou, generate_anchors, sample_balanced

MOSTLY_BACKGROUND = Claim(
    "§16",
    "如果分类器无脑地把所有bbox统一归类为background，accuracy也可以刷得很高",
    "a classifier that calls every box background still gets a very high accuracy",
)
HUNDRED_K = Claim(
    "§11",
    "而one-stage阶段需要产生约100k的候选位置",
    "a one-stage detector has to produce about 100k candidate locations",
)
RATIOS = (0.5, 1.0, 2.0)
OCTAVE = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))


def retinanet_anchors(height: int, width: int, base: float = 32.0) -> Tensor:
    """RetinaNet's anchors for an image: levels P3–P7 (strides 8…128), sizes
    ``base``·2^(l−3)·{1, 2^⅓, 2^⅔}."""
    strides = [8, 16, 32, 64, 128]
    sizes = [tuple(base * 2**level * s for s in OCTAVE) for level in range(5)]
    feature_sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
    return generate_anchors(feature_sizes, (height, width), sizes, [RATIOS] * 5)


def count_labels(
    boxes: list[Tensor], anchors: Tensor, matcher: Matcher, sample: int | None, generator: torch.Generator
) -> dict[str, float]:
    """Foreground and background anchors summed over images (after sampling ``sample`` per image if given)."""
    foreground = background = 0
    for gt in boxes:
        matches = matcher(box_iou(gt, anchors))
        if sample is not None:
            positive, negative = sample_balanced(matches, sample, 0.5, generator)
            foreground, background = foreground + int(positive.sum()), background + int(negative.sum())
        else:
            foreground += int((matches >= 0).sum())
            background += int((matches == -1).sum())
    return {
        "foreground": foreground,
        "background": background,
        "background per foreground": background / max(foreground, 1),
    }


def judge_imbalance(one_stage: dict[str, float], coco_anchors: int) -> list[Verdict]:
    """ "Very high accuracy" is read as ≥ 0.99 (1 error in 100); "about 100k" as within a factor √10 of 10⁵
    (the same power of ten)."""
    accuracy = one_stage["background"] / (one_stage["background"] + one_stage["foreground"])
    return [
        judge(
            MOSTLY_BACKGROUND,
            "accuracy of 'all background' on the one-stage anchors ≥ 0.99",
            f"{accuracy:.4f}",
            holds=accuracy >= 0.99,
        ),
        judge(
            HUNDRED_K,
            "RetinaNet anchors of an 800×1333 image within a factor √10 of 100k",
            f"{coco_anchors:,}",
            holds=10**4.5 <= coco_anchors <= 10**5.5,
        ),
    ]


@register("foreground-background", ("§16", "§11"), "Foreground : background anchors, one-stage vs RPN")
def foreground_background(ctx: LabContext) -> Findings:
    boxes = shapes_boxes(ctx.pick(16, 256), ctx.seed + 16)
    generator = ctx.generator()
    one_stage = count_labels(
        boxes, retinanet_anchors(128, 128, base=16.0), Matcher(0.5, 0.4, True), None, generator
    )
    rpn_anchors = generate_anchors([(16, 16)], (128, 128), [(16.0, 32.0, 64.0)], [RATIOS])
    rpn_raw = count_labels(boxes, rpn_anchors, Matcher(0.7, 0.3, True), None, generator)
    rpn_sampled = count_labels(boxes, rpn_anchors, Matcher(0.7, 0.3, True), 256, generator)
    coco_anchors = len(retinanet_anchors(800, 1333))
    rows = [
        {"anchors": "one-stage (RetinaNet P3–P7, IoU 0.5/0.4)", **one_stage},
        {"anchors": "RPN (stride 8, k = 9, IoU 0.7/0.3), all", **rpn_raw},
        {"anchors": "RPN after its 256-anchor minibatch", **rpn_sampled},
    ]
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3))
    axis.bar(
        ["one-stage", "RPN all", "RPN sampled"],
        [r["background per foreground"] for r in rows],
        color=["#c62828", "#d08040", "#1a7f37"],
    )
    axis.set_yscale("log")
    axis.set_ylabel("background anchors per foreground")
    axis.set_title(f"shapes, {len(boxes)} images of 128 px")
    figure.tight_layout()
    ctx.figure(figure, "ratios", "Background anchors per foreground anchor (log scale).")
    return Findings(
        verdicts=judge_imbalance(one_stage, coco_anchors),
        tables=[
            Table.of(
                "Anchor labels summed over the images (the RPN rows are its training minibatch, "
                "not its proposals)",
                rows,
            ),
            Table.of("Anchors of one 800×1333 image (P3–P7, 9 per location)", [{"anchors": coco_anchors}]),
        ],
        numbers={
            "one_stage_bg_per_fg": one_stage["background per foreground"],
            "rpn_bg_per_fg": rpn_raw["background per foreground"],
            "rpn_sampled_bg_per_fg": rpn_sampled["background per foreground"],
            "coco_anchors": coco_anchors,
        },
    )
