"""The main job (``make demo``): train a one-stage and a two-stage detector on ``shapes`` and report.

Steps: generate ``shapes`` (train, validation, and the crowded split), train a small RetinaNet and a small
Faster R-CNN with the engine's :class:`~visionkit.engine.trainer.Trainer`, evaluate both (COCO AP, VOC07
and VOC12 mAP), compare hard NMS with Soft-NMS on the crowded split, time inference, count foreground and
background anchors, then write ``metrics.json``, figures and ``report.html`` into the run folder.

Example:
    >>> metrics = run_demo(DemoSettings.quick(), "runs/demo-quick")  # doctest: +SKIP
    >>> metrics["models"]["retinanet"]["coco"]["AP"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from visionkit.data.shapes import SHAPE_CLASSES, ShapesConfig, ShapesDataset
from visionkit.data.transforms import Compose, RandomHorizontalFlip, collate_detection
from visionkit.engine.hooks import HookBase, LRScheduleHook, ProgressHook
from visionkit.engine.trainer import Trainer
from visionkit.lab.demo_figures import write_figures
from visionkit.lab.detectors import small_faster_rcnn, small_retinanet
from visionkit.lab.report import render_report, report_context
from visionkit.metrics.detection import DetectionMeter
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.ops.sampler import sample_balanced

__all__ = [
    "DemoSettings",
    "bootstrap_ap_gain",
    "count_anchors",
    "evaluate_detector",
    "run_demo",
    "time_inference",
]

MODEL_TITLES = {"retinanet": "RetinaNet (one-stage)", "faster_rcnn": "Faster R-CNN (two-stage)"}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and budgets of the demo (the defaults take about 9 minutes on 2 quiet CPU cores; limit 15).

    ``num_crowded_train`` and ``retinanet_steps`` give RetinaNet enough crowded scenes to learn them
    (crowded COCO AP about 0.30 → 0.46 against 256 images and 900 steps); ``soft_nms_sigma`` was chosen on
    a separate crowded *tuning* split (seed + 3000), never on the crowded validation split the demo reports
    (benchmarks/RESULTS.md, "Demo"). ``bootstrap_resamples`` paired resamples of the crowded images give
    the 95% interval of the Soft-NMS gain."""

    image_size: int = 128
    num_train: int = 512
    num_crowded_train: int = 768
    num_val: int = 128
    num_crowded_val: int = 64
    batch_size: int = 8
    retinanet_steps: int = 2400
    faster_rcnn_steps: int = 150
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    fpn_channels: int = 64
    head_convs: int = 2
    representation_size: int = 128
    box_batch_size_per_image: int = 64
    speed_images: int = 32
    anchor_images: int = 64
    grid_images: int = 8
    soft_nms_sigma: float = 1.0
    bootstrap_resamples: int = 200
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoSettings:
        """A tiny run (a few images, 2 steps per model) that checks the whole pipeline in seconds."""
        return cls(num_train=4, num_crowded_train=2, num_val=4, num_crowded_val=2, batch_size=2,
                   retinanet_steps=2, faster_rcnn_steps=2, warmup_steps=1, speed_images=2, anchor_images=2,
                   grid_images=4, bootstrap_resamples=10)  # fmt: skip


def make_datasets(settings: DemoSettings) -> dict[str, Any]:
    """``train`` (ordinary + crowded images, flipped at random), ``val`` and ``crowded`` (validation)."""
    size = settings.image_size
    scale = size / 128
    ordinary = ShapesConfig(image_size=size, min_size=max(4, round(16 * scale)), max_size=round(48 * scale))
    crowded = ShapesConfig.crowded_preset(size)
    flip = Compose([RandomHorizontalFlip(0.5)])
    train: ConcatDataset = ConcatDataset([
        ShapesDataset(settings.num_train, seed=settings.seed, config=ordinary, transforms=flip),
        ShapesDataset(settings.num_crowded_train, seed=settings.seed + 1, config=crowded, transforms=flip),
    ])  # fmt: skip
    return {
        "train": train,
        "val": ShapesDataset(settings.num_val, seed=settings.seed + 1000, config=ordinary),
        "crowded": ShapesDataset(settings.num_crowded_val, seed=settings.seed + 2000, config=crowded),
    }


