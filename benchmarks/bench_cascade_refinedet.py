"""Issue 15: Cascade R-CNN and RefineDet against Faster R-CNN on ``shapes``, refinement made visible.

Reads run folders written by ``visionkit train detect`` (same recipe and wall-clock budget for every model,
see RESULTS.md for the commands; ``--train SECONDS`` trains the missing ones through
:func:`~visionkit.engine.detect.train_detector` with that recipe) and prints Markdown tables:

* every model (RetinaNet, Faster R-CNN, Cascade R-CNN, YOLOv3, RefineDet and its ablations): COCO AP, AP50,
  AP75, AP85, AP90 on the validation images, median ms per image (batch 1), parameters, and the foreground
  : background ratio of what its classifier is trained on (RetinaNet: all anchors; the two-stage models:
  the RPN's proposals at IoU 0.5; RefineDet: the anchors negative filtering passes to the ODM);
  paired-bootstrap 95 % intervals of the AP and AP75 gains over the images;
* Cascade R-CNN per stage: AP with stage 1 only, 1+2, 1+2+3 (boxes of the last stage run, scores averaged
  over the stages run), and the IoU with its ground truth of every RPN proposal with IoU >= 0.5 after 0, 1,
  2, 3 refinements (mean, median, share >= 0.7 / 0.8 / 0.9; a histogram figure with ``--figure``);
* RefineDet: anchors the ODM sees (foreground : background, with and without negative filtering) and the
  IoU of positive anchors before / after the ARM's refinement.

* ``--ablation``: RefineDet's two ablations at an equal number of steps over several training seeds (run
  folders ``refinedet_plain[_nofilter|_norefine]_s<seed>``, ``--ablation-epochs`` trains the missing ones):
  AP, AP50, AP75 and ms/image per run; per seed the paired-bootstrap 95 % interval of the gain of the full
  model over each ablation (all runs scored on the same image draws); pooled over the seeds, the mean gain
  with its bootstrap interval (image sampling) and a t interval over the seeds' gains (training noise);
  ms/image of the same full models with negative filtering switched on and off at inference
  (``--resamples 0``: no intervals).

Usage:
    python benchmarks/bench_cascade_refinedet.py --runs /tmp/cascade_runs --resamples 300 \
        --figure docs/images/cascade_stage_iou.png [--train 280]
    python benchmarks/bench_cascade_refinedet.py --runs /tmp/steps --ablation --seeds 0 1 2 \
        [--ablation-epochs 8] --num-val 512 --resamples 300
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionkit.engine.detect import (
    DetectRecipe,
    build_datasets,
    evaluate_predictions,
    load_detector,
    predict,
    train_detector,
)
from visionkit.lab.demo import bootstrap_ap_gain, time_inference
from visionkit.lab.experiments.frontier_cascade_refinedet import stage_ious as lab_stage_ious
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.models.detectors import ResizedInput
from visionkit.models.detectors.refinedet import filtered, refine
from visionkit.ops import Matcher, box_iou

#: title -> (run folder, model, recipe options)
RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "RetinaNet": ("retinanet_plain_fpn", "retinanet_plain_fpn", {}),
    "Faster R-CNN": ("fasterrcnn_plain_fpn", "fasterrcnn_plain_fpn", {}),
    "Cascade R-CNN": ("cascade_rcnn_plain_fpn", "cascade_rcnn_plain_fpn", {}),
    "YOLOv3": ("yolov3_plain", "yolov3_plain", {}),
    "RefineDet": ("refinedet_plain", "refinedet_plain", {}),
    "RefineDet, ODM from the original anchors": ("refinedet_plain_norefine", "refinedet_plain",
                                                 {"refine_anchors": False}),
    "RefineDet, no negative anchor filtering": ("refinedet_plain_nofilter", "refinedet_plain",
                                                {"negative_filtering": False}),
}  # fmt: skip
GAINS = [("Cascade R-CNN", "Faster R-CNN"), ("RefineDet", "RefineDet, ODM from the original anchors"),
         ("RefineDet", "RefineDet, no negative anchor filtering"), ("RefineDet", "Faster R-CNN"),
         ("RefineDet", "RetinaNet"), ("Cascade R-CNN", "RetinaNet")]  # fmt: skip


#: RefineDet's step-matched ablation: title -> (run folder prefix, recipe options)
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "RefineDet": ("refinedet_plain", {}),
    "no negative anchor filtering": ("refinedet_plain_nofilter", {"negative_filtering": False}),
    "ODM from the original anchors": ("refinedet_plain_norefine", {"refine_anchors": False}),
}
#: t quantiles (0.975) for the interval over n seeds' gains, by n - 1
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def ap_at(result: Any, iou: float) -> float:
    """COCO AP at one IoU threshold (all areas, 100 detections) from the precision array."""
    index = int(np.argmin(np.abs(result.iou_thresholds - iou)))
    values = result.precision[index, :, :, 0, -1]
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def scores(predictions: list, targets: list, num_classes: int) -> dict[str, float]:
    coco = evaluate_predictions(predictions, targets, num_classes).coco
    numbers = coco.as_dict()
    return {"AP": numbers["AP"], "AP50": numbers["AP50"], "AP75": numbers["AP75"], "AP85": ap_at(coco, 0.85),
            "AP90": ap_at(coco, 0.9)}  # fmt: skip


def train_missing(runs: Path, seconds: float) -> None:
    """Train each run of :data:`RUNS` without a ``model.pt``: one recipe, ``seconds`` of training."""
    for folder, model, options in RUNS.values():
        if not (runs / folder / "model.pt").is_file():
            recipe = DetectRecipe(model=model, epochs=100, time_limit=seconds, eval_every=1000, threads=1,
                                  seed=0, progress=False, **options)  # fmt: skip
            train_detector(recipe, runs / folder)


@torch.no_grad()
def foreground_background(model: Any, images: list, targets: list) -> str:
    """``fg : bg`` of what the model's classifier learns from, summed over ``images`` (module docstring)."""
    if hasattr(model, "filter_threshold"):
        counts = refinedet_anchors(model, images, targets)
        fg, bg = ("fg_kept", "bg_kept") if model.negative_filtering else ("fg", "bg")
        return f"1 : {counts[bg] / max(counts[fg], 1):.1f}"
    dense = all(hasattr(model, name) for name in ("anchor_generator", "matcher", "feature_names"))
    if not hasattr(model, "roi_heads") and not dense:
        return "—"  # YOLO: its own assignment, not counted here
    fg = bg = 0
    for image, target in zip(images, targets, strict=True):
        batch, sizes = model.preprocess([image])
        features = model.extract_features(batch)
        if hasattr(model, "roi_heads"):
            boxes = model.proposals(batch, sizes, features)[0][0]
            best = box_iou(target["boxes"], boxes).max(dim=0).values if len(target["boxes"]) else None
            positive = best >= 0.5 if best is not None else torch.zeros(len(boxes), dtype=torch.bool)
            fg, bg = fg + int(positive.sum()), bg + int((~positive).sum())
        else:
            levels = [features[name] for name in model.feature_names]
            matches = model.matcher(box_iou(target["boxes"], model.anchor_generator(batch, levels)[0]))
            fg, bg = fg + int((matches >= 0).sum()), bg + int((matches == Matcher.BELOW_LOW_THRESHOLD).sum())
    return f"1 : {bg / max(fg, 1):.1f}"


