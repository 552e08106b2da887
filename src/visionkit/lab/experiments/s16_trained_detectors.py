"""§16 one-stage vs two-stage and §24 RoI Pool vs RoI Align, measured on trained detectors.

Three demo-size detectors train on ``shapes`` (128-px images, 16–48 px objects) through the detection
task (:func:`visionkit.engine.detect.train_detector`, one thread) with the **same wall-clock budget**:
RetinaNet (one-stage), Faster R-CNN with RoI Align (two-stage) and the same Faster R-CNN with RoI Pool.
Each is evaluated on the same validation images; gains are paired-bootstrap 95 % intervals over those
images (:func:`visionkit.lab.demo.bootstrap_ap_gain`), speed is the median time per image. The
foreground : background ratio the second stage sees is counted on the *trained* RPN's proposals (what the
handbook's "从 “类别极不平衡” 变成了 “类别较不平衡”" is about), against the one-stage anchors.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from visionkit.data.shapes import SHAPE_CLASSES, ShapesDataset
from visionkit.engine.detect import DetectRecipe, evaluate_predictions, load_detector, predict, train_detector
from visionkit.lab.demo import bootstrap_ap_gain, count_anchors, time_inference
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.ops import Matcher, box_iou

TWO_STAGE_MORE_ACCURATE = Claim(
    "§16",
    "为什么One-stage在精度上逊色于twp-stage，但是速度完胜？",
    "why is one-stage less accurate than two-stage, but much faster?",
)
ONE_STAGE_FASTER = Claim(
    "§16",
    "但是经过这么两个stage一倒腾，操作复杂，检测速度就被严重拖慢了",
    "going through two stages makes detection much slower",
)
RPN_BALANCES = Claim(
    "§16",
    "因为two-stage系有RPN罩着",
    "two-stage detectors have the RPN to protect them (from the class imbalance)",
)
ALIGN_BEATS_POOL = Claim(
    "§24",
    "这样的像素偏差势必会对后层的回归定位产生影响",
    "such pixel misalignment must affect the later box regression",
)

MODELS = {
    "RetinaNet (one-stage)": ("retinanet_plain_fpn", {}),
    "Faster R-CNN, RoI Align": ("fasterrcnn_plain_fpn", {}),
    "Faster R-CNN, RoI Pool": ("fasterrcnn_plain_fpn", {"roi_op": "pool"}),
}


def train_each(ctx: LabContext, folder: Path) -> dict[str, Any]:
    """Train every model of :data:`MODELS` with the same budget; their detectors and the run metrics."""
    trained = {}
    for title, (model, options) in MODELS.items():
        recipe = DetectRecipe(
            model=model, num_train=ctx.pick(8, 512), num_val=ctx.pick(4, 96), batch_size=ctx.pick(4, 8),
            epochs=ctx.pick(1, 1000), time_limit=ctx.pick(0.0, 35.0), eval_every=1000, seed=ctx.seed,
            threads=1, progress=False, tensorboard=False, warmup_steps=ctx.pick(1, 50),
        )  # fmt: skip
        run = folder / title.replace(" ", "_").replace(",", "")
        if options:  # a builder option the recipe has no key for: build through the registry's signature
            recipe = DetectRecipe(**{**recipe.__dict__})
        metrics = (
            train_detector(recipe, run, log=lambda _: None)
            if not options
            else _train_with(recipe, run, options)
        )
        detector, _ = load_detector(run / "model.pt", **options)
        trained[title] = {"detector": detector, "metrics": metrics}
    return trained


def _train_with(recipe: DetectRecipe, run: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Train a model whose builder option (e.g. ``roi_op``) is not a recipe key: the builder is wrapped."""
    from visionkit.models import registry

    builder = registry.get_model_builder(recipe.model)
    name = f"{recipe.model}__lab_{'_'.join(f'{k}_{v}' for k, v in options.items())}"
    if name not in registry.list_models():

        def variant(**kwargs: Any) -> torch.nn.Module:
            return builder(**{**kwargs, **options})

        variant.__signature__ = __import__("inspect").signature(builder)  # type: ignore[attr-defined]
        registry.register_model(name)(variant)
    return train_detector(DetectRecipe(**{**recipe.__dict__, "model": name}), run, log=lambda _: None)


def rpn_proposal_ratio(detector: Any, dataset: Any, count: int) -> float:
    """Background : foreground among the trained RPN's test-time proposals (IoU < 0.5 with every object:
    background; ≥ 0.5: foreground), summed over ``count`` images."""
    foreground = background = 0
    detector.eval()
    with torch.no_grad():
        for index in range(min(count, len(dataset))):
            image, target = dataset[index]
            batch, sizes = detector.preprocess([image])
            features = detector.extract_features(batch)
            proposals, _ = detector.proposals(batch, sizes, features)
            matches = Matcher(0.5, 0.5, False)(box_iou(target["boxes"], proposals[0]))
            foreground += int((matches >= 0).sum())
            background += int((matches < 0).sum())
    return background / max(foreground, 1)


