"""``visionkit demo``: the main job (what ``make demo`` runs), printed as tables, written as a report.

Example::

    visionkit demo --out runs/demo            # about 9 minutes on 2 quiet CPU cores (limit 15)
    visionkit demo --quick --out /tmp/demo    # seconds: a few images, 2 steps per model
    visionkit demo --nms-only                 # only the ops-level NMS vs soft-NMS table
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

__all__ = ["demo"]


def _table(title: str, rows: Sequence[dict[str, Any]], digits: int = 3, caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        cells = [row.get(column, "") for column in columns]
        table.add_row(*(f"{cell:.{digits}f}" if isinstance(cell, float) else str(cell) for cell in cells))
    return table


def _print_nms_scene(console: Console, num_boxes: int, seed: int, iou_threshold: float) -> None:
    from visionkit.lab.nms_scene import compare_suppression, make_crowded_boxes

    boxes, scores, objects = make_crowded_boxes(num_boxes, seed)
    console.print(
        f"[bold]NMS vs soft-NMS[/bold] on {num_boxes} boxes around {objects.shape[0]} objects "
        f"(seed {seed}, 1333×800 image)"
    )
    rows = compare_suppression(boxes, scores, objects, iou_threshold)
    console.print(_table("§8 post-processing", rows, digits=1,
                         caption="objects found: IoU ≥ 0.5 with one of the top-M kept boxes"))  # fmt: skip


def _print_results(console: Console, metrics: dict[str, Any]) -> None:
    models = metrics["models"].values()
    accuracy = [{"model": m["title"], "COCO AP": m["coco"]["AP"], "AP50": m["coco"]["AP50"],
                 "AP75": m["coco"]["AP75"], "VOC07 mAP": m["voc07"], "VOC12 mAP": m["voc12"]}
                for m in models]  # fmt: skip
    console.print(_table("Validation accuracy (shapes val)", accuracy))
    speed = [{"model": m["title"], "parameters": f"{m['parameters']:,}", "ms / image": m["ms_per_image"],
              "train s": m["train_seconds"], "steps": m["steps"], "COCO AP": f"{m['coco']['AP']:.3f}"}
             for m in models]  # fmt: skip
    console.print(_table("One-stage vs two-stage (§16)", speed, digits=1))
    anchors = [{**row, "fg : bg": f"1 : {row['background'] / max(row['foreground'], 1e-9):,.0f}"}
               for row in metrics["anchors"]]  # fmt: skip
    console.print(_table("Foreground : background anchors per training image", anchors, digits=1))
    console.print(_table("NMS vs Soft-NMS on the crowded split (§8)", metrics["nms"]))
    verdicts = [{"claim": v["claim"], "measured": v["measured"], "target": v["target"],
                 "verdict": "[green]met[/]" if v["passed"] else "[red]not met[/]"}
                for v in metrics["verdicts"]]  # fmt: skip
    console.print(_table("Targets", verdicts))


@click.command("demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Run folder: report.html, metrics.json, figures/.")  # fmt: skip
@click.option(
    "--quick", is_flag=True, help="A tiny run (few images, 2 steps per model) to check the pipeline."
)
@click.option(
    "--threads", type=click.IntRange(1, 256), default=None, help="torch CPU threads (default: torch's)."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--nms-only", is_flag=True, help="Only the NMS vs soft-NMS table on a generated scene.")
@click.option("--num-boxes", default=5000, show_default=True, type=click.IntRange(1, 200_000),
              help="Boxes in the generated NMS scene.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated NMS scene.")
@click.option("--iou-threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Hard-NMS IoU threshold in the generated NMS scene.")  # fmt: skip
def demo(out: Path, quick: bool, threads: int | None, no_progress: bool, nms_only: bool, num_boxes: int,
         seed: int, iou_threshold: float) -> None:  # fmt: skip
    """Train RetinaNet and Faster R-CNN on shapes, evaluate (COCO, VOC07, VOC12), compare NMS with Soft-NMS
    and write OUT/report.html."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    console = Console()
    _print_nms_scene(console, num_boxes, seed, iou_threshold)
    if nms_only:
        return
    from visionkit.lab.demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if quick else DemoSettings()
    start = time.perf_counter()
    metrics = run_demo(settings, out, console=console, progress=not no_progress)
    _print_results(console, metrics)
    console.print(f"report: {out / 'report.html'}  ({time.perf_counter() - start:.0f} s)")
