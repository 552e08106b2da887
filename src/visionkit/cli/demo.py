"""``visionkit demo``: hard NMS against soft-NMS on a crowded, generated scene (interim main job).

A later issue replaces this with the real end-to-end job; for now it exercises the §8 post-processing
on detector-like output: many jittered boxes around each object, uniform scores.
"""

from __future__ import annotations

import math
import time

import click
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from visionkit.ops import box_iou, nms, soft_nms

__all__ = ["demo", "make_crowded_boxes"]


def make_crowded_boxes(
    num_boxes: int,
    seed: int = 0,
    image_size: tuple[int, int] = (800, 1333),
    boxes_per_object: int = 50,
) -> tuple[Tensor, Tensor, Tensor]:
    """Detector-like output around ``num_boxes // boxes_per_object`` objects (deterministic from ``seed``).

    Objects get log-uniform sizes in [16, 160] px at uniform positions; each box jitters its object's
    centre and size by about 10 %, and scores are uniform in [0, 1).

    Returns:
        ``(boxes Tensor[N, 4], scores Tensor[N], objects Tensor[M, 4])``, xyxy float32.
    """
    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    num_objects = max(1, num_boxes // boxes_per_object)
    centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([float(width), float(height)])
    sizes = torch.exp(torch.empty(num_objects, 2).uniform_(math.log(16.0), math.log(160.0), generator=g))
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g) * 0.1)
    centre = centres[owner] + torch.randn(num_boxes, 2, generator=g) * 0.1 * sizes[owner]
    boxes = torch.cat((centre - wh / 2, centre + wh / 2), dim=1)
    objects = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)
    return boxes, torch.rand(num_boxes, generator=g), objects


def _recovered(boxes: Tensor, keep: Tensor, objects: Tensor) -> int:
    """Objects matched (IoU >= 0.5) by one of the top-|objects| kept boxes."""
    top = keep[: objects.shape[0]]
    if top.numel() == 0:
        return 0
    return int((box_iou(objects, boxes[top]).amax(dim=1) >= 0.5).sum())


@click.command("demo")
@click.option("--num-boxes", default=5000, show_default=True, type=click.IntRange(1, 200_000))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--iou-threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1))
def demo(num_boxes: int, seed: int, iou_threshold: float) -> None:
    """Compare hard NMS with linear and gaussian soft-NMS on a crowded generated scene."""
    boxes, scores, objects = make_crowded_boxes(num_boxes, seed)
    console = Console()
    console.print(
        f"[bold]NMS vs soft-NMS[/bold] on {num_boxes} boxes around {objects.shape[0]} objects "
        f"(seed {seed}, 1333×800 image)"
    )
    runs = [
        (f"hard NMS (IoU > {iou_threshold:g})", lambda: (nms(boxes, scores, iou_threshold), None)),
        ("soft-NMS linear (N_t 0.3)", lambda: soft_nms(boxes, scores, "linear", iou_threshold=0.3)),
        ("soft-NMS gaussian (σ 0.5)", lambda: soft_nms(boxes, scores, "gaussian", sigma=0.5)),
    ]
    table = Table(
        title="§8 post-processing", caption="objects found: IoU ≥ 0.5 with one of the top-M kept boxes"
    )
    for column in ("method", "kept", "score ≥ 0.5", "objects found", "ms"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, run in runs:
        start = time.perf_counter()
        keep, decayed = run()
        elapsed = (time.perf_counter() - start) * 1e3
        final = scores[keep] if decayed is None else decayed
        recovered = _recovered(boxes, keep, objects)
        table.add_row(
            name,
            str(keep.numel()),
            str(int((final >= 0.5).sum())),
            f"{recovered}/{objects.shape[0]}",
            f"{elapsed:.1f}",
        )
    console.print(table)
