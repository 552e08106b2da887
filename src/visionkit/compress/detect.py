"""``visionkit compress METHOD weights=RUN/model.pt`` on a detector run: compress the backbone, fine-tune the
whole detector with the detection task's pieces, report AP before / after / after fine-tuning.

The method acts on ``detector.backbone`` alone: structured pruning removes the channels *inside* it (the
``c2``–``c5`` maps it hands to the neck reach the traced output and are protected, so the neck, the head
and the anchors see the channels and strides of before); ``share`` and ``lowrank`` take its layers. The
edits are saved with their full names (``backbone.blocks.0.0.0``), so the compressed ``model.pt``
(:mod:`visionkit.compress.io`) rebuilds the detector from the original builder and arguments.

The run folder of the detector (``config.json`` beside ``model.pt``) gives the data (train and
validation sets, as ``eval detect`` reads them) and the optimizer of the fine-tuning: the run's own
optimizer, weight decay and gradient clipping, a cosine decay from ``lr`` (0: the run's learning rate)
over ``finetune_epochs``, the engine's :class:`~visionkit.engine.trainer.Trainer` and
:class:`~visionkit.engine.detect.train.TrainStep` — no loop of its own.

Example::

    visionkit compress prune weights=runs/shapes/model.pt ratio=0.5 finetune_epochs=2 --out runs/pruned
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionkit.compress import io as compress_io
from visionkit.compress.lowrank import factorize_model
from visionkit.compress.measure import macs_and_params, paired_latency_ms, serialized_bytes
from visionkit.compress.prune import MaskHook, magnitude_prune
from visionkit.compress.share import share_weights, storage_report
from visionkit.compress.structured import prune_channels
from visionkit.engine.config import load_recipe, save_recipe
from visionkit.engine.detect import DetectRecipe, build_datasets, evaluate_detector, load_detector
from visionkit.engine.detect.model import with_input_scale
from visionkit.engine.detect.train import TrainStep, train_loader
from visionkit.engine.distributed import DistributedContext
from visionkit.engine.runs import budget_hooks, build_optimizer
from visionkit.engine.trainer import Trainer
from visionkit.errors import CheckpointError, ConfigError, ExportError
from visionkit.models import create_model
from visionkit.models.detectors import ResizedInput

__all__ = ["DETECTOR_FORMAT", "compress_detector", "load_compressed_detector"]

DETECTOR_FORMAT = "visionkit-detector"


def _inner(detector: nn.Module) -> nn.Module:
    return detector.detector if isinstance(detector, ResizedInput) else detector


def _build_base(base: dict[str, Any]) -> nn.Module:
    return create_model(base["model"], **base["arguments"])


def load_compressed_detector(path: str | Path) -> nn.Module:
    """The compressed detector saved by :func:`compress_detector` (eval mode, CPU, at its working scale)."""
    saved = compress_io.read_compressed(path)
    if saved["base"].get("task") != "detect":
        raise CheckpointError(f"{path}: a compressed {saved['base'].get('task')!r} model, not a detector")
    detector = compress_io.load_compressed(path, _build_base)
    return with_input_scale(detector, saved["base"].get("input_scale")).eval()  # letterbox / multiscale kept


def _prefixed(names: Any) -> Any:
    if isinstance(names, dict):
        return {f"backbone.{name}": value for name, value in names.items()}
    return [f"backbone.{name}" for name in names]


def _backbone_layers(layers: list[str] | None) -> list[str] | None:
    """``layers`` named relative to the detector (``backbone.…``) → relative to the backbone."""
    if layers is None:
        return None
    outside = [name for name in layers if not name.startswith("backbone.")]
    if outside:
        raise ConfigError(
            f"layers: {outside[0]!r} is not in the detector's backbone (names start 'backbone.')"
        )
    return [name.removeprefix("backbone.") for name in layers]


def _apply(method: str, detector: nn.Module, recipe: Any, example: torch.Tensor) -> tuple[list, dict]:
    """Compress ``detector.backbone`` in place; return ``(edits, details)`` with full layer names. An error
    about a layer says ``backbone:`` first (its names are the backbone's own)."""
    try:
        return _apply_to_backbone(method, detector, recipe, example)
    except (ConfigError, ExportError) as error:
        raise type(error)(f"backbone: {error}") from None


def _apply_to_backbone(
    method: str, detector: nn.Module, recipe: Any, example: torch.Tensor
) -> tuple[list, dict]:
    backbone = detector.backbone
    if method == "prune" and not recipe.structured and recipe.rounds > 1:  # not silently one-shot
        raise ConfigError(f"rounds={recipe.rounds}: iterative pruning is for classifiers; use rounds=1")
    layers = _backbone_layers(recipe.layer_names())
    if method == "prune" and recipe.structured:
        result = prune_channels(backbone, example, recipe.ratio, criterion=recipe.criterion,
                                scope=recipe.scope, round_to=recipe.round_to, layers=layers)  # fmt: skip
        detector.backbone = result.model
        return [{"kind": "channels", "shapes": _prefixed(result.shapes)}], {"kept_channels": result.kept}
    if method == "prune":
        scope = "global" if recipe.scope == "global" else "layer"
        masks = magnitude_prune(backbone, recipe.ratio, scope=scope, layers=layers)
        return [{"kind": "sparse", "layers": _prefixed(sorted(masks))}], {"masks": masks}
    if method == "share":
        shared = share_weights(backbone, recipe.bits, layers=layers)
        return [{"kind": "share", "bits": recipe.bits, "layers": _prefixed(sorted(shared))}], {}
    if recipe.factorization == "svd":
        raise ConfigError(
            "factorization=svd: a detector backbone has no Linear layers; use tucker2 or separable"
        )
    ranks = factorize_model(backbone, recipe.factorization, energy=recipe.energy, layers=layers)
    if not ranks:
        raise ConfigError(f"lowrank: no backbone layer would get smaller at energy={recipe.energy}")
    return [{"kind": "lowrank", "method": recipe.factorization, "ranks": _prefixed(ranks)}], {"ranks": ranks}


def _finetune(detector: nn.Module, run: DetectRecipe, data: Any, recipe: Any, hooks: list[Any]) -> None:
    if recipe.finetune_epochs == 0:
        return
    tuned = dataclasses.replace(run, lr=recipe.lr or run.lr, warmup_steps=0, time_limit=0.0)
    model = TrainStep(detector)
    loader = train_loader(data.train, tuned, DistributedContext())
    schedule, _ = budget_hooks(tuned, recipe.finetune_epochs * len(loader))
    optimizer = build_optimizer(tuned, model)
    trainer = Trainer(model, optimizer, loader, hooks=[*schedule, *hooks], max_epochs=recipe.finetune_epochs,
                      clip_norm=tuned.clip_norm, seed=recipe.seed)  # fmt: skip
    trainer.train()
    detector.eval()


def _run_recipe(weights: Path) -> DetectRecipe:
    config = weights.parent / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"weights={str(weights)!r}: no config.json beside it (the detector's run folder gives its data)"
        )
    return load_recipe(DetectRecipe, config)