def plain(detector: Any) -> Any:
    return detector.detector if isinstance(detector, ResizedInput) else detector


def stage_ious(model: Any, images: list, targets: list) -> list[np.ndarray]:
    """IoU with its ground truth of every proposal with IoU >= 0.5, after 0, 1, 2, ... refinements (the lab's
    frontier experiment measures the same)."""
    return [np.asarray(values) for values in lab_stage_ious(model, images, targets)]


@torch.no_grad()
def refinedet_anchors(model: Any, images: list, targets: list) -> dict[str, float]:
    """What the ODM sees: foreground / background anchors (IoU 0.5 on the anchors the ODM regresses from)
    among all and among those negative filtering keeps (counted also for a model trained without it); mean
    IoU of positive anchors (IoU 0.5 on the original anchors) before and after the ARM's offsets."""
    matcher, counts = Matcher(0.5, 0.5, True), dict.fromkeys(("fg", "bg", "fg_kept", "bg_kept"), 0)
    before, after = [], []
    for image, target in zip(images, targets, strict=True):
        batch, _ = model.preprocess([image])
        objectness, deltas, _, _, anchors = model.outputs(batch, model.extract_features(batch))
        refined = refine(deltas[0], anchors[0])
        keep = ~filtered(objectness[0], model.filter_threshold)
        odm_anchors = refined if model.refine_anchors else anchors[0]  # what this model's ODM regresses from
        matches = matcher(box_iou(target["boxes"], odm_anchors))
        positive = matches >= 0
        counts["fg"] += int(positive.sum())
        counts["bg"] += int((~positive).sum())
        counts["fg_kept"] += int((positive & keep).sum())
        counts["bg_kept"] += int((~positive & keep).sum())
        original = matcher(box_iou(target["boxes"], anchors[0]))
        rows = torch.nonzero(original >= 0).flatten()
        if rows.numel():
            gt = target["boxes"][original[rows]]
            before.append(box_iou(gt, anchors[0][rows]).diagonal().numpy())
            after.append(box_iou(gt, refined[rows]).diagonal().numpy())
    return {**counts, "iou_before": float(np.concatenate(before).mean()),
            "iou_after": float(np.concatenate(after).mean())}  # fmt: skip


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def train_ablation(runs: Path, seeds: list[int], epochs: int) -> None:
    """Train the missing runs of :data:`ABLATIONS` × ``seeds``: ``epochs`` epochs, no time limit."""
    for seed in seeds:
        for folder, options in ABLATIONS.values():
            out = runs / f"{folder}_s{seed}"
            if not (out / "model.pt").is_file():
                recipe = DetectRecipe(model="refinedet_plain", epochs=epochs, eval_every=1000, threads=1,
                                      seed=seed, progress=False, **options)  # fmt: skip
                train_detector(recipe, out)


