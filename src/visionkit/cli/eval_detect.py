"""``visionkit eval detect weights=... [key=value ...]``: evaluate a trained detector on a dataset.

The run folder next to ``model.pt`` holds the training recipe (``config.json``); its data settings are the
defaults, and ``key=value`` overrides change them (e.g. ``num_val=256`` or
``val_data=path/to/instances.json``). A compressed detector (``visionkit compress``'s run folder) is
evaluated with the recipe of the run it was compressed from.
Prints COCO AP/AP50/AP75 (and by size) and VOC07 (11-point) / VOC12 (all-point) mAP@0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from visionkit.cli.paths import output_file
from visionkit.engine.config import apply_overrides
from visionkit.engine.detect import DetectRecipe, build_datasets, evaluate_detector, load_detector, run_recipe
from visionkit.errors import ConfigError, DatasetError

__all__ = ["detect", "report_metrics", "split_weights"]


def split_weights(
    overrides: tuple[str, ...] | list[str], what: str = "detector", command: str = "train detect"
) -> tuple[Path, list[str]]:
    """``weights=PATH`` (exactly once) and the other overrides."""
    weights = [item for item in overrides if item.partition("=")[0].strip() == "weights"]
    if len(weights) != 1:
        raise ConfigError(f"give the {what} once as weights=PATH/model.pt (written by {command})")
    rest = [item for item in overrides if item.partition("=")[0].strip() != "weights"]
    return Path(weights[0].partition("=")[2].strip()), rest


@click.command("detect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics to this file.")
def detect(overrides: tuple[str, ...], json_path: str | None) -> None:
    """Evaluate weights=RUN/model.pt on its validation data (COCO and VOC tables).

    Other OVERRIDES are key=value fields of the training recipe (data, data_format, val_data, num_val,
    image_size, seed, nms_method, ...), applied over the run's config.json.
    """
    weights, rest = split_weights(overrides)
    target = output_file(json_path, "--json")
    recipe = apply_overrides(run_recipe(weights) or DetectRecipe(), rest)  # compressed: its source run
    postprocess = {
        k: getattr(recipe, k)
        for k in ("nms_method", "nms_threshold", "soft_nms_sigma", "score_threshold", "detections_per_image")
    }
    detector, label_map = load_detector(weights, **postprocess)
    data = build_datasets(recipe)
    if list(data.label_map.names) != list(label_map.names):
        raise DatasetError(
            f"the data's classes {list(data.label_map.names)} differ from the detector's "
            f"{list(label_map.names)}"
        )
    metrics = evaluate_detector(
        detector, data.val, label_map.num_classes, batch_size=recipe.batch_size
    ).metrics
    title = f"{weights} on {recipe.val_data or recipe.data} ({len(data.val)} images)"  # type: ignore[arg-type]
    report_metrics(title, metrics, target)


def report_metrics(title: str, metrics: dict[str, float], target: Path | None) -> None:
    """Print ``metrics`` as a two-column table and write them as JSON to ``target`` (when given)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
    if target is not None:
        target.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        click.echo(f"wrote {target}")
