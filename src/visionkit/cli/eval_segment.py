"""``visionkit eval segment weights=... [key=value ...]``: evaluate a trained segmenter on a dataset.

The run folder next to ``model.pt`` holds the training recipe (``config.json``); its data settings are the
defaults, and ``key=value`` overrides change them (``num_val=256``, ``data=voc:VOC2012 val_image_set=val``,
``boundary_width=5``). Prints mIoU, pixel and mean class accuracy, frequency-weighted IoU, the boundary-band
mIoU and accuracy, and the IoU of each class.
"""

from __future__ import annotations

import click

from visionkit.cli.eval_detect import report_metrics, split_weights
from visionkit.cli.paths import output_file
from visionkit.engine.config import apply_overrides, load_recipe
from visionkit.engine.segment import SegmentRecipe, build_datasets, evaluate_segmenter, load_segmenter
from visionkit.errors import DatasetError

__all__ = ["segment"]


@click.command("segment", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics to this file.")
def segment(overrides: tuple[str, ...], json_path: str | None) -> None:
    """Evaluate weights=RUN/model.pt on its validation data (mIoU, accuracies, boundary band, per class).

    Other OVERRIDES are key=value fields of the training recipe (data, val_data, val_image_set, num_val,
    image_size, seed, boundary_width, batch_size), applied over the run's config.json.
    """
    weights, rest = split_weights(overrides, "segmenter", "train segment")
    target = output_file(json_path, "--json")
    config = weights.parent / "config.json"
    recipe = apply_overrides(load_recipe(SegmentRecipe, config) if config.exists() else SegmentRecipe(), rest)
    model, label_map = load_segmenter(weights)
    data = build_datasets(recipe)
    if data.label_map.names != label_map.names:
        raise DatasetError(
            f"the data's classes {list(data.label_map.names)} differ from the segmenter's "
            f"{list(label_map.names)}"
        )
    evaluation = evaluate_segmenter(
        model, data.val, label_map.names, batch_size=recipe.batch_size, boundary_width=recipe.boundary_width
    )
    title = f"{weights} on {recipe.val_data or recipe.data} ({len(data.val)} images)"  # type: ignore[arg-type]
    report_metrics(title, evaluation.metrics, target)
