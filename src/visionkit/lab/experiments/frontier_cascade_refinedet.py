"""Frontier (前沿): Cascade R-CNN's stage-by-stage refinement and RefineDet's refined anchors, measured.

The handbook's frontier section only names the two detectors (with links); what is tested is the idea each
is known for. Every model trains through the detection task (:func:`visionkit.engine.detect.train_detector`,
``shapes``, one thread, the demo-size ``plain`` builders):

* **Cascade R-CNN** — each stage regresses the previous stage's boxes. On validation images, the RPN
  proposals that start at IoU ≥ 0.5 with an object are followed through the stages
  (:meth:`~visionkit.models.detectors.cascade_rcnn.CascadeRCNN.stage_boxes`) and their IoU with that object
  is averaged after 0, 1, 2, 3 refinements; AP75 is measured with stages 1, 1–2, 1–3 run (``test_stages``).
* **RefineDet** — the ARM moves the anchors before the ODM classifies and regresses them. The trained
  model's positive anchors (IoU ≥ 0.5) are compared with the object before and after the ARM's offsets,
  and the model is compared with the same model trained with ``refine_anchors=false`` (its ODM working from
  the original anchors) by a paired-bootstrap interval of COCO AP
  (:func:`visionkit.lab.demo.bootstrap_ap_gain`).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from visionkit.data.shapes import SHAPE_CLASSES, ShapesDataset
from visionkit.engine.detect import DetectRecipe, evaluate_predictions, load_detector, predict, train_detector
from visionkit.lab.demo import bootstrap_ap_gain
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models.detectors.refinedet import refine
from visionkit.ops import Matcher, box_iou

CASCADE = Claim(
    "frontier",
    "Cascade R-CNN",
    "Cascade R-CNN (named under 前沿; its idea: each stage's regressor raises the boxes' IoU with their "
    "object)",
)
REFINEDET = Claim(
    "frontier",
    "RefineDet",
    "RefineDet (named under 前沿; its idea: the ODM works better from the ARM's refined anchors than "
    "from the original ones)",
)


def train(ctx: LabContext, folder: Path, model: str, seconds: float, **options: Any) -> dict[str, Any]:
    """Train ``model`` (recipe ``options`` such as ``refine_anchors``) for ``seconds``; detector and steps."""
    recipe = DetectRecipe(
        model=model, num_train=ctx.pick(8, 512), num_val=ctx.pick(4, 16), batch_size=ctx.pick(4, 8),
        epochs=ctx.pick(1, 1000), time_limit=ctx.pick(0.0, seconds), eval_every=1000, seed=ctx.seed,
        threads=1, progress=False, tensorboard=False, warmup_steps=ctx.pick(1, 50), **options,
    )  # fmt: skip
    run = folder / "_".join([model, *(f"{k}_{v}" for k, v in options.items())])
    metrics = train_detector(recipe, run, log=lambda _: None)
    return {"detector": load_detector(run / "model.pt")[0], "steps": metrics["steps"]}


@torch.no_grad()
def stage_ious(model: Any, images: list, targets: list) -> list[list[float]]:
    """IoU with its object of every RPN proposal starting at IoU ≥ 0.5, after 0, 1, 2, ... refinements."""
    model.eval()
    result: list[list[float]] = []
    for image, target in zip(images, targets, strict=True):
        per_stage = model.stage_boxes([image])
        result += [[] for _ in range(len(per_stage) - len(result))]
        iou = box_iou(target["boxes"], per_stage[0][0])
        if iou.numel() == 0:
            continue
        best, gt = iou.max(dim=0)
        rows = best >= 0.5
        for stage, boxes in enumerate(per_stage):
            result[stage] += box_iou(target["boxes"], boxes[0]).gather(0, gt[None])[0][rows].tolist()
    return result


@torch.no_grad()
def anchor_ious(model: Any, images: list, targets: list) -> dict[str, float]:
    """Mean IoU with their object of the anchors matched at IoU ≥ 0.5, before and after the ARM's offsets."""
    model.eval()
    matcher, before, after = Matcher(0.5, 0.5, True), [], []
    for image, target in zip(images, targets, strict=True):
        batch, _ = model.preprocess([image])
        _, deltas, _, _, anchors = model.outputs(batch, model.extract_features(batch))
        matches = matcher(box_iou(target["boxes"], anchors[0]))
        rows = torch.nonzero(matches >= 0).flatten()
        if rows.numel():
            objects = target["boxes"][matches[rows]]
            before += box_iou(objects, anchors[0][rows]).diagonal().tolist()
            after += box_iou(objects, refine(deltas[0][rows], anchors[0][rows])).diagonal().tolist()
    return {"before": statistics.fmean(before or [0.0]), "after": statistics.fmean(after or [0.0]),
            "anchors": float(len(before))}  # fmt: skip


