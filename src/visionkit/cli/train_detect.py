"""``visionkit train detect``: train a detector on ``shapes`` (no download) or a COCO/VOC/YOLO dataset.

Example::

    visionkit train detect model=retinanet_mobilenet_v2_fpn data=shapes epochs=12 --out runs/retina

The run folder holds ``config.json``, ``label_map.json``, ``log.csv`` (losses and validation AP per
epoch), ``checkpoints/`` (resumable), ``model.pt`` (weights + builder arguments + label map, what
``visionkit predict`` loads) and ``metrics.json`` (COCO AP, VOC07 and VOC12 mAP on the validation split).
``min_size=…`` (and ``max_size=…``) train and predict at a working scale (e.g. 320 px for 640 px COCO images
on a CPU) while data, metrics and predictions stay in the images' own coordinates.
"""

from __future__ import annotations

import inspect
import json
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import click
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visionkit.data.datasets import DatasetError, LabelMap, read_annotations
from visionkit.data.datasets.base import DetectionDataset
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.data.transforms import Compose, RandomHorizontalFlip, collate_detection
from visionkit.engine.config import ConfigError, apply_overrides, describe_recipe, save_recipe
from visionkit.engine.hooks import CheckpointHook, CSVLogger, EvalHook, LRScheduleHook, ProgressHook
from visionkit.engine.trainer import Trainer
from visionkit.metrics.detection.coco import CocoResult
from visionkit.metrics.detection.meter import DetectionMeter
from visionkit.metrics.detection.voc import VocResult
from visionkit.models import create_model, get_model_builder
from visionkit.models.detectors import ResizedInput

__all__ = ["DetectRecipe", "build_detector", "evaluate_detector", "load_detector", "train_detector"]


@dataclass(frozen=True)
class DetectRecipe:
    """Everything a detection run needs; every field can be overridden as ``key=value``."""

    model: str = "retinanet_mobilenet_v2_fpn"
    data: str = "shapes"  # "shapes", or a COCO JSON / VOC folder / YOLO folder (see data_format)
    data_format: Literal["shapes", "coco", "voc", "yolo"] = "shapes"
    val_data: str = ""  # validation set for file datasets (empty: validate on the training set)
    num_train: int = 512  # shapes only
    num_val: int = 128  # shapes only
    image_size: int = 128  # shapes only
    crowded: bool = False  # shapes only: train and validate on the crowded split
    min_size: int = 0  # > 0: work at this shorter side (images resized inside the model; boxes in/out stay)
    max_size: int = 0  # with min_size: cap for the longer side (0: no cap)
    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    hflip: float = 0.5
    width_multiplier: float = 0.5
    fpn_channels: int = 64
    head_convs: int = 2
    representation_size: int = 256
    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)
    nms_method: Literal["hard", "soft_linear", "soft_gaussian"] = "hard"
    score_threshold: float = 0.05
    seed: int = 0
    workers: int = 0


def shapes_config(recipe: DetectRecipe) -> ShapesConfig:
    """The ``shapes`` drawing settings of a recipe (sizes scale with ``image_size``)."""
    if recipe.crowded:
        return ShapesConfig.crowded_preset(recipe.image_size)
    scale = recipe.image_size / 128
    return ShapesConfig(
        image_size=recipe.image_size, min_size=max(4, round(16 * scale)), max_size=round(48 * scale)
    )


def build_datasets(recipe: DetectRecipe) -> tuple[Dataset, Dataset, LabelMap]:
    """Training set (with flips) and validation set of the recipe, and their label map."""
    train_transforms = Compose([RandomHorizontalFlip(recipe.hflip)])
    if (recipe.data == "shapes") != (recipe.data_format == "shapes"):
        raise ValueError(
            f"data={recipe.data!r} with data_format={recipe.data_format!r}: use data=shapes and "
            "data_format=shapes, "
            "or a dataset path with data_format=coco|voc|yolo"
        )
    if recipe.data_format == "shapes":
        config = shapes_config(recipe)
        shapes = ShapesDataset(recipe.num_train, seed=recipe.seed, config=config, transforms=train_transforms)
        return shapes, ShapesDataset(recipe.num_val, seed=recipe.seed + 1000, config=config), shapes.label_map
    train = _file_dataset(recipe.data, recipe.data_format, train_transforms)
    val = (
        _file_dataset(recipe.val_data, recipe.data_format)
        if recipe.val_data
        else DetectionDataset(train.annotations)
    )
    return train, val, train.label_map