def paired_draws(predictions: dict[str, list], targets: list, resamples: int, seed: int = 0) -> dict:
    """COCO AP and AP75 of every prediction list on the same ``resamples`` bootstrap draws of the images
    (the draw of :func:`~visionkit.lab.demo.bootstrap_ap_gain`, scored for all runs at once): ``{title:
    {"AP": array[resamples], "AP75": array[resamples]}}``."""
    generator = np.random.default_rng(seed)
    drawn = {title: {"AP": [], "AP75": []} for title in predictions}
    for _ in range(resamples):
        draw = generator.integers(0, len(targets), len(targets))
        chosen = [targets[i] for i in draw]
        for title, values in predictions.items():
            numbers = evaluate_coco([values[i] for i in draw], chosen, num_classes=3).as_dict()
            drawn[title]["AP"].append(numbers["AP"])
            drawn[title]["AP75"].append(numbers["AP75"])
    return {t: {k: np.asarray(v) for k, v in d.items()} for t, d in drawn.items()}


@torch.no_grad()
def filtering_cost(detectors: list, dataset: Any, args: argparse.Namespace) -> list[list[Any]]:
    """ms/image of the same models with negative filtering on and off at inference (timed alternately,
    ``--timing-rounds`` rounds), and the (class, anchor) candidates above the score threshold per image."""
    times: dict[bool, list[float]] = {True: [], False: []}
    counts: dict[bool, list[int]] = {True: [], False: []}
    for _ in range(args.timing_rounds):
        for detector in detectors:
            for switch in (True, False):
                plain(detector).negative_filtering = switch
                times[switch].append(time_inference(detector, dataset, args.timed_images))
    for detector in detectors:
        model = plain(detector)
        for switch in (True, False):
            model.negative_filtering = switch
            for index in range(args.timed_images):
                batch, _ = model.preprocess([dataset[index][0]])
                objectness, _, logits, _, _ = model.outputs(batch, model.extract_features(batch))
                scores = torch.softmax(logits[0].float(), dim=-1)[:, 1:]
                if switch:
                    scores = scores.masked_fill(filtered(objectness[0], model.filter_threshold)[:, None], 0.0)
                counts[switch].append(int((scores > model.postprocess.score_threshold).sum()))
        model.negative_filtering = True
    return [[("on" if s else "off"), f"{np.median(times[s]):.1f}", f"{np.mean(counts[s]):.0f}"]
            for s in (True, False) if times[s]]  # fmt: skip


