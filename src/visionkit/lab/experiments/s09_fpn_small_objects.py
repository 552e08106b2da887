"""§9 FPN vs a single level on small objects, measured on trained detectors.

Two RetinaNets train on ``shapes`` (128-px images, objects 16–48 px: COCO calls those under 32² px *small*,
about half of them) through the detection task (:func:`visionkit.engine.detect.train_detector`, one thread),
**step-matched**: the same recipe, seed, data order and number of steps. They differ only in the feature
pyramid (the builder option ``fpn``, :func:`visionkit.models.detectors.builders.build_retinanet`):

* ``fpn=True`` — the FPN ``P3–P7`` (strides 8–128), one anchor size (× 3 scales × 3 ratios) per level;
* ``fpn=False`` — the FPN paper's single-level baseline (Lin et al., 2017, Table 1, "conv5"): one level
  from the last backbone map ``c5`` (stride 32), every one of those anchors on it (45 per location), the
  same head.

Both are scored on the same validation images; AP_small and AP gains are paired-bootstrap 95 % intervals
over those images (:func:`visionkit.lab.demo.bootstrap_ap_gain`), and the verdict is read off the interval:
*holds* when it lies above 0, *contradicted* below 0, *inconclusive* when it spans 0 (``--quick`` trains a
couple of steps, so there it says inconclusive unless the interval happens to clear 0).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from visionkit.data.shapes import SHAPE_CLASSES, ShapesDataset
from visionkit.engine.detect import DetectRecipe, evaluate_predictions, load_detector, predict, train_detector
from visionkit.lab.demo import bootstrap_ap_gain
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

LOW_LEVELS = Claim(
    "§9",
    "足够低层的特征对于检测小物体是很有帮助的",
    "low enough feature levels help a lot to detect small objects",
)
TOP_LEVEL_ONLY = Claim(
    "§9",
    "原来多数的object detection算法都是只采用顶层特征做预测",
    "most detectors used to predict from the top-level features only (FPN's pyramid does better)",
)
#: title → the builder's ``fpn`` option
MODELS = {"FPN P3–P7": True, "single level (c5)": False}
MODEL = "retinanet_plain_fpn"
OUTCOMES = ("holds", "inconclusive", "contradicted")


def interval_outcome(low: float, high: float) -> str:
    """What a 95 % interval of a gain says about "the gain is positive": ``"holds"`` (``low > 0``),
    ``"contradicted"`` (``high < 0``) or ``"inconclusive"`` (it contains 0).

    Raises:
        ValueError: ``low > high``.

    Example:
        >>> interval_outcome(0.01, 0.2), interval_outcome(-0.05, 0.1), interval_outcome(-0.3, -0.1)
        ('holds', 'inconclusive', 'contradicted')
    """
    if low > high:
        raise ValueError(f"interval low={low} is above high={high}")
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return "inconclusive"


def judge_pyramid(rows: dict[str, dict[str, float]], gains: dict[str, dict[str, float]]) -> list[Verdict]:
    """``rows``: title of :data:`MODELS` → ``APs``, ``AP``; ``gains``: paired-bootstrap intervals
    (``low``, ``high``) of AP_small(FPN) − AP_small(single) under ``"APs"`` and of AP under ``"AP"``.
    A claim holds only when its interval lies above 0; the measured text names the outcome."""
    fpn, single = (rows[title] for title in MODELS)
    verdicts = []
    for claim, key, what in (
        (LOW_LEVELS, "APs", "AP_small (objects < 32² px)"),
        (TOP_LEVEL_ONLY, "AP", "COCO AP"),
    ):
        low, high = gains[key]["low"], gains[key]["high"]
        outcome = interval_outcome(low, high)
        verdicts.append(
            judge(
                claim,
                f"{what} of the FPN RetinaNet above the single-level one (same steps, seed, anchors and "
                "head), paired-bootstrap 95 % interval over validation images above 0",
                f"{fpn[key] - single[key]:+.4f} (95 % CI {low:+.4f} … {high:+.4f}): {outcome}",
                holds=outcome == "holds",
            )
        )
    return verdicts


def train_both(ctx: LabContext, folder: Path) -> dict[str, Any]:
    """Train the two RetinaNets of :data:`MODELS` with one recipe but ``fpn`` (the same steps and seed);
    their detectors, steps and arguments."""
    trained = {}
    for title, fpn in MODELS.items():
        recipe = DetectRecipe(
            model=MODEL, fpn=fpn, num_train=ctx.pick(8, 1024), num_val=4, batch_size=ctx.pick(4, 8),
            epochs=1, eval_every=1000, seed=ctx.seed, threads=1, progress=False, tensorboard=False,
            warmup_steps=ctx.pick(1, 20),
        )  # fmt: skip
        run = folder / ("fpn" if fpn else "single")
        metrics = train_detector(recipe, run, log=lambda _: None)
        detector, _ = load_detector(run / "model.pt")
        trained[title] = {"detector": detector, "steps": int(metrics["steps"])}
    steps = {entry["steps"] for entry in trained.values()}
    if len(steps) != 1:
        raise RuntimeError(f"the two trainings were not step-matched: {trained}")
    return trained


def _anchors_per_image(detector: Any, size: int = 128) -> int:
    """Anchors of one ``size``² image (each level's map is ``ceil(size / stride)`` cells a side)."""
    strides = detector.anchor_generator.strides
    per_location = detector.anchor_generator.num_anchors_per_location()
    return sum(math.ceil(size / s) ** 2 * a for s, a in zip(strides, per_location, strict=True))


@register("fpn-small-objects", "§9", "FPN vs a single level on small objects, trained (step-matched)")
def fpn_small_objects(ctx: LabContext) -> Findings:
    val = ShapesDataset(ctx.pick(8, 96), seed=ctx.seed + 1000)
    images, targets = [val[i][0] for i in range(len(val))], [val[i][1] for i in range(len(val))]
    with tempfile.TemporaryDirectory() as folder:
        trained = train_both(ctx, Path(folder))
    found, rows = {}, {}
    for title, entry in trained.items():
        detector = entry["detector"]
        found[title] = predict(detector, images)
        coco = evaluate_predictions(found[title], targets, len(SHAPE_CLASSES)).coco.as_dict()
        rows[title] = {
            "levels": ", ".join(f"{n} (stride {s})" for n, s in zip(detector.feature_names,
                                                                    detector.anchor_generator.strides,
                                                                    strict=True)),
            "anchors / location": detector.anchor_generator.num_anchors_per_location()[0],
            "anchors / image": _anchors_per_image(detector),
            "parameters": sum(p.numel() for p in detector.parameters()),
            "steps": entry["steps"],
            **{key: coco[key] for key in ("AP", "AP50", "APs", "APm")},
        }  # fmt: skip
    fpn_title, single_title = MODELS
    resamples = ctx.pick(20, 200)
    gains = {
        key: bootstrap_ap_gain(found[single_title], found[fpn_title], val, resamples, ctx.seed, key)
        for key in ("APs", "AP")
    }
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3))
    keys = ("AP", "APs", "APm")
    for offset, title in ((-0.2, fpn_title), (0.2, single_title)):
        axis.bar(
            [i + offset for i in range(len(keys))], [rows[title][k] for k in keys], width=0.4, label=title
        )
    axis.set_xticks(range(len(keys)), ["AP", "AP_small", "AP_medium"])
    axis.set_ylabel("COCO AP")
    axis.legend(fontsize=8)
    axis.set_title(f"RetinaNet, {rows[fpn_title]['steps']} steps each", fontsize=9)
    figure.tight_layout()
    ctx.figure(figure, "ap_by_size", "The same training steps for each: COCO AP by object size.")
    return Findings(
        verdicts=judge_pyramid(rows, gains),
        tables=[
            Table.of(
                f"RetinaNet with and without the pyramid: same recipe, seed and steps; {len(val)} shapes "
                "validation images (COCO: small < 32² px; no object is large)",
                [{"model": title, **row} for title, row in rows.items()],
            ),
            Table.of(
                f"Gain FPN − single level, paired bootstrap over the validation images ({resamples} "
                "resamples)",
                [{"metric": key, **gain} for key, gain in gains.items()],
            ),
        ],
        numbers={
            **{f"{t}/{k}": float(v) for t, r in rows.items() for k, v in r.items() if not isinstance(v, str)},
            **{f"gain_{key}_{end}": gain[end] for key, gain in gains.items() for end in ("low", "high")},
        },
        notes=[size_note(rows[fpn_title], rows[single_title])],
    )


def size_note(fpn: dict[str, float], single: dict[str, float]) -> str:
    """Whether the AP gap of FPN over the single level is specific to small objects: the AP_medium gain
    set against the AP_small gain (a gap at least half as large on medium objects: not specific)."""
    small, medium = fpn["APs"] - single["APs"], fpn["APm"] - single["APm"]
    specific = medium < small / 2
    return f"AP_small gain {small:+.3f}, AP_medium gain {medium:+.3f}: " + (
        "the gap is mostly on small objects."
        if specific
        else "the single stride-32 level (4×4 cells on a 128-px image) also loses on medium objects, so "
        "the gap is not specific to small ones at this budget."
    )
