"""``visionkit eval``: score a COCO results file against COCO ground truth (COCO, VOC07 or VOC12 AP).

``visionkit eval DETECTIONS --gt GT`` scores a results file; ``visionkit eval detect weights=...`` runs a
trained detector on a dataset first (:mod:`visionkit.cli.eval_detect`); ``visionkit eval segment
weights=...`` a trained segmenter (:mod:`visionkit.cli.eval_segment`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from visionkit.cli.eval_detect import detect
from visionkit.cli.eval_segment import segment

__all__ = ["EvalGroup", "evaluate", "evaluate_file", "run_evaluation"]


def run_evaluation(detections: str, ground_truth: str, metric: str, iou: float) -> tuple[Any, dict[str, Any]]:
    """Load both files and evaluate; returns the result object and a JSON-ready report.

    Raises:
        ValueError: for missing or malformed files, unknown ids, NaN values (the message names the file).
    """
    from visionkit.metrics.detection.coco import evaluate_coco_sets
    from visionkit.metrics.detection.io import load_coco_ground_truth, load_coco_results
    from visionkit.metrics.detection.voc import evaluate_voc_sets

    gt = load_coco_ground_truth(ground_truth)
    dets = load_coco_results(detections, gt)
    report: dict[str, Any] = {
        "metric": metric,
        "ground_truth": ground_truth,
        "detections": detections,
        "num_images": len(gt.image_ids),
        "num_ground_truth": len(gt.image),
        "num_detections": len(dets.image),
    }
    result: Any
    if metric == "coco":
        result = evaluate_coco_sets(gt, dets)
        report["stats"] = result.as_dict()
        report["per_class"] = result.per_class()
        report["num_classes_without_ground_truth"] = result.num_classes_without_ground_truth
        return result, report
    # VOC has no crowd notion: crowd regions are treated like VOC "difficult" objects (ignored)
    gt = dataclasses.replace(gt, difficult=gt.difficult | gt.iscrowd)
    interpolation = "11point" if metric == "voc07" else "all"
    result = evaluate_voc_sets(gt, dets, iou_threshold=iou, interpolation=interpolation)
    report["iou_threshold"] = iou
    report["mAP"] = result.mean_average_precision
    report["per_class"] = result.per_class()
    report["num_classes_without_ground_truth"] = result.num_classes_without_ground_truth
    return result, report


def _print_tables(result: Any, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{report['metric']}: {report['num_images']} images, {report['num_ground_truth']} ground truths, "
        f"{report['num_detections']} detections"
    )
    summary = Table(title="summary")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    if report["metric"] == "coco":
        for name, value in report["stats"].items():
            summary.add_row(name, f"{value:.4f}")
    else:
        summary.add_row(f"mAP@{report['iou_threshold']}", f"{report['mAP']:.4f}")
    console.print(summary)
    per_class = Table(title="per class (−1: no ground truth)")
    keys = (
        ["name", "num_gt", "AP", "AP50", "AP75", "AR"]
        if report["metric"] == "coco"
        else ["name", "num_gt", "num_det", "AP"]
    )
    for key in keys:
        per_class.add_column(key, justify="left" if key == "name" else "right")
    for row in report["per_class"]:
        per_class.add_row(*[f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys])
    console.print(per_class)
    if report["num_classes_without_ground_truth"]:
        console.print(
            f"{report['num_classes_without_ground_truth']} classes have no ground truth (−1, left out "
            "of the means)"
        )


def _plot(result: Any, metric: str, iou: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5))
    if metric == "coco":
        for k in range(len(result.category_ids)):
            recall_points, curve = result.pr_curve(category=k, iou_threshold=iou)
            if (curve > -1).all():
                axis.plot(recall_points, curve, color="0.8", linewidth=0.7)
        recall_points, mean = result.pr_curve(iou_threshold=iou)
        axis.plot(recall_points, mean, color="C0", linewidth=2, label=f"mean over classes, IoU={iou}")
    else:
        for k, (precision, recall) in enumerate(zip(result.precision, result.recall, strict=True)):
            if result.average_precision[k] > -1 and len(recall):
                axis.plot(
                    recall,
                    precision,
                    linewidth=1,
                    label=f"{result.category_names[k]} AP={result.average_precision[k]:.3f}"
                    if k < 10
                    else None,
                )
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"PR curves ({metric})")
    axis.legend(loc="lower left", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@click.command("file", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("detections", type=click.Path(dir_okay=False))
@click.option(
    "--gt",
    "ground_truth",
    required=True,
    type=click.Path(dir_okay=False),
    help="COCO ground-truth JSON (instances_*.json).",
)
@click.option(
    "--metric",
    type=click.Choice(["coco", "voc07", "voc12"]),
    default="coco",
    show_default=True,
    help="coco: AP@[.5:.95] etc.; voc07: 11-point AP; voc12: all-point AP.",
)
@click.option(
    "--iou",
    type=float,
    default=0.5,
    show_default=True,
    help="IoU threshold of the VOC metrics and of the COCO PR-curve plot.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write the numbers to this JSON file."
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), help="Write precision-recall curves (PNG)."
)
def evaluate_file(
    detections: str, ground_truth: str, metric: str, iou: float, json_path: str | None, plot_path: str | None
) -> None:
    """Evaluate DETECTIONS (a COCO results JSON list) against --gt ground truth."""
    if not 0.0 < iou < 1.0:
        raise click.BadParameter(f"must be in (0, 1), got {iou}", param_hint="--iou")
    from visionkit.cli.paths import output_file

    output_file(json_path, "--json")
    output_file(plot_path, "--plot")
    try:
        result, report = run_evaluation(detections, ground_truth, metric, iou)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    _print_tables(result, report)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2), encoding="utf-8")
        click.echo(f"wrote {json_path}")
    if plot_path:
        try:
            _plot(result, metric, iou, Path(plot_path))
        except ValueError as error:
            raise click.ClickException(str(error)) from error
        click.echo(f"wrote {plot_path}")


class EvalGroup(click.Group):
    """``eval`` with subcommands, where a first argument that names no subcommand means ``eval file``."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["file", *args]
        return super().resolve_command(ctx, args)


@click.group("eval", cls=EvalGroup, context_settings={"help_option_names": ["-h", "--help"]})
def evaluate() -> None:
    """Evaluate detections: a COCO results file (`eval DETECTIONS --gt GT`) or a trained detector
    (`eval detect weights=RUN/model.pt [data=...]`); or a trained segmenter (`eval segment weights=...`)."""


evaluate.add_command(evaluate_file)
evaluate.add_command(detect)
evaluate.add_command(segment)