def ablation_report(args: argparse.Namespace) -> None:
    """RefineDet's ablations at equal steps, several seeds (module docstring)."""
    if args.ablation_epochs > 0:
        train_ablation(args.runs, args.seeds, args.ablation_epochs)
    dataset = build_datasets(DetectRecipe(num_train=1, num_val=args.num_val)).val  # seed 1000: no run's data
    images = [dataset[i][0] for i in range(len(dataset))]
    targets = [{k: v for k, v in dataset[i][1].items() if k != "image_id"} for i in range(len(dataset))]
    predictions, detectors, rows = {}, {}, []
    for seed in args.seeds:
        for title, (folder, _) in ABLATIONS.items():
            path = args.runs / f"{folder}_s{seed}"
            if not (path / "model.pt").is_file():
                continue
            detectors[(title, seed)], _ = load_detector(path / "model.pt")
            predictions[(title, seed)] = predict(detectors[(title, seed)], images)
            metrics = json.loads((path / "metrics.json").read_text())
            numbers = scores(predictions[(title, seed)], targets, 3)
            rows.append([title, seed, metrics["steps"], round(metrics["train_seconds"]), numbers["AP"],
                         numbers["AP50"], numbers["AP75"]])  # fmt: skip
    # ms/image: every model timed in turn, ``--timing-rounds`` rounds; the lowest median (least load)
    timings: dict[Any, list[float]] = {key: [] for key in detectors}
    for _ in range(args.timing_rounds):
        for key, detector in detectors.items():
            timings[key].append(time_inference(detector, dataset, args.timed_images))
    for row, key in zip(rows, detectors, strict=True):
        row.append(f"{min(timings[key]):.1f} ({max(timings[key]):.1f})")
    print(table(["run", "seed", "steps", "train s", "AP", "AP50", "AP75", "ms/image (slowest round)"], rows))
    switched = filtering_cost([detectors[k] for k in detectors if k[0] == "RefineDet"], dataset, args)
    if switched:
        print("\nSame weights (the full models), negative filtering switched at inference only:")
        print(
            table(["filtering", "ms/image (median over models and rounds)", "candidates / image"], switched)
        )
    if args.resamples < 1:
        return
    draws = paired_draws({f"{t}|{s}": p for (t, s), p in predictions.items()}, targets, args.resamples)
    for title in list(ABLATIONS)[1:]:
        seeds = [s for s in args.seeds if (title, s) in predictions and ("RefineDet", s) in predictions]
        if not seeds:
            continue
        lines, pooled = [], {"AP": [], "AP75": []}
        for seed in seeds:
            cells = [f"seed {seed}"]
            for metric in ("AP", "AP75"):
                gain = draws[f"RefineDet|{seed}"][metric] - draws[f"{title}|{seed}"][metric]
                point = (
                    scores(predictions[("RefineDet", seed)], targets, 3)[metric]
                    - scores(predictions[(title, seed)], targets, 3)[metric]
                )
                pooled[metric].append((point, gain))
                low, high = np.percentile(gain, [2.5, 97.5])
                cells.append(f"{point:+.3f} ({low:+.3f} … {high:+.3f})")
            lines.append(cells)
        cells = [f"pooled, {len(seeds)} seeds"]
        for metric in ("AP", "AP75"):
            points = np.asarray([p for p, _ in pooled[metric]])
            mean_draws = np.mean([g for _, g in pooled[metric]], axis=0)
            low, high = np.percentile(mean_draws, [2.5, 97.5])
            text = f"{points.mean():+.3f} ({low:+.3f} … {high:+.3f})"
            if len(points) > 1:
                half = T975.get(len(points) - 1, 1.96) * points.std(ddof=1) / np.sqrt(len(points))
                text += f"; over seeds ±{half:.3f}"
            cells.append(text)
        lines.append(cells)
        print(f"\nRefineDet − {title} (gain, paired-bootstrap 95 % interval, {args.resamples} resamples):")
        print(table(["", "Δ AP", "Δ AP75"], lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder holding the run folders")
    parser.add_argument("--resamples", type=int, default=300)
    parser.add_argument("--timed-images", type=int, default=30)
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the per-stage IoU histograms")
    parser.add_argument("--train", type=float, default=0.0, help="train missing runs for this many seconds")
    parser.add_argument(
        "--ablation", action="store_true", help="RefineDet's step-matched, multi-seed ablation"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablation-epochs", type=int, default=0, help="train missing ablation runs (epochs)")
    parser.add_argument("--num-val", type=int, default=128, help="ablation: validation images (seed 1000)")
    parser.add_argument("--timing-rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.ablation:
        ablation_report(args)
        return
    if args.train > 0:
        train_missing(args.runs, args.train)
    dataset = build_datasets(DetectRecipe(num_train=1)).val  # the validation split every run used
    images = [dataset[i][0] for i in range(len(dataset))]
    targets = [dataset[i][1] for i in range(len(dataset))]
    rows, predictions, models = [], {}, {}
    for title, (folder, _, _) in RUNS.items():
        path = args.runs / folder / "model.pt"
        if not path.is_file():
            continue
        detector, label_map = load_detector(path)
        metrics = json.loads((args.runs / folder / "metrics.json").read_text())
        predictions[title], models[title] = predict(detector, images), plain(detector)
        numbers = scores(predictions[title], targets, len(label_map.names))
        rows.append([title, metrics["steps"], round(metrics["train_seconds"]), *numbers.values(),
                     round(time_inference(detector, dataset, args.timed_images), 1),
                     f"{metrics['parameters'] / 1e6:.2f} M",
                     foreground_background(models[title], images, targets)])  # fmt: skip
    header = [
        "model",
        "steps",
        "train s",
        "AP",
        "AP50",
        "AP75",
        "AP85",
        "AP90",
        "ms/image",
        "params",
        "fg : bg",
    ]
    print(table(header, rows))
    gains = []
    for candidate, baseline in GAINS:
        if candidate in predictions and baseline in predictions:
            for metric in ("AP", "AP75"):
                interval = bootstrap_ap_gain(predictions[baseline], predictions[candidate], dataset,
                                             args.resamples, metric=metric)  # fmt: skip
                gains.append([f"{candidate} − {baseline}", metric, interval["low"], interval["high"]])
    print("\n" + table(["comparison", "metric", "95% low", "95% high"], gains))
    if "Cascade R-CNN" in models:
        cascade_report(models["Cascade R-CNN"], images, targets, args.figure)
    for title in [t for t in models if t.startswith("RefineDet")]:
        print(f"\n{title}: {refinedet_line(refinedet_anchors(models[title], images, targets))}")


def cascade_report(model: Any, images: list, targets: list, figure: Path | None) -> None:
    """Per-stage AP (stages 1..n run) and the IoU of the refined proposals with their ground truth."""
    rows = []
    for stages in (1, 2, 3):
        model.roi_heads.test_stages = stages
        rows.append([f"stages 1..{stages}", *scores(predict(model, images), targets, 3).values()])
    model.roi_heads.test_stages = 0
    print("\n" + table(["Cascade R-CNN", "AP", "AP50", "AP75", "AP85", "AP90"], rows))
    ious = stage_ious(model, images, targets)
    rows = []
    for name, v in zip(["proposals", "stage 1", "stage 2", "stage 3"], ious, strict=False):
        shares = [float((v >= level).mean()) for level in (0.7, 0.8, 0.9)]
        rows.append([name, len(v), float(v.mean()), float(np.median(v)), *shares])
    print("\n" + table(["boxes", "n", "mean IoU", "median", ">= 0.7", ">= 0.8", ">= 0.9"], rows))
    if figure:
        save_figure(ious, figure)


def refinedet_line(n: dict[str, float]) -> str:
    ratio, kept = n["bg"] / max(n["fg"], 1), n["bg_kept"] / max(n["fg_kept"], 1)
    return (
        f"ODM anchors fg:bg {n['fg']}:{n['bg']} (1:{ratio:.1f}); kept by negative filtering "
        f"{n['fg_kept']}:{n['bg_kept']} (1:{kept:.2f}); mean IoU of positive anchors with their object "
        f"{n['iou_before']:.3f}, refined by the ARM {n['iou_after']:.3f}"
    )


def save_figure(ious: list[np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0.5, 1.0, 26)
    for name, values in zip(["RPN proposals", "stage 1", "stage 2", "stage 3"], ious, strict=False):
        axis.hist(
            values, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (mean {values.mean():.3f})"
        )
    axis.set_xlabel("IoU with the ground-truth box")
    axis.set_ylabel("boxes")
    axis.set_title("Cascade R-CNN on shapes: box quality stage by stage")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
