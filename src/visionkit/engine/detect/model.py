"""The model of a detection run: the device, the registered detector built from the recipe (pretrained
backbone, frozen stages, working scale), and the ``model.pt`` file that ``predict`` and ``eval detect`` load.

Example:
    >>> from visionkit.engine.detect.recipe import DetectRecipe
    >>> detector, arguments = build_detector(DetectRecipe(nms_method="soft_gaussian"), num_classes=3)
    >>> arguments["num_classes"], detector.postprocess.nms_method
    (3, 'soft_gaussian')
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from visionkit.data.datasets import LabelMap
from visionkit.engine.checkpoint import load_model_weights, save_checkpoint
from visionkit.engine.compressed import is_compressed, load_compressed_model
from visionkit.engine.config import load_recipe
from visionkit.engine.detect.anchors import anchor_pairs
from visionkit.engine.detect.recipe import MODEL_OPTIONS, DetectRecipe
from visionkit.engine.runs import resolve_device
from visionkit.errors import CheckpointError, ConfigError
from visionkit.models import create_model, get_model_builder
from visionkit.models.backbones.weights import freeze_stages, load_backbone_weights
from visionkit.models.detectors import ResizedInput
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.torchfile import UnreadableFileError, load_weights_only

__all__ = [
    "FORMAT",
    "build_detector",
    "detector_arguments",
    "input_scale",
    "load_detector",
    "resolve_device",
    "run_recipe",
    "save_detector",
    "with_input_scale",
]

FORMAT = "visionkit-detector"


def detector_arguments(recipe: DetectRecipe, num_classes: int) -> dict[str, Any]:
    """The builder's keyword arguments from the recipe: ``num_classes``, the post-processing settings and
    the model options that are set (the recipe already checked the builder accepts them)."""
    accepted = inspect.signature(get_model_builder(recipe.model)).parameters
    arguments: dict[str, Any] = {"num_classes": num_classes}
    for name in PostProcess.field_names():
        if name in accepted and hasattr(recipe, name):
            arguments[name] = getattr(recipe, name)
    for name in MODEL_OPTIONS:
        value = getattr(recipe, name)
        if value is not None and value != ():
            arguments[name] = tuple(value) if isinstance(value, tuple) else value
    if recipe.anchors:
        arguments["anchors"] = anchor_pairs(recipe.anchors)
    return arguments


#: Keys of an ``input_scale`` dict (letterbox / multi-scale; a plain resize stays ``[min, max]``).
SCALE_KEYS = ("min_size", "max_size", "letterbox", "multiscale", "multiscale_every", "seed")


def input_scale(recipe: DetectRecipe) -> list[int] | dict[str, Any] | None:
    """The recipe's working scale as saved in ``model.pt``: ``None`` (native size), ``[min_size, max_size]``
    (max 0: no cap) for a shorter-side resize, or with ``letterbox`` / ``multiscale`` a dict of
    :data:`SCALE_KEYS` (:class:`~visionkit.models.detectors.ResizedInput`'s arguments).

    Example:
        >>> input_scale(DetectRecipe(min_size=128, letterbox=True, multiscale=(96, 160)))["multiscale"]
        [96, 160]
    """
    if not recipe.min_size:
        return None
    if not recipe.letterbox and not recipe.multiscale:
        return [recipe.min_size, recipe.max_size]
    return {
        "min_size": recipe.min_size,
        "max_size": recipe.max_size,
        "letterbox": recipe.letterbox,
        "multiscale": list(recipe.multiscale),
        "multiscale_every": recipe.multiscale_every,
        "seed": recipe.seed,
    }


def with_input_scale(detector: nn.Module, scale: list[int] | dict[str, Any] | None) -> nn.Module:
    """``detector`` wrapped in :class:`~visionkit.models.detectors.ResizedInput` when ``scale`` (from
    :func:`input_scale`, or a ``model.pt``) is set.

    Raises:
        CheckpointError: a ``scale`` that is neither ``[min, max]`` nor a dict of :data:`SCALE_KEYS`.
    """
    if not scale:
        return detector
    if isinstance(scale, list | tuple) and len(scale) == 2:
        return ResizedInput(detector, scale[0], scale[1] or None)
    if not isinstance(scale, dict) or set(scale) != set(SCALE_KEYS):
        raise CheckpointError(
            f"input_scale={scale!r}: expected [min_size, max_size] or a dict of {SCALE_KEYS}"
        )
    return ResizedInput(
        detector,
        scale["min_size"],
        scale["max_size"] or None,
        letterbox=scale["letterbox"],
        multiscale=tuple(scale["multiscale"]) or None,  # type: ignore[arg-type]
        multiscale_every=scale["multiscale_every"],
        seed=scale["seed"],
    )


def build_detector(
    recipe: DetectRecipe, num_classes: int, anchors: tuple[tuple[float, float], ...] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The registered detector of ``recipe.model`` with the recipe's options, pretrained backbone weights,
    frozen stages and working scale applied; and every builder argument, defaults included (saved in
    ``model.pt``, so that a file still loads after a builder's defaults change). ``anchors``: the run's
    k-means anchors (:mod:`visionkit.engine.detect.anchors`) for a builder that takes them."""
    arguments = detector_arguments(recipe, num_classes)
    if anchors is not None:
        arguments["anchors"] = anchors
    bound = inspect.signature(get_model_builder(recipe.model)).bind(**arguments)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    detector = create_model(recipe.model, **arguments)
    if recipe.backbone_weights:
        load_backbone_weights(detector.backbone, recipe.backbone_weights)  # type: ignore[arg-type]
    if recipe.freeze_at >= 0:
        freeze_stages(detector.backbone, recipe.freeze_at)  # type: ignore[arg-type]
    return with_input_scale(detector, input_scale(recipe)), arguments


def save_detector(
    path: str | os.PathLike[str],
    detector: nn.Module,
    *,
    model: str,
    arguments: dict[str, Any],
    label_map: LabelMap,
    scale: list[int] | dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.pt`` atomically: the builder name and arguments, the weights, the label map and the
    working scale — everything :func:`load_detector` needs, nothing pickled but tensors and plain data."""
    inner = detector.detector if isinstance(detector, ResizedInput) else detector
    state = {key: value.detach().cpu() for key, value in inner.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": 1,
        "model": model,
        "arguments": arguments,
        "state_dict": state,
        "label_map": label_map.to_dict(),
        "input_scale": scale,
        **(extra or {}),
    }
    return save_checkpoint(payload, path)


def load_detector(weights: str | os.PathLike[str], **overrides: Any) -> tuple[nn.Module, LabelMap]:
    """A detector saved by :func:`save_detector` (a run's ``model.pt``, ``best.pt`` or ``last.pt``) in eval
    mode on the CPU, and its label map. ``overrides`` replace builder arguments (e.g. ``nms_method``).
    A compressed detector (``visionkit compress`` on a detector run) loads the same way: its file describes
    the base detector and the edits made to it (:mod:`visionkit.engine.compressed`).

    Raises:
        CheckpointError: missing, truncated or foreign file — the message names it.
        ConfigError: an override the model does not take, or an invalid value.
    """
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"weights {str(path)!r}: no such file (a run's model.pt)")
    try:
        saved = load_weights_only(path)
    except UnreadableFileError as error:
        raise CheckpointError(f"weights {str(path)!r}: not a readable visionkit detector ({error})") from None
    if is_compressed(saved):  # `visionkit compress` on a detector run: the base holds what a run's file does
        detector = load_compressed_model(path, saved, "detect", lambda base: _build(base, overrides))
        saved = saved["base"]
    elif isinstance(saved, dict) and {"model", "arguments", "state_dict", "label_map"} <= set(saved):
        detector = _build(saved, overrides)
        load_model_weights(detector, saved["state_dict"], path, saved["model"])
    else:
        raise CheckpointError(f"weights {str(path)!r}: not a visionkit detector file (from train detect)")
    if not isinstance(saved.get("label_map"), dict):
        raise CheckpointError(f"weights {str(path)!r}: the detector's label map is missing")
    try:
        detector = with_input_scale(detector, saved.get("input_scale"))
    except CheckpointError as error:
        raise CheckpointError(f"weights {str(path)!r}: {error}") from None
    return detector.eval(), LabelMap.from_dict(saved["label_map"])


def _build(saved: dict[str, Any], overrides: dict[str, Any]) -> nn.Module:
    """The registered detector ``saved["model"]`` built with the saved arguments and ``overrides``."""
    accepted = inspect.signature(get_model_builder(saved["model"])).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: model {saved['model']!r} has no such option")
    return create_model(saved["model"], **{**saved["arguments"], **overrides})


def run_recipe(weights: str | os.PathLike[str]) -> DetectRecipe | None:
    """The recipe of the detection run that ``weights`` comes from: its ``config.json``, or ``None`` when
    there is none. In a folder written by ``visionkit compress`` (its ``config.json`` is the compress recipe,
    which names the detector it compressed as ``weights=``), the recipe of that detector's run — the data,
    classes and post-processing the compressed detector keeps.

    Raises:
        ConfigError: a compress run whose source run (``weights=``) has no ``config.json`` any more, or a
            ``config.json`` that is not valid JSON (the message names the file).
    """
    config = Path(weights).parent / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{config}: not a readable run recipe ({error})") from None
    if (
        isinstance(data, dict)
        and data.get("recipe") == "CompressRecipe"
        and isinstance(data.get("weights"), str)
    ):
        source = Path(data["weights"]).parent / "config.json"
        if not source.is_file() or source.resolve() == config.resolve():
            raise ConfigError(
                f"{config}: a compressed detector of weights={data['weights']!r}, whose run folder has no "
                "config.json here (run from where it was compressed, or give the data as key=value)"
            )
        return run_recipe(data["weights"])
    return load_recipe(DetectRecipe, config)
