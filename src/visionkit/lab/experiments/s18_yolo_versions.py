"""§18 YOLOv2 vs YOLOv3: the built models' scales, anchors and top-down fusion, and small-object AP.

The architecture claims are read off the built models (``yolov3_plain`` / ``yolov2_plain``, the ``shapes``
demo sizes of the papers' designs): the output grids of a 416² input, the anchor table of each, and how the
upsampled coarse map meets the finer backbone map — observed with forward hooks on the neck (the tensor the
next convolution set receives is compared with ``cat([up, finer])`` and with ``up + finer``), not read from
a setting. The small-object claim is measured: both detectors train through the detection task
(:func:`visionkit.engine.detect.train_detector`, one thread, the **same wall-clock budget**, objectness prior
0.01 as in ``benchmarks/RESULTS.md``) and their COCO AP_small on the same validation images is compared with a
paired-bootstrap 95 % interval (:func:`visionkit.lab.demo.bootstrap_ap_gain`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from visionkit.data.shapes import SHAPE_CLASSES, ShapesDataset
from visionkit.engine.detect import DetectRecipe, evaluate_predictions, load_detector, predict, train_detector
from visionkit.lab.demo import bootstrap_ap_gain
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model

SCALES = Claim(
    "§18",
    "v2只有一个detection，v3一下变成了3个，分别是一个下采样的，feature map为13*13",
    "v2 has one detection output, v3 three: one downsampled to a 13×13 feature map (and 26×26, 52×52)",
    kind="fact",
)
ELTWISE_SUM = Claim(
    "§18",
    "还有2个上采样的eltwise sum",
    "and two upsampled ones joined by an element-wise sum",
    kind="fact",
)
ANCHORS = Claim(
    "§18",
    "anchor的数量由5个变为3个",
    "the number of anchors went from 5 to 3",
    kind="fact",
)
SMALL = Claim(
    "§18",
    "这应该是对小目标影响最大的地方",
    "this (three scales, down to 52×52) should be where small objects gain the most",
)
MODELS = {"YOLOv2": "yolov2_plain", "YOLOv3": "yolov3_plain"}


@torch.no_grad()
def observe_fusion(model: Any, size: int = 128) -> dict[str, Any]:
    """How the first upsampled map joins the finer backbone map in ``model``'s YOLOv3 neck, observed.

    Hooks record the coarse level's lateral output and the input of the next convolution set; the fusion is
    ``"concatenation"`` if that input is exactly ``cat([upsample(lateral), finer])``, ``"sum"`` if it is
    exactly ``upsample(lateral) + finer``, else ``"other"``. Returns the kind and the channel counts.
    """
    neck, seen = model.neck, {}
    hooks = [
        neck.laterals[0].register_forward_hook(lambda _m, _i, out: seen.setdefault("lateral", out)),
        neck.sets[1].register_forward_pre_hook(lambda _m, inputs: seen.setdefault("joined", inputs[0])),
        model.backbone.register_forward_hook(lambda _m, _i, out: seen.setdefault("backbone", out)),
    ]
    try:
        model.eval()
        batch, _ = model.preprocess([torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))])
        model.extract_features(batch)
    finally:
        for hook in hooks:
            hook.remove()
    finer = seen["backbone"][neck.in_names[-2]]
    up = F.interpolate(seen["lateral"], size=finer.shape[-2:], mode="nearest")
    joined = seen["joined"]
    if joined.shape[1] == up.shape[1] + finer.shape[1] and torch.equal(joined, torch.cat([up, finer], 1)):
        kind = "concatenation"
    elif joined.shape == finer.shape and torch.equal(joined, up + finer):
        kind = "sum"
    else:
        kind = "other"
    return {"kind": kind, "upsampled": up.shape[1], "finer": finer.shape[1], "joined": joined.shape[1]}


@torch.no_grad()
def architecture(name: str, size: int = 416) -> dict[str, Any]:
    """Output grids (of a ``size``² input), anchors in all and per output of the built model ``name``."""
    model = create_model(name, num_classes=len(SHAPE_CLASSES)).eval()
    batch, _ = model.preprocess([torch.zeros(3, size, size)])
    features = model.extract_features(batch)
    grids = [tuple(features[n].shape[-2:]) for n in model.feature_names]
    return {"model": model, "grids": grids, "anchors": int(model.anchors.shape[0]),
            "per_scale": list(model.anchors_per_level)}  # fmt: skip


def judge_architecture(v2: dict[str, Any], v3: dict[str, Any], fusion: dict[str, Any]) -> list[Verdict]:
    """``v2`` / ``v3``: :func:`architecture` (``grids``, ``anchors``, ``per_scale``); ``fusion``:
    :func:`observe_fusion` of the YOLOv3 model."""
    grids = {key: sorted(g[0] for g in arch["grids"]) for key, arch in (("v2", v2), ("v3", v3))}
    text = {key: ", ".join(f"{h}×{w}" for h, w in arch["grids"]) for key, arch in (("v2", v2), ("v3", v3))}
    return [
        judge(
            SCALES,
            "output grids of a 416² input: YOLOv2 one 13×13; YOLOv3 three, 13×13, 26×26 and 52×52",
            f"v2: {text['v2']}; v3: {text['v3']}",
            holds=grids["v2"] == [13] and grids["v3"] == [13, 26, 52],
            correction=f"the built models give v2: {text['v2']}; v3: {text['v3']}",
        ),
        judge(
            ELTWISE_SUM,
            "the input of the convolution set after each upsampling equals upsampled + finer map",
            f"{fusion['kind']}: {fusion['upsampled']} upsampled + {fusion['finer']} finer channels → "
            f"{fusion['joined']}",
            holds=fusion["kind"] == "sum",
            correction="YOLOv3 concatenates the upsampled map with the finer backbone map (channels add up: "
            f"{fusion['upsampled']} + {fusion['finer']} = {fusion['joined']}); an element-wise sum is FPN's",
        ),
        judge(
            ANCHORS,
            "anchors in the built models: YOLOv2 5, YOLOv3 3",
            f"v2: {v2['anchors']} ({'+'.join(map(str, v2['per_scale']))}); v3: {v3['anchors']} "
            f"({'+'.join(map(str, v3['per_scale']))} per scale)",
            holds=v2["anchors"] == 5 and v3["anchors"] == 3,
            correction=f"YOLOv3 has {v3['anchors']} anchors, {v3['per_scale'][0]} per scale at "
            f"{len(v3['per_scale'])} scales; YOLOv2 {v2['anchors']} at its one scale — 3 is the per-scale "
            "count",
        ),
    ]


def judge_small(rows: dict[str, dict[str, float]], gain: dict[str, float]) -> Verdict:
    """``rows``: title → COCO numbers; ``gain``: paired interval of AP_small(v3) − AP_small(v2)."""
    v2, v3 = rows["YOLOv2"], rows["YOLOv3"]
    return judge(
        SMALL,
        "YOLOv3 AP_small above YOLOv2's at the same training time, paired-bootstrap 95 % interval above 0",
        f"{v3['APs'] - v2['APs']:+.4f} (95 % CI {gain['low']:+.4f} … {gain['high']:+.4f})",
        holds=gain["low"] > 0,
    )


def train_both(ctx: LabContext, folder: Path) -> dict[str, Any]:
    """Train YOLOv2 and YOLOv3 with the same recipe and wall-clock budget; their detectors and steps."""
    trained = {}
    for title, model in MODELS.items():
        recipe = DetectRecipe(
            model=model, num_train=ctx.pick(8, 512), num_val=ctx.pick(4, 16), batch_size=ctx.pick(4, 8),
            epochs=ctx.pick(1, 1000), time_limit=ctx.pick(0.0, 35.0), eval_every=1000, seed=ctx.seed,
            threads=1, progress=False, tensorboard=False, warmup_steps=ctx.pick(1, 50),
            objectness_prior=0.01,
        )  # fmt: skip
        run = folder / model
        metrics = train_detector(recipe, run, log=lambda _: None)
        trained[title] = {"detector": load_detector(run / "model.pt")[0], "steps": metrics["steps"]}
    return trained


@register("yolo-v2-vs-v3", "§18", "YOLOv2 vs YOLOv3: scales, anchors, fusion, small objects", errata=True)
def yolo_versions(ctx: LabContext) -> Findings:
    v2, v3 = architecture(MODELS["YOLOv2"]), architecture(MODELS["YOLOv3"])
    fusion = observe_fusion(v3["model"])
    val = ShapesDataset(ctx.pick(4, 96), seed=ctx.seed + 1000)
    images, targets = [val[i][0] for i in range(len(val))], [val[i][1] for i in range(len(val))]
    with tempfile.TemporaryDirectory() as folder:
        trained = train_both(ctx, Path(folder))
    found, rows = {}, {}
    for title, entry in trained.items():
        found[title] = predict(entry["detector"], images)
        coco = evaluate_predictions(found[title], targets, len(SHAPE_CLASSES)).coco.as_dict()
        rows[title] = {"steps": float(entry["steps"]),
                       **{k: coco[k] for k in ("AP", "AP50", "APs", "APm")}}  # fmt: skip
    gain = bootstrap_ap_gain(found["YOLOv2"], found["YOLOv3"], val, ctx.pick(20, 200), ctx.seed, "APs")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3))
    keys = ("AP", "APs", "APm")
    for offset, title in ((-0.2, "YOLOv2"), (0.2, "YOLOv3")):
        axis.bar(
            [i + offset for i in range(len(keys))], [rows[title][k] for k in keys], width=0.4, label=title
        )
    axis.set_xticks(range(len(keys)), keys)
    axis.set_ylabel("COCO AP")
    axis.legend()
    figure.tight_layout()
    ctx.figure(figure, "ap_by_size", "The same training time for each: COCO AP by object size.")
    arch_rows = [
        {"model": title, "grids (416² input)": ", ".join(f"{h}×{w}" for h, w in a["grids"]),
         "anchors": a["anchors"], "per output": "+".join(map(str, a["per_scale"]))}
        for title, a in (("YOLOv2", v2), ("YOLOv3", v3))
    ]  # fmt: skip
    return Findings(
        verdicts=[*judge_architecture(v2, v3, fusion), judge_small(rows, gain)],
        tables=[
            Table.of("The built models", arch_rows),
            Table.of(
                "Same wall-clock training budget, shapes validation images (COCO: small < 32² px; no "
                "object is large)",
                [{"model": t, **r} for t, r in rows.items()],
            ),
        ],
        numbers={
            **{f"{t}/{k}": float(v) for t, r in rows.items() for k, v in r.items()},
            "ap_small_gain_low": gain["low"],
            "ap_small_gain_high": gain["high"],
        },
        notes=[
            f"YOLOv3's neck joins maps by {fusion['kind']} ({fusion['upsampled']} + {fusion['finer']} → "
            f"{fusion['joined']} channels)."
        ],
    )