def judge_frontier(
    ious: list[float],
    ap75: list[float],
    anchors: dict[str, float],
    gain: dict[str, float],
    ap: dict[str, float],
) -> list[Verdict]:
    """``ious``: mean IoU of the proposals after 0..n refinements; ``ap75``: AP75 with stages 1..k run;
    ``anchors``: mean anchor IoU ``before`` / ``after`` the ARM; ``gain``: paired interval of AP(refined) −
    AP(original anchors); ``ap``: the two APs (``refined``, ``original``)."""
    rising = all(b > a for a, b in itertools.pairwise(ious))
    return [
        judge(
            CASCADE,
            "mean IoU of the proposals with their object rises at every stage",
            " → ".join(f"{v:.3f}" for v in ious),
            holds=rising,
        ),
        judge(
            CASCADE,
            "AP75 with all stages run above AP75 of stage 1 alone",
            " → ".join(f"{v:.3f}" for v in ap75),
            holds=ap75[-1] > ap75[0],
        ),
        judge(
            REFINEDET,
            "the ARM's offsets raise the mean IoU of the positive anchors with their object",
            f"{anchors['before']:.3f} → {anchors['after']:.3f}",
            holds=anchors["after"] > anchors["before"],
        ),
        judge(
            REFINEDET,
            "COCO AP of RefineDet above the same model with its ODM on the original anchors (same training "
            "time), paired-bootstrap 95 % interval above 0",
            f"{ap['refined'] - ap['original']:+.4f} (95 % CI {gain['low']:+.4f} … {gain['high']:+.4f})",
            holds=gain["low"] > 0,
        ),
    ]


def _coco(predictions: list, targets: list) -> dict[str, float]:
    return evaluate_predictions(predictions, targets, len(SHAPE_CLASSES)).coco.as_dict()


@register("cascade-refinedet", "frontier", "Cascade R-CNN's stages and RefineDet's refined anchors, trained")
def cascade_refinedet(ctx: LabContext) -> Findings:
    val = ShapesDataset(ctx.pick(4, 48), seed=ctx.seed + 1000)
    images, targets = [val[i][0] for i in range(len(val))], [val[i][1] for i in range(len(val))]
    with tempfile.TemporaryDirectory() as folder:
        cascade = train(ctx, Path(folder), "cascade_rcnn_plain_fpn", 32.0)
        refined = train(ctx, Path(folder), "refinedet_plain", 20.0)
        original = train(ctx, Path(folder), "refinedet_plain", 20.0, refine_anchors=False)
    model = cascade["detector"]
    stage_rows = []
    for stages in range(1, len(model.roi_heads.stages) + 1):
        model.roi_heads.test_stages = stages
        coco = _coco(predict(model, images), targets)
        stage_rows.append({"stages run": f"1..{stages}", "AP": coco["AP"], "AP50": coco["AP50"],
                           "AP75": coco["AP75"]})  # fmt: skip
    model.roi_heads.test_stages = 0
    per_stage = stage_ious(model, images, targets)
    ious = [statistics.fmean(v) if v else 0.0 for v in per_stage]
    anchors = anchor_ious(refined["detector"], images, targets)
    found = {
        key: predict(entry["detector"], images)
        for key, entry in (("refined", refined), ("original", original))
    }
    ap = {key: _coco(found[key], targets)["AP"] for key in found}
    gain = bootstrap_ap_gain(found["original"], found["refined"], val, ctx.pick(20, 200), ctx.seed)
    before_after = f"{anchors['before']:.3f} → {anchors['after']:.3f}"
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    names = ["proposals", *(f"stage {i}" for i in range(1, len(per_stage)))]
    axis.boxplot([v or [0.0] for v in per_stage], tick_labels=names)
    axis.set_ylabel("IoU with its object")
    axis.set_title(f"{len(per_stage[0])} proposals starting at IoU ≥ 0.5", fontsize=9)
    figure.tight_layout()
    ctx.figure(figure, "stage_iou", "Cascade R-CNN: IoU of the same proposals after each stage's regression.")
    return Findings(
        verdicts=judge_frontier(ious, [r["AP75"] for r in stage_rows], anchors, gain, ap),
        tables=[
            Table.of(f"Cascade R-CNN ({cascade['steps']} steps): stages run at inference", stage_rows),
            Table.of(
                "Cascade R-CNN: mean IoU of the proposals starting at IoU ≥ 0.5",
                [
                    {"boxes": n, "count": len(v), "mean IoU": m}
                    for n, v, m in zip(names, per_stage, ious, strict=True)
                ],
            ),
            Table.of(
                "RefineDet, the same training time",
                [
                    {
                        "ODM anchors": f"refine_anchors={refined['detector'].refine_anchors}",
                        "steps": refined["steps"],
                        "AP": ap["refined"],
                        "positive-anchor IoU before → after ARM": before_after,
                    },
                    {
                        "ODM anchors": f"refine_anchors={original['detector'].refine_anchors}",
                        "steps": original["steps"],
                        "AP": ap["original"],
                        "positive-anchor IoU before → after ARM": "—",
                    },
                ],
            ),
        ],
        numbers={
            **{f"iou_after_{i}": v for i, v in enumerate(ious)},
            **{f"ap75_stages_{i + 1}": float(r["AP75"]) for i, r in enumerate(stage_rows)},
            "anchor_iou_before": anchors["before"],
            "anchor_iou_after": anchors["after"],
            "refinedet_ap": ap["refined"],
            "refinedet_original_anchors_ap": ap["original"],
            "refinedet_gain_low": gain["low"],
            "refinedet_gain_high": gain["high"],
        },
    )