class _DetectorStep(nn.Module):
    """The trainer's loss contract for detectors: ``step((images, targets)) -> dict of losses``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        images, targets = batch
        return self.detector(images, targets)


class StepLog(HookBase):
    """Record every step's loss terms, their total and the learning rate (the training-curve data)."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def after_step(self) -> None:
        trainer = self.trainer
        losses = dict(trainer.last_losses)
        self.records.append({"step": float(trainer.step), **losses, "loss": sum(losses.values()),
                             "lr": float(trainer.optimizer.param_groups[0]["lr"])})  # fmt: skip


def train_detector(
    detector: nn.Module, dataset: Any, settings: DemoSettings, steps: int, progress: bool
) -> tuple[list[dict[str, float]], float]:
    """Train ``steps`` AdamW steps with warm-up + cosine; returns the per-step log and the seconds taken."""
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, collate_fn=collate_detection)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, min(settings.warmup_steps, steps // 4))

    def warmup_cosine(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))

    log = StepLog()
    hooks = [LRScheduleHook(torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)), log,
             ProgressHook(progress)]  # fmt: skip
    epochs = math.ceil(steps / len(loader))
    trainer = Trainer(_DetectorStep(detector), optimizer, loader, hooks=hooks, clip_norm=10.0,
                      seed=settings.seed, max_epochs=epochs, max_steps=steps)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    detector.eval()
    return log.records, time.perf_counter() - start


@torch.no_grad()
def predict(detector: nn.Module, dataset: Any, batch_size: int, progress: bool = False) -> list[dict]:
    """Detections of every image of ``dataset`` (eval mode), in order."""
    detector.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection)
    batches = track(loader, description="predict", disable=not progress, transient=True)
    return [detection for images, _ in batches for detection in detector(images)]


def evaluate_detector(predictions: list[dict], dataset: Any) -> dict[str, Any]:
    """COCO (all numbers + the result object), VOC07 and VOC12 mAP of ``predictions`` on ``dataset``."""
    targets = [dataset[index][1] for index in range(len(dataset))]
    results = {}
    for metric in ("coco", "voc07", "voc12"):
        meter = DetectionMeter(metric, num_classes=len(SHAPE_CLASSES))
        meter.update(predictions, targets)
        results[metric] = meter.compute()
    return results


def time_inference(detector: nn.Module, dataset: Any, count: int) -> float:
    """Median milliseconds per image (batch of 1, eval mode, after one warm-up image)."""
    detector.eval()
    times = []
    with torch.no_grad():
        for index in range(-1, min(count, len(dataset))):
            image = dataset[max(index, 0)][0]
            start = time.perf_counter()
            detector([image])
            if index >= 0:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _anchor_levels(detector: Any, image_size: int) -> tuple[Callable[[], torch.Tensor], Matcher, str]:
    """A function image -> anchors, the matcher and the stage name, for either detector."""
    batch = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        if hasattr(detector, "rpn"):
            pyramid = detector.neck(detector.backbone(batch))
            levels = [pyramid[name] for name in detector.rpn_feature_names]
            return (lambda: detector.rpn.anchor_generator(batch, levels)[0]), detector.rpn.matcher, "rpn"
        levels = detector.features(batch)
        return (lambda: detector.anchor_generator(batch, levels)[0]), detector.matcher, "retinanet"


def count_anchors(detector: Any, dataset: Any, count: int, image_size: int) -> list[dict[str, Any]]:
    """Foreground / background / ignored anchors over ``count`` training images, as each detector's
    matcher labels them; for the RPN also what its balanced sampler keeps (the two-stage filter)."""
    make_anchors, matcher, stage = _anchor_levels(detector, image_size)
    anchors = make_anchors()
    totals = {"foreground": 0, "background": 0, "ignored": 0, "sampled fg": 0, "sampled bg": 0}
    images = min(count, len(dataset))
    for index in range(images):
        boxes = dataset[index][1]["boxes"]
        matches = matcher(box_iou(boxes, anchors))
        totals["foreground"] += int((matches >= 0).sum())
        totals["background"] += int((matches == Matcher.BELOW_LOW_THRESHOLD).sum())
        totals["ignored"] += int((matches == Matcher.BETWEEN_THRESHOLDS).sum())
        if stage == "rpn":
            rpn = detector.rpn
            positive, negative = sample_balanced(matches, rpn.batch_size_per_image, rpn.positive_fraction)
            totals["sampled fg"] += int(positive.numel() if positive.dtype != torch.bool else positive.sum())
            totals["sampled bg"] += int(negative.numel() if negative.dtype != torch.bool else negative.sum())
    title = "RetinaNet: all anchors (focal loss)" if stage == "retinanet" else "Faster R-CNN: RPN anchors"
    rows = [{"model": title, "anchors / image": anchors.shape[0], "foreground": totals["foreground"] / images,
             "background": totals["background"] / images, "ignored": totals["ignored"] / images}]  # fmt: skip
    if stage == "rpn":
        rows.append({"model": "Faster R-CNN: RPN sampled minibatch",
                     "anchors / image": detector.rpn.batch_size_per_image,
                     "foreground": totals["sampled fg"] / images, "background": totals["sampled bg"] / images,
                     "ignored": 0.0})  # fmt: skip
    return rows