def _measure(models: dict[str, nn.Module], size: int, recipe: Any) -> dict[str, dict[str, Any]]:
    latency = {
        batch: paired_latency_ms(models, [torch.zeros(3, size, size)] * batch, repeats=recipe.latency_repeats)
        for batch in (1, 8)
    }
    rows = {}
    for name, model in models.items():
        macs, params = macs_and_params(_inner(model).backbone, torch.zeros(1, 3, size, size))
        rows[name] = {"parameters": sum(p.numel() for p in model.parameters()), "backbone_parameters": params,
                      "backbone_macs": macs, "latency_ms_b1": latency[1][name],
                      "latency_ms_b8": latency[8][name]}  # fmt: skip
    return rows


def compress_detector(method: str, recipe: Any, run_dir: str | Path) -> dict[str, Any]:
    """Compress the backbone of the detector ``recipe.weights`` (a :class:`~visionkit.compress.run.
    CompressRecipe`), fine-tune, measure against the original and write ``run_dir`` (``config.json``,
    ``model.pt``, ``report.json`` with AP before / after / after fine-tuning). Returns the report.

    Raises:
        ConfigError: no ``config.json`` beside the weights, a layer outside the backbone, or a method that
            does not apply (``lowrank factorization=svd``).
        CheckpointError: the weights are not a readable detector file (names it).
    """
    weights = Path(recipe.weights)
    detector, label_map = load_detector(weights)
    run = _run_recipe(weights)
    saved = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # before any work: an unwritable folder fails now
    save_recipe(recipe, run_dir / "config.json")
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    size = run.min_size or run.image_size
    compressed = copy.deepcopy(detector)
    # the compression first: it checks the layer names and ratios, in seconds, before the data is read
    edits, details = _apply(method, _inner(compressed), recipe, torch.zeros(2, 3, size, size))
    data = build_datasets(run)

    def average_precision(model: nn.Module) -> float:
        return evaluate_detector(model, data.val, label_map.num_classes, batch_size=run.batch_size).metrics[
            "AP"
        ]

    ap = {"original": average_precision(detector), "compressed": average_precision(compressed)}
    masks = details.pop("masks", None)
    hooks = [MaskHook(_inner(compressed).backbone, masks)] if masks else []
    _finetune(compressed, run, data, recipe, hooks)
    ap["finetuned"] = average_precision(compressed)
    base = {"task": "detect", "model": saved["model"], "arguments": saved["arguments"],
            "label_map": saved["label_map"], "input_scale": saved.get("input_scale")}  # fmt: skip
    path = compress_io.save_compressed(run_dir / "model.pt", _inner(compressed), base, edits)
    _check_reload(path, compressed, size)
    rows = _measure({"original": detector, "compressed": compressed}, size, recipe)
    rows["original"].update(bytes_on_disk=serialized_bytes(_inner(detector).state_dict()), AP=ap["original"])
    rows["compressed"].update(bytes_on_disk=path.stat().st_size, AP_before_finetune=ap["compressed"],
                              AP=ap["finetuned"])  # fmt: skip
    if method == "share":
        details["storage"] = storage_report(compressed)
    before, after = rows["original"], rows["compressed"]
    report = {
        "method": method, "weights": str(weights), "model": saved["model"], "task": "detect",
        "speedup_b1": before["latency_ms_b1"] / after["latency_ms_b1"],
        "speedup_b8": before["latency_ms_b8"] / after["latency_ms_b8"],
        "size_ratio": before["bytes_on_disk"] / after["bytes_on_disk"],
        "backbone_macs_ratio": before["backbone_macs"] / after["backbone_macs"],
        "AP_change_points": 100 * (after["AP"] - before["AP"]),
        "rows": rows, "details": details,
    }  # fmt: skip
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _check_reload(path: Path, compressed: nn.Module, size: int) -> None:
    """The saved file must rebuild the same detector: equal detections on a fixed image."""
    reloaded = load_compressed_detector(path)
    image = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        ours, theirs = compressed.eval()(image)[0], reloaded(image)[0]
    if any(not torch.equal(ours[key], theirs[key]) for key in ours):
        raise CheckpointError(f"{path}: the reloaded detector differs from the compressed one")  # a bug