def _file_dataset(path: str, data_format: str, transforms: Any = None) -> DetectionDataset:
    """A COCO/VOC/YOLO dataset with images; a :class:`DatasetError` naming ``path`` when it has none."""
    annotations = read_annotations(path, data_format)
    if annotations.image_root is None:
        raise DatasetError(f"{path}: no image folder found (for COCO put the images in 'images/' beside it)")
    dataset = DetectionDataset(annotations, transforms=transforms)
    if len(dataset) == 0:
        raise DatasetError(f"{path}: no images in this {data_format} dataset")
    return dataset


def model_arguments(recipe: DetectRecipe, num_classes: int) -> dict[str, Any]:
    """The recipe's values for the keyword arguments the chosen builder accepts."""
    accepted = inspect.signature(get_model_builder(recipe.model)).parameters
    candidates = {
        "num_classes": num_classes, "width_multiplier": recipe.width_multiplier,
        "fpn_channels": recipe.fpn_channels, "head_convs": recipe.head_convs,
        "representation_size": recipe.representation_size, "anchor_sizes": tuple(recipe.anchor_sizes),
        "nms_method": recipe.nms_method, "score_threshold": recipe.score_threshold,
    }  # fmt: skip
    return {key: value for key, value in candidates.items() if key in accepted}


