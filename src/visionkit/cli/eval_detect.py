"""``visionkit eval detect weights=... [data=...]``: evaluate a trained detector on a dataset.

The run folder next to ``model.pt`` holds the training recipe (``config.json``); its data settings are the
defaults, and ``key=value`` overrides change them (e.g. ``num_val=256`` or ``data=path/to/instances.json
data_format=coco``). Prints COCO AP/AP50/AP75 and VOC07 (11-point) / VOC12 (all-point) mAP@0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from torch.utils.data import DataLoader

from visionkit.cli.train_detect import DetectRecipe, build_datasets, evaluate_detector, load_detector
from visionkit.data.transforms import collate_detection
from visionkit.engine.config import ConfigError, apply_overrides, load_recipe

__all__ = ["detect"]


def _split_weights(overrides: tuple[str, ...]) -> tuple[Path, list[str]]:
    weights = [item for item in overrides if item.startswith("weights=")]
    if len(weights) != 1:
        raise click.UsageError("give the detector once as weights=PATH/model.pt (written by train detect)")
    return Path(weights[0].split("=", 1)[1]), [item for item in overrides if not item.startswith("weights=")]


@click.command("detect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics to this file.")
def detect(overrides: tuple[str, ...], json_path: str | None) -> None:
    """Evaluate weights=RUN/model.pt on its validation data (COCO and VOC tables).

    Other OVERRIDES are key=value fields of the training recipe (data, data_format, val_data, num_val,
    image_size, seed, ...), applied over the run's config.json.
    """
    weights, rest = _split_weights(overrides)
    detector, label_map = load_detector(weights)
    config = weights.parent / "config.json"
    try:
        recipe = load_recipe(DetectRecipe, config) if config.exists() else DetectRecipe()
        recipe = apply_overrides(recipe, rest)
    except (ConfigError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    try:
        _, val_set, data_labels = build_datasets(recipe)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if list(data_labels.names) != list(label_map.names):
        raise click.ClickException(
            f"the data's classes {list(data_labels.names)} differ from the detector's {list(label_map.names)}"
        )
    loader = DataLoader(val_set, batch_size=recipe.batch_size, collate_fn=collate_detection)
    metrics = evaluate_detector(detector, loader, label_map.num_classes)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{weights} on {recipe.data} ({len(val_set)} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        click.echo(f"wrote {json_path}")
