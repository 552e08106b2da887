"""``visionkit train detect``: train a detector on ``shapes`` (no download) or a COCO/VOC/YOLO dataset.

Examples::

    visionkit train detect model=retinanet_plain_fpn data=shapes epochs=12 --out runs/retina
    visionkit train detect data=coco128/images/train2017 min_size=320 time_limit=600 device=cuda amp=true
    visionkit train detect resume=runs/retina                      # continue exactly after an interruption
    visionkit train detect model=fasterrcnn_plain_fpn --nproc 2    # data-parallel through torchrun

Everything happens in :mod:`visionkit.engine.detect` (the recipe keys are listed in ``--help``); this
command only parses the keys, checks the run folder and prints the result.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import click

from visionkit.cli.paths import prepare_run_folder
from visionkit.engine.config import describe_recipe
from visionkit.engine.detect import DetectRecipe, train_detector
from visionkit.engine.detect.recipe import recipe_from_overrides

__all__ = ["detect"]


@click.command("detect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@click.option("--no-progress", is_flag=True, help="No progress bars (same as progress=false).")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes for data-parallel training (torchrun; gloo on CPU, nccl on GPU).",
)
def detect(overrides: tuple[str, ...], out: Path | None, no_progress: bool, nproc: int) -> None:
    """Train a detector and write a run folder (config.json, label_map.json, log.csv, checkpoints/,
    best.pt, last.pt, model.pt, metrics.json, tensorboard/).

    OVERRIDES are key=value pairs, e.g. model=fasterrcnn_plain_fpn data=shapes epochs=12; values are cast to
    the key's type and checked, unknown keys are rejected (keys below).
    """
    items = list(overrides) + (["progress=false"] if no_progress else [])
    recipe = recipe_from_overrides(items)
    run_dir = prepare_run_folder(recipe, out, "detect")
    if nproc > 1 and "LOCAL_RANK" not in os.environ:  # start the ranks; each re-enters this command
        from visionkit.cli.train import run_distributed

        run_distributed(["detect", *items, "--out", str(run_dir)], nproc)
        return
    from visionkit.cli.train import run_with_error_record

    metrics = run_with_error_record(lambda: train_detector(recipe, run_dir, log=click.echo))
    if os.environ.get("RANK", "0") != "0":
        return
    click.echo(json.dumps({k: v for k, v in metrics.items() if k != "final"}, indent=2))
    click.echo(f"run folder: {run_dir}")


detect.help = (
    inspect.cleandoc(detect.help or "")
    + "\n\n\b\nRecipe keys:\n"
    + "\n".join(
        f"  {name} ({kind}, default {default})" for name, kind, default in describe_recipe(DetectRecipe)
    )
)