def build_detector(recipe: DetectRecipe, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The registered detector of ``recipe.model`` and the arguments it was built with."""
    arguments = model_arguments(recipe, num_classes)
    return create_model(recipe.model, **arguments), arguments


def input_scale(recipe: DetectRecipe) -> list[int] | None:
    """``[min_size, max_size]`` (max 0: no cap) of the recipe's working scale, or ``None`` for native size."""
    if recipe.min_size < 0 or recipe.max_size < 0:
        raise ValueError(f"min_size and max_size must be >= 0, got {recipe.min_size} and {recipe.max_size}")
    if recipe.min_size == 0:
        if recipe.max_size:
            raise ValueError(f"max_size={recipe.max_size} needs min_size > 0 (the shorter side to resize to)")
        return None
    if recipe.max_size and recipe.max_size < recipe.min_size:
        raise ValueError(f"max_size must be 0 or >= min_size, got {recipe.max_size} < {recipe.min_size}")
    return [recipe.min_size, recipe.max_size]


def with_input_scale(detector: nn.Module, scale: list[int] | None) -> nn.Module:
    """``detector`` wrapped in :class:`~visionkit.models.detectors.ResizedInput` when ``scale`` is set."""
    if not scale:
        return detector
    return ResizedInput(detector, scale[0], scale[1] or None)


class _TrainStep(nn.Module):
    """Adapts a detector to the trainer's loss contract: ``step((images, targets)) -> dict of losses``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        images, targets = batch
        return self.detector(images, targets)


@torch.no_grad()
def evaluate_detector(detector: nn.Module, loader: DataLoader, num_classes: int) -> dict[str, float]:
    """COCO AP/AP50/AP75, VOC07 (11-point) and VOC12 (all-point) mAP@0.5 of ``detector`` on ``loader``."""
    was_training = detector.training
    detector.eval()
    meters = {name: DetectionMeter(name, num_classes=num_classes) for name in ("coco", "voc07", "voc12")}
    device = next(detector.parameters()).device
    for images, targets in loader:
        predictions = detector([image.to(device) for image in images])
        for meter in meters.values():
            meter.update(predictions, targets)
    detector.train(was_training)
    coco = cast(CocoResult, meters["coco"].compute()).as_dict()
    voc07, voc12 = (cast(VocResult, meters[name].compute()) for name in ("voc07", "voc12"))
    return {
        "AP": coco["AP"], "AP50": coco["AP50"], "AP75": coco["AP75"],
        "VOC07_mAP": voc07.mean_average_precision, "VOC12_mAP": voc12.mean_average_precision,
    }  # fmt: skip


def train_detector(recipe: DetectRecipe, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate every epoch, and write the run folder (see the module docstring)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    train_set, val_set, label_map = build_datasets(recipe)
    scale = input_scale(recipe)
    save_recipe(recipe, run_dir / "config.json")
    label_map.save(run_dir / "label_map.json")
    detector, arguments = build_detector(recipe, label_map.num_classes)
    model = with_input_scale(detector, scale)
    loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, collate_fn=collate_detection,
                        num_workers=recipe.workers)  # fmt: skip
    val_loader = DataLoader(val_set, batch_size=recipe.batch_size, collate_fn=collate_detection)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    total_steps = recipe.epochs * len(loader)
    warmup = max(1, min(recipe.warmup_steps, total_steps // 4))

    def warmup_cosine(step: int) -> float:
        return (
            min(1.0, (step + 1) / warmup)
            * 0.5
            * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    hooks = [
        LRScheduleHook(schedule),
        EvalHook(
            lambda step: evaluate_detector(cast(_TrainStep, step).detector, val_loader, label_map.num_classes)
        ),
        CheckpointHook(run_dir / "checkpoints"),
        CSVLogger(run_dir / "log.csv"),
        ProgressHook(progress),
    ]
    trainer = Trainer(_TrainStep(model), optimizer, loader, hooks=hooks, max_epochs=recipe.epochs,
                      clip_norm=10.0, seed=recipe.seed)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    torch.save({"model": recipe.model, "arguments": arguments, "state_dict": detector.state_dict(),
                "label_map": label_map.to_dict(), "input_scale": scale}, run_dir / "model.pt")  # fmt: skip
    metrics = {**trainer.history[-1], "train_seconds": seconds, "model": recipe.model}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def load_detector(weights: str | Path, **overrides: Any) -> tuple[nn.Module, LabelMap]:
    """A detector saved by :func:`train_detector` (``model.pt``) in eval mode, and its label map (wrapped in
    :class:`~visionkit.models.detectors.ResizedInput` when the run had a working scale)."""
    path = Path(weights)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        arguments = {**saved["arguments"], **overrides}
        detector = create_model(saved["model"], **arguments)
        detector.load_state_dict(saved["state_dict"])
        detector = with_input_scale(detector, saved.get("input_scale"))
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
    ) as error:
        raise click.ClickException(f"cannot load detector weights {path}: {error}") from error
    return detector.eval(), LabelMap.from_dict(saved["label_map"])


@click.command("detect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def detect(overrides: tuple[str, ...], out: Path | None, no_progress: bool) -> None:
    """Train a detector (RetinaNet or Faster R-CNN) and write a run folder.

    OVERRIDES are key=value pairs, e.g. model=fasterrcnn_mobilenet_v2_fpn data=shapes epochs=12;
    unknown keys are rejected (keys below).
    """
    try:
        recipe = apply_overrides(DetectRecipe(), list(overrides))
        input_scale(recipe)
    except (ConfigError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    run_dir = out or Path("runs") / f"detect-{recipe.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        metrics = train_detector(recipe, run_dir, progress=not no_progress)
    except DatasetError as error:  # a data problem: the message names the file or folder
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"run folder: {run_dir}")


detect.help = (
    inspect.cleandoc(detect.help or "")
    + "\n\n\b\nRecipe keys:\n"
    + "\n".join(
        f"  {name} ({kind}, default {default})" for name, kind, default in describe_recipe(DetectRecipe)
    )
)
