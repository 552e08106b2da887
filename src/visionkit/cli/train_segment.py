"""``visionkit train segment``: train a segmenter (FCN) on ``shapes`` (no download), a VOC folder or a
COCO file.

Examples::

    visionkit train segment model=fcn8s_small data=shapes time_limit=300 threads=1 --out runs/fcn8s
    visionkit train segment model=fcn8s_vgg16 data=voc:VOCdevkit/VOC2012 image_set=train val_image_set=val \\
        crop_size=320 backbone_weights=vgg16-397923af.pth device=cuda amp=true
    visionkit train segment resume=runs/fcn8s                       # continue exactly after an interruption

Everything happens in :mod:`visionkit.engine.segment` (the recipe keys are listed in ``--help``); this
command only parses the keys, checks the run folder and prints the result.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import click

from visionkit.cli.paths import prepare_run_folder
from visionkit.engine.config import describe_recipe
from visionkit.engine.segment import SegmentRecipe, recipe_from_overrides, train_segmenter

__all__ = ["segment"]


@click.command("segment", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@click.option("--no-progress", is_flag=True, help="No progress bars (same as progress=false).")
def segment(overrides: tuple[str, ...], out: Path | None, no_progress: bool) -> None:
    """Train a semantic segmenter and write a run folder (config.json, label_map.json, log.csv, steps.csv,
    checkpoints/, best.pt, last.pt, model.pt, metrics.json, tensorboard/).

    OVERRIDES are key=value pairs, e.g. model=fcn8s_small data=shapes epochs=20; values are cast to the
    key's type and checked, unknown keys are rejected (keys below).
    """
    items = list(overrides) + (["progress=false"] if no_progress else [])
    recipe = recipe_from_overrides(items)
    run_dir = prepare_run_folder(recipe, out, "segment")
    metrics = train_segmenter(recipe, run_dir, log=click.echo)
    click.echo(json.dumps({k: v for k, v in metrics.items() if k != "final"}, indent=2))
    click.echo(f"run folder: {run_dir}")


segment.help = (
    inspect.cleandoc(segment.help or "")
    + "\n\n\b\nRecipe keys:\n"
    + "\n".join(
        f"  {name} ({kind}, default {default})" for name, kind, default in describe_recipe(SegmentRecipe)
    )
)
