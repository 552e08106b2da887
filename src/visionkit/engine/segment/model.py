"""The model of a segmentation run: the registered segmenter built from the recipe (pretrained encoder),
and the ``model.pt`` file that ``predict`` and ``eval segment`` load.

Example:
    >>> from visionkit.engine.segment.recipe import SegmentRecipe
    >>> model, arguments = build_segmenter(SegmentRecipe(widths=(4, 8, 8, 16, 16)), num_classes=4)
    >>> arguments
    {'num_classes': 4, 'widths': (4, 8, 8, 16, 16)}
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from torch import nn

from visionkit.data.datasets import LabelMap
from visionkit.engine.checkpoint import load_model_weights, save_checkpoint
from visionkit.engine.segment.recipe import MODEL_OPTIONS, SegmentRecipe
from visionkit.errors import CheckpointError, ConfigError
from visionkit.models import create_model, get_model_builder
from visionkit.torchfile import UnreadableFileError, load_weights_only

__all__ = [
    "FORMAT",
    "build_segmenter",
    "load_segmenter",
    "model_format",
    "save_segmenter",
    "segmenter_arguments",
]

FORMAT = "visionkit-segmenter"


def segmenter_arguments(recipe: SegmentRecipe, num_classes: int) -> dict[str, Any]:
    """The builder's keyword arguments: ``num_classes`` and the model options that are set."""
    arguments: dict[str, Any] = {"num_classes": num_classes}
    for name in MODEL_OPTIONS:
        value = getattr(recipe, name)
        if value is not None and value != ():
            arguments[name] = value
    return arguments


def build_segmenter(recipe: SegmentRecipe, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The registered segmenter of ``recipe.model`` with its options and pretrained encoder weights, and
    the builder arguments (saved in ``model.pt``)."""
    arguments = segmenter_arguments(recipe, num_classes)
    model = create_model(recipe.model, **arguments)
    if recipe.backbone_weights:
        model.encoder.load_pretrained(recipe.backbone_weights)  # type: ignore[operator,union-attr]
    return model, arguments


def save_segmenter(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    name: str,
    arguments: dict[str, Any],
    label_map: LabelMap,
) -> Path:
    """Write ``model.pt`` atomically: builder name and arguments, weights (tensors only) and the classes."""
    payload = {
        "format": FORMAT,
        "version": 1,
        "model": name,
        "arguments": arguments,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "label_map": label_map.to_dict(),
    }
    return save_checkpoint(payload, path)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"weights {str(path)!r}: no such file (a run's model.pt)")
    try:
        return load_weights_only(path, mmap=True)
    except UnreadableFileError as error:
        raise CheckpointError(f"weights {str(path)!r}: not a readable visionkit model ({error})") from None


def model_format(weights: str | os.PathLike[str]) -> str | None:
    """The ``format`` of a model file (``visionkit-segmenter``, ``visionkit-detector``); ``None`` when it has
    none or cannot be read (the task's loader then names the problem). Memory-mapped: a large file is not
    read."""
    try:
        saved = _read(Path(weights))
    except CheckpointError:
        return None
    return saved.get("format") if isinstance(saved, dict) else None


def load_segmenter(weights: str | os.PathLike[str], **overrides: Any) -> tuple[nn.Module, LabelMap]:
    """A segmenter saved by :func:`save_segmenter` in eval mode on the CPU, and its classes.

    Raises:
        CheckpointError: missing, truncated or foreign file (a detector's, say) — the message names it.
        ConfigError: an override the model does not take.
    """
    path = Path(weights)
    saved = _read(path)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(
            f"weights {str(path)!r}: not a visionkit segmenter (format {found!r}; from train segment)"
        )
    accepted = inspect.signature(get_model_builder(saved["model"])).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: model {saved['model']!r} has no such option")
    arguments = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["arguments"].items()}
    model = create_model(saved["model"], **{**arguments, **overrides})
    load_model_weights(model, saved["state_dict"], path, saved["model"])
    return model.eval(), LabelMap.from_dict(saved["label_map"])
