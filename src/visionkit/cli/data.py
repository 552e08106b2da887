"""``visionkit data``: convert detection datasets between formats, generate ``shapes``, summarize."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from visionkit.data.datasets import (
    FORMATS,
    DatasetError,
    convert_dataset,
    is_data_yaml,
    read_annotations,
    read_data_yaml,
)
from visionkit.data.shapes import ShapesConfig, ShapesDataset, export_shapes


@click.group("data")
def data() -> None:
    """Detection datasets: convert between COCO, VOC and YOLO; generate `shapes`; summarize."""


@data.command("convert")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--from", "from_format", type=click.Choice(FORMATS), required=True, help="Format of SOURCE.")
@click.option("--to", "to_format", type=click.Choice(FORMATS), required=True, help="Format to write.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--images", type=click.Path(exists=True, path_type=Path), help="COCO image folder.")
@click.option(
    "--classes", type=click.Path(exists=True, path_type=Path), help="classes.txt or label_map.json."
)
@click.option("--image-set", help="VOC split to read (ImageSets/Main/<name>.txt).")
@click.option(
    "--images-mode", type=click.Choice(["copy", "symlink", "none"]), default="copy", show_default=True
)
@click.option("--out-of-bounds", type=click.Choice(["clip", "raise"]), default="clip", show_default=True)
def convert(
    source: Path,
    from_format: str,
    to_format: str,
    out_dir: Path,
    images: Path | None,
    classes: Path | None,
    image_set: str | None,
    images_mode: str,
    out_of_bounds: str,
) -> None:
    """Convert the dataset at SOURCE (COCO: the JSON file; VOC: the folder; YOLO: images folder or root)."""
    try:
        written = convert_dataset(
            source, from_format, to_format, out_dir, images=images, classes=classes, image_set=image_set,
            images_mode=images_mode, out_of_bounds=out_of_bounds,
        )  # fmt: skip
    except DatasetError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"wrote {len(written.records)} images, {written.num_objects} objects, "
        f"{written.label_map.num_classes} classes as {to_format} to {out_dir}"
    )


@data.command("shapes")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--num-images", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--format", "formats", type=click.Choice(FORMATS), multiple=True, default=("coco",), show_default=True
)
@click.option("--crowded", is_flag=True, help="Many overlapping same-class shapes (the Soft-NMS split).")
@click.option("--image-size", type=click.IntRange(min=32), default=128, show_default=True)
def shapes(
    out_dir: Path, num_images: int, seed: int, formats: tuple[str, ...], crowded: bool, image_size: int
) -> None:
    """Generate the `shapes` detection dataset and write it in the chosen formats."""
    config = ShapesConfig.crowded_preset(image_size) if crowded else ShapesConfig(image_size=image_size)
    written = export_shapes(ShapesDataset(num_images, seed, config), out_dir, tuple(dict.fromkeys(formats)))
    for fmt, path in written.items():
        click.echo(f"{fmt}: {path}")


@data.command("info")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "yaml"]), default=None,
              help="Format of SOURCE [default: yaml for a .yaml file, else required].")  # fmt: skip
@click.option("--classes", type=click.Path(exists=True, path_type=Path))
@click.option("--image-set")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="The split of a data.yaml.")  # fmt: skip
def info(source: Path, fmt: str | None, classes: Path | None, image_set: str | None, split: str) -> None:
    """Count images, objects, crowd/difficult flags and objects per class of a dataset (a COCO JSON, a VOC
    or YOLO folder, or an ultralytics data.yaml)."""
    if fmt is None and not is_data_yaml(source):
        raise click.UsageError("give --format coco|voc|yolo (only a .yaml data file is recognised alone)")
    if fmt in (None, "yaml"):
        annotations = read_data_yaml(source, split)
    else:
        annotations = read_annotations(source, fmt, classes=classes, image_set=image_set)
    counts: Counter[int] = Counter()
    crowd = difficult = negatives = 0
    for record in annotations.records:
        counts.update(record.labels.tolist())
        crowd += int(record.iscrowd.sum())
        difficult += int(record.difficult.sum())
        negatives += record.num_objects == 0
    click.echo(
        f"{len(annotations.records)} images ({negatives} without objects), {annotations.num_objects} objects "
        f"({crowd} crowd, {difficult} difficult), {annotations.label_map.num_classes} classes"
    )
    for label, name in enumerate(annotations.label_map.names):
        click.echo(f"  {label:3d} {name:<20s} {counts.get(label, 0)}")