def _suppressor(detector: Any) -> Any:
    """The module holding a detector's final suppression settings (Faster R-CNN: its RoI heads)."""
    return detector.roi_heads if hasattr(detector, "roi_heads") else detector


def set_nms(detector: Any, method: str, sigma: float | None = None) -> None:
    """Switch a detector's final suppression between ``"hard"``, ``"soft_linear"`` and ``"soft_gaussian"``
    (and set the Gaussian Soft-NMS ``sigma`` when given)."""
    head = _suppressor(detector)
    head.nms_method = method
    if sigma is not None:
        head.soft_nms_sigma = sigma


def bootstrap_ap_gain(
    baseline: list[dict], candidate: list[dict], dataset: Any, resamples: int, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap of ``COCO AP(candidate) - COCO AP(baseline)`` over the images of ``dataset``.

    Each resample draws ``len(dataset)`` images with replacement and scores both prediction lists on the
    same draw, so the interval reflects which images the split happens to contain (not training noise).

    Returns:
        ``{"low": 2.5th, "high": 97.5th percentile, "below_zero": fraction of resamples with gain <= 0}``.

    Example:
        >>> interval = bootstrap_ap_gain(hard, soft, crowded, resamples=200)  # doctest: +SKIP
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not len(baseline) == len(candidate) == len(dataset):
        raise ValueError(f"need one prediction per image: baseline {len(baseline)}, candidate "
                         f"{len(candidate)}, dataset {len(dataset)}")  # fmt: skip
    # resampled images repeat, so the targets are matched by position, not by image_id
    targets = [{k: v for k, v in dataset[i][1].items() if k != "image_id"} for i in range(len(dataset))]
    generator = np.random.default_rng(seed)
    gains = []
    for _ in range(resamples):
        draw = generator.integers(0, len(dataset), len(dataset))
        drawn = [targets[i] for i in draw]
        scores = [evaluate_coco([predictions[i] for i in draw], drawn, num_classes=len(SHAPE_CLASSES))
                  for predictions in (baseline, candidate)]  # fmt: skip
        gains.append(scores[1].as_dict()["AP"] - scores[0].as_dict()["AP"])
    values = np.asarray(gains)
    low, high = np.percentile(values, [2.5, 97.5])
    return {"low": float(low), "high": float(high), "below_zero": float((values <= 0).mean())}


def _build(key: str, settings: DemoSettings) -> nn.Module:
    torch.manual_seed(settings.seed)
    if key == "retinanet":
        return small_retinanet(len(SHAPE_CLASSES), widths=settings.widths, fpn_channels=settings.fpn_channels,
                               head_convs=settings.head_convs)  # fmt: skip
    return small_faster_rcnn(len(SHAPE_CLASSES), widths=settings.widths, fpn_channels=settings.fpn_channels,
                             representation_size=settings.representation_size,
                             box_batch_size_per_image=settings.box_batch_size_per_image)  # fmt: skip


def _per_class(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-class rows; metrics name classes by label index, so names come from ``SHAPE_CLASSES``."""
    voc07, voc12 = results["voc07"].per_class(), results["voc12"].per_class()
    return [
        {"class": SHAPE_CLASSES[k], "ground truth": row["num_gt"], "COCO AP": row["AP"], "AP50": row["AP50"],
         "AP75": row["AP75"], "VOC07 AP": v07["AP"], "VOC12 AP": v12["AP"]}
        for k, (row, v07, v12) in enumerate(zip(results["coco"].per_class(), voc07, voc12, strict=True))
    ]  # fmt: skip


def _train_and_evaluate(key: str, settings: DemoSettings, datasets: dict[str, Any], console: Console,
                        progress: bool) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    steps = settings.retinanet_steps if key == "retinanet" else settings.faster_rcnn_steps
    console.rule(f"[bold]{MODEL_TITLES[key]}[/]: training {steps} steps")
    detector = _build(key, settings)
    history, seconds = train_detector(detector, datasets["train"], settings, steps, progress)
    console.print(f"trained in {seconds:.0f} s; evaluating on {len(datasets['val'])} validation images")
    predictions = predict(detector, datasets["val"], settings.batch_size, progress)
    results = evaluate_detector(predictions, datasets["val"])
    model = {
        "title": MODEL_TITLES[key], "parameters": sum(p.numel() for p in detector.parameters()),
        "steps": steps, "train_seconds": seconds, "coco": results["coco"].as_dict(),
        "voc07": results["voc07"].mean_average_precision, "voc12": results["voc12"].mean_average_precision,
        "per_class": _per_class(results),
        "ms_per_image": time_inference(detector, datasets["val"], settings.speed_images),
        "history": history,
    }  # fmt: skip
    return detector, {**model, "_coco_result": results["coco"], "_predictions": predictions}


def _compare_nms(detectors: dict[str, nn.Module], crowded: Any, settings: DemoSettings,
                 progress: bool) -> tuple[list[dict[str, Any]], dict[str, list]]:  # fmt: skip
    rows, kept = [], {}
    plan = [("retinanet", "hard"), ("retinanet", "soft_linear"), ("retinanet", "soft_gaussian"),
            ("faster_rcnn", "hard"), ("faster_rcnn", "soft_gaussian")]  # fmt: skip
    for key, method in plan:
        set_nms(detectors[key], method, settings.soft_nms_sigma)
        head = _suppressor(detectors[key])
        setting = f"σ {head.soft_nms_sigma:g}" if method == "soft_gaussian" else f"IoU {head.nms_threshold:g}"
        predictions = predict(detectors[key], crowded, settings.batch_size, progress)
        coco = evaluate_detector(predictions, crowded)["coco"].as_dict()
        rows.append({"model": MODEL_TITLES[key], "suppression": method, "setting": setting,
                     "COCO AP": coco["AP"], "AP50": coco["AP50"], "AP75": coco["AP75"],
                     "AR@100": coco["AR100"]})  # fmt: skip
        if key == "retinanet":
            kept[f"{key}/{method}"] = predictions
        set_nms(detectors[key], "hard")
    return rows, kept


def _verdicts(metrics: dict[str, Any], total_seconds: float) -> list[dict[str, Any]]:
    retina = metrics["models"]["retinanet"]
    gain = metrics["soft_nms_gain"]
    return [
        {"claim": "RetinaNet mAP@0.5 (VOC12, all-point) on shapes val", "measured": f"{retina['voc12']:.3f}",
         "target": "≥ 0.90", "passed": retina["voc12"] >= 0.90},
        {"claim": "RetinaNet COCO AP@[.5:.95] on shapes val", "measured": f"{retina['coco']['AP']:.3f}",
         "target": "≥ 0.60", "passed": retina["coco"]["AP"] >= 0.60},
        *({"claim": f"Soft-NMS ({kind}) gain in COCO AP over hard NMS ({metrics['nms'][0]['setting']}) on "
                    "the crowded split (RetinaNet)",
           "measured": f"{gain[kind]['AP']:+.4f} (95% CI {gain[kind]['low']:+.3f}…{gain[kind]['high']:+.3f})",
           "target": "> 0, 95% CI above 0", "passed": gain[kind]["AP"] > 0 and gain[kind]["low"] > 0}
          for kind in ("linear", "gaussian")),
        {"claim": "whole demo wall time", "measured": f"{total_seconds:.0f} s", "target": "≤ 900 s",
         "passed": total_seconds <= 900},
    ]  # fmt: skip


def _gain(soft: dict[str, Any], hard: dict[str, Any]) -> dict[str, float]:
    """Soft-NMS minus hard NMS in COCO AP, AP50, AP75 and AR@100."""
    return {"AP": soft["COCO AP"] - hard["COCO AP"],
            **{name: soft[name] - hard[name] for name in ("AP50", "AP75", "AR@100")}}  # fmt: skip


def run_demo(
    settings: DemoSettings, out_dir: str | Path, *, console: Console | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the main job and write ``metrics.json``, ``report.html`` and ``figures/`` into ``out_dir``.

    Returns:
        The metrics written to ``metrics.json``: ``settings``, ``models`` (per model: COCO numbers, VOC07
        and VOC12 mAP, per-class rows, parameters, training seconds, ms per image, per-step history),
        ``anchors``, ``nms``, ``soft_nms_gain``, ``verdicts``, ``seconds``, ``figures``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console()
    datasets = make_datasets(settings)
    detectors, models = {}, {}
    for key in ("retinanet", "faster_rcnn"):
        detectors[key], models[key] = _train_and_evaluate(key, settings, datasets, console, progress)
    console.rule("anchors, NMS vs Soft-NMS, figures")
    anchors = [row for key in ("retinanet", "faster_rcnn")
               for row in count_anchors(detectors[key], datasets["train"], settings.anchor_images,
                                        settings.image_size)]  # fmt: skip
    nms_rows, crowded_predictions = _compare_nms(detectors, datasets["crowded"], settings, progress)
    hard, linear, gaussian = nms_rows[:3]
    intervals = {kind: bootstrap_ap_gain(crowded_predictions["retinanet/hard"],
                                         crowded_predictions[f"retinanet/soft_{kind}"], datasets["crowded"],
                                         settings.bootstrap_resamples, settings.seed)
                 for kind in ("linear", "gaussian")}  # fmt: skip
    crowded_predictions.pop("retinanet/soft_linear")
    figure_models = {key: {"title": m["title"], "history": m["history"], "coco": m.pop("_coco_result"),
                           "predictions": m.pop("_predictions")} for key, m in models.items()}  # fmt: skip
    figures = write_figures(out, figure_models, datasets["val"], datasets["crowded"], crowded_predictions,
                            settings.grid_images)  # fmt: skip
    for key, model in models.items():
        _write_csv(out / f"{key}_steps.csv", model["history"])
    metrics: dict[str, Any] = {
        "settings": {**asdict(settings), "threads": torch.get_num_threads()},
        "models": models, "anchors": anchors, "nms": nms_rows, "figures": figures,
        "soft_nms_gain": {"linear": {**_gain(linear, hard), **intervals["linear"]},
                          "gaussian": {**_gain(gaussian, hard), **intervals["gaussian"]}},
    }  # fmt: skip
    total = time.perf_counter() - start
    metrics["seconds"] = {"total": total, **{key: m["train_seconds"] for key, m in models.items()}}
    metrics["verdicts"] = _verdicts(metrics, total)
    metrics["subtitle"] = _subtitle(settings, datasets, total)
    metrics["notes"] = NOTES
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=list) + "\n", encoding="utf-8")
    render_report(report_context(metrics), out / "report.html")
    return metrics


def _write_csv(path: Path, records: list[dict[str, float]]) -> None:
    columns = list(dict.fromkeys(key for record in records for key in record))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def _subtitle(settings: DemoSettings, datasets: dict[str, Any], seconds: float) -> str:
    sizes = ", ".join(f"{name} {len(dataset)}" for name, dataset in datasets.items())
    return (f"shapes {settings.image_size}×{settings.image_size} images ({sizes}); "
            f"{torch.get_num_threads()} torch thread(s); whole run {seconds:.0f} s.")  # fmt: skip


NOTES = {
    "speed": "Batch of one image, eval mode, median over the timed images. The one-stage detector runs its "
    "dense heads once; the two-stage detector adds proposal generation, RoI Align and a per-RoI head.",
    "anchors": "Per training image. RetinaNet scores every anchor, so the focal loss must tame an extreme "
    "foreground:background imbalance; Faster R-CNN's RPN sees the same imbalance but trains on a balanced "
    "minibatch (≤ 50% positives), and its RoI head samples again (≤ 25% positives).",
    "nms": "Crowded split: clusters of overlapping same-class shapes. Hard NMS deletes a true object whose "
    "box overlaps a higher-scoring one above the threshold; Soft-NMS only lowers its score, so it can still "
    "be matched at a lower rank (Bodla et al., 2017). The Gaussian σ was chosen on a separate crowded tuning "
    "split, not on this one; the 95% interval of each gain is a paired bootstrap over this split's images.",
}