def judge_detectors(rows: dict[str, dict[str, float]], gains: dict[str, dict[str, float]]) -> list[Verdict]:
    """``rows``: title → AP, AP75, ms, ratio; ``gains``: paired intervals of AP(two-stage) − AP(one-stage)
    and AP75(Align) − AP75(Pool)."""
    one, align, pool = (rows[t] for t in MODELS)
    two_stage, roi = gains["two_stage"], gains["align_pool"]
    return [
        judge(
            TWO_STAGE_MORE_ACCURATE,
            "Faster R-CNN COCO AP above RetinaNet's at the same training time, paired-bootstrap 95 % "
            "interval above 0",
            f"{align['AP'] - one['AP']:+.4f} (95 % CI {two_stage['low']:+.4f} … {two_stage['high']:+.4f})",
            holds=two_stage["low"] > 0,
        ),
        judge(
            ONE_STAGE_FASTER,
            "RetinaNet ms/image below Faster R-CNN's",
            f"{one['ms']:.1f} vs {align['ms']:.1f} ms",
            holds=one["ms"] < align["ms"],
        ),
        judge(
            RPN_BALANCES,
            "background per foreground among the trained RPN's proposals below the one-stage anchors'",
            f"{align['ratio']:.1f} vs {one['ratio']:.0f}",
            holds=align["ratio"] < one["ratio"],
        ),
        judge(
            ALIGN_BEATS_POOL,
            "RoI Align AP75 above RoI Pool's (same detector and budget), paired-bootstrap 95 % interval "
            "above 0",
            f"{align['AP75'] - pool['AP75']:+.4f} (95 % CI {roi['low']:+.4f} … {roi['high']:+.4f})",
            holds=roi["low"] > 0,
        ),
    ]


@register("trained-detectors", ("§16", "§24"), "One- vs two-stage and RoI Pool vs RoI Align, trained")
def trained_detectors(ctx: LabContext) -> Findings:
    val = ShapesDataset(ctx.pick(4, 96), seed=ctx.seed + 1000)
    images, targets = [val[i][0] for i in range(len(val))], [val[i][1] for i in range(len(val))]
    with tempfile.TemporaryDirectory() as folder:
        trained = train_each(ctx, Path(folder))
    rows, found = {}, {}
    for title, entry in trained.items():
        detector = entry["detector"]
        found[title] = predict(detector, images)
        coco = evaluate_predictions(found[title], targets, len(SHAPE_CLASSES)).coco.as_dict()
        one_stage = not hasattr(detector, "rpn")
        ratio = (count_anchors(detector, val, len(val), 128)[0]["background"]
                 / max(count_anchors(detector, val, len(val), 128)[0]["foreground"], 1e-9)
                 if one_stage else rpn_proposal_ratio(detector, val, len(val)))  # fmt: skip
        rows[title] = {"steps": entry["metrics"]["steps"], "AP": coco["AP"], "AP50": coco["AP50"],
                       "AP75": coco["AP75"], "ms": time_inference(detector, val, ctx.pick(2, 16)),
                       "ratio": ratio}  # fmt: skip
    titles = list(MODELS)
    resamples = ctx.pick(20, 300)
    gains = {
        "two_stage": bootstrap_ap_gain(found[titles[0]], found[titles[1]], val, resamples, ctx.seed),
        "align_pool": _ap75_gain(found[titles[2]], found[titles[1]], targets, resamples, ctx.seed),
    }
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3))
    for key, offset in (("AP", -0.2), ("AP75", 0.2)):
        axis.bar([i + offset for i in range(3)], [rows[t][key] for t in titles], width=0.4, label=key)
    axis.set_xticks(range(3), [t.replace(", ", "\n") for t in titles], fontsize=8)
    axis.set_ylabel("COCO AP")
    axis.legend()
    figure.tight_layout()
    ctx.figure(figure, "accuracy", "The same training time for each detector: COCO AP and AP75.")
    return Findings(
        verdicts=judge_detectors(rows, gains),
        tables=[
            Table.of(
                "Same wall-clock training budget; ratio = background per foreground (one-stage: its "
                "anchors; two-stage: the trained RPN's proposals)",
                [{"detector": t, **rows[t]} for t in titles],
            )
        ],
        numbers={f"{t}/{k}": v for t in titles for k, v in rows[t].items()},
    )


def _ap75_gain(base: list, candidate: list, targets: list, resamples: int, seed: int) -> dict[str, float]:
    """Paired bootstrap of AP75(candidate) − AP75(base) over images (as ``bootstrap_ap_gain`` for AP)."""
    import numpy as np

    from visionkit.metrics.detection.coco import evaluate_coco

    plain = [{k: v for k, v in t.items() if k != "image_id"} for t in targets]
    generator = np.random.default_rng(seed)
    gains = []
    for _ in range(resamples):
        draw = generator.integers(0, len(plain), len(plain))
        drawn = [plain[i] for i in draw]
        scores = [evaluate_coco([p[i] for i in draw], drawn, num_classes=len(SHAPE_CLASSES)).as_dict()["AP75"]
                  for p in (base, candidate)]  # fmt: skip
        gains.append(scores[1] - scores[0])
    low, high = np.percentile(gains, [2.5, 97.5])
    return {"low": float(low), "high": float(high)}
