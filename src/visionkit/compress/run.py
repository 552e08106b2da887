"""``visionkit compress METHOD weights=RUN/model.pt ...`` on a classifier: compress, fine-tune, measure
(on a detector run's ``model.pt``, :mod:`visionkit.compress.detect` compresses its backbone).

Methods: ``prune`` (structured channel pruning, or ``structured=false`` for magnitude sparsity),
``share`` (k-means weight sharing) and ``lowrank`` (SVD / separable / Tucker-2). The run folder gets::

    run/
      config.json     the compress recipe (and the method)
      model.pt        the compressed model (visionkit.compress.io; load with load_compressed_classifier)
      report.json     parameters, MACs, bytes on disk, latency at batch 1 and 8, accuracy before / after /
                      after fine-tuning, and the method's own details (kept channels, ranks, storage)
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from visionkit.compress import io as compress_io
from visionkit.compress.detect import DETECTOR_FORMAT, compress_detector
from visionkit.compress.lowrank import factorize_model
from visionkit.compress.measure import macs_and_params, paired_latency_ms, serialized_bytes
from visionkit.compress.prune import MaskHook, layer_sparsity, magnitude_prune, storage_ratio
from visionkit.compress.share import codebook_parameter_groups, share_weights, storage_report
from visionkit.compress.structured import check_ratio, prune_channels
from visionkit.data.digits import Digits
from visionkit.engine import optim as optimizers
from visionkit.engine import schedules
from visionkit.engine.classify import ClassifyRecipe, build_model, evaluate_classifier, load_classifier
from visionkit.engine.config import recipe_to_dict, save_recipe
from visionkit.engine.hooks import LRScheduleHook
from visionkit.engine.segment.model import model_format
from visionkit.engine.trainer import Trainer
from visionkit.errors import ConfigError

__all__ = ["METHODS", "CompressRecipe", "compress_classifier", "compress_model", "load_compressed_classifier"]

METHODS = ("prune", "share", "lowrank")
CLASSIFIER_LR = 0.01  # fine-tuning learning rate of a classifier when lr=0 (SGD, momentum 0.9)


@dataclass(frozen=True)
class CompressRecipe:
    """Settings of one compression run; every field can be overridden as ``key=value``."""

    weights: str = ""  # a classify run's model.pt
    ratio: float = 0.5  # prune: fraction of channels (structured) or of weights (structured=false)
    structured: bool = True
    criterion: Literal["l1", "bn"] = "l1"
    scope: Literal["local", "global"] = "local"
    round_to: int = 8  # structured: kept channels rounded to a multiple of this
    rounds: int = 1  # unstructured: iterative pruning rounds (cubic schedule), fine-tuning after each
    bits: int = 4  # share: 2^bits shared values per layer
    factorization: Literal["svd", "separable", "tucker2"] = "svd"
    energy: float = 0.9  # lowrank: kept fraction of the squared singular values
    layers: str = ""  # comma-separated layer names (default: all that the method applies to)
    finetune_epochs: int = 3
    lr: float = 0.0  # fine-tuning; 0: 0.01 (classifiers, SGD) or the detector run's own lr
    batch_size: int = 64
    seed: int = 0
    threads: int = 0
    latency_repeats: int = 30

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        checks = {  # key: (valid, what is valid)
            "round_to": (self.round_to >= 1, ">= 1"),
            "rounds": (self.rounds >= 1, ">= 1"),
            "bits": (1 <= self.bits <= 8, "an integer from 1 to 8"),
            "energy": (0.0 < self.energy <= 1.0, "a fraction in (0, 1]"),
            "finetune_epochs": (self.finetune_epochs >= 0, ">= 0"),
            "lr": (self.lr >= 0, ">= 0 (0: the default)"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "latency_repeats": (self.latency_repeats >= 1, ">= 1"),
        }
        for key, (ok, valid) in checks.items():
            if not ok:
                raise ConfigError(f"{key}={getattr(self, key)!r}: expected {valid}")

    def layer_names(self) -> list[str] | None:
        names = [name.strip() for name in self.layers.split(",") if name.strip()]
        return names or None


def _input_example(model: nn.Module, batch: int) -> torch.Tensor:
    return torch.zeros(batch, 1, 8, 8)  # digits: the model's input adapter resizes and repeats channels


def _finetune(
    model: nn.Module, recipe: CompressRecipe, loader: DataLoader, epochs: int, hooks: list[Any]
) -> None:
    if epochs == 0:
        return
    lr = recipe.lr or CLASSIFIER_LR
    optimizer = optimizers.SGD(codebook_parameter_groups(model, lr), lr=lr, momentum=0.9)
    schedule = schedules.CosineLR(optimizer, total_steps=epochs)
    hooks = [LRScheduleHook(schedule, interval="epoch"), *hooks]
    Trainer(model, optimizer, loader, loss_fn=nn.functional.cross_entropy, hooks=hooks, max_epochs=epochs,
            seed=recipe.seed).train()  # fmt: skip
    model.eval()


def _apply(
    method: str, model: nn.Module, recipe: CompressRecipe, loader: DataLoader
) -> tuple[nn.Module, list, dict]:
    """Compress ``model`` (a copy is returned), fine-tune, and return ``(model, edits, details)``."""
    layers = recipe.layer_names()
    if method == "prune" and recipe.structured:
        result = prune_channels(model, _input_example(model, 2), recipe.ratio, criterion=recipe.criterion,
                                scope=recipe.scope, round_to=recipe.round_to, layers=layers)  # fmt: skip
        return result.model, [{"kind": "channels", "shapes": result.shapes}], {"kept_channels": result.kept}
    model = copy.deepcopy(model)
    if method == "prune":
        from visionkit.compress.prune import sparsity_schedule

        targets = sparsity_schedule(recipe.ratio, recipe.rounds, "cubic" if recipe.rounds > 1 else "one_shot")
        names: list[str] = []
        for index, target in enumerate(targets):
            masks = magnitude_prune(model, target, scope="global" if recipe.scope == "global" else "layer",
                                    layers=layers)  # fmt: skip
            names = sorted(masks)
            if index < len(targets) - 1:
                _finetune(
                    model,
                    recipe,
                    loader,
                    max(1, recipe.finetune_epochs // recipe.rounds),
                    [MaskHook(model, masks)],
                )
        sparsity = layer_sparsity(model)
        return model, [{"kind": "sparse", "layers": names}], {"sparsity": sparsity, "masks": masks}
    if method == "share":
        shared = share_weights(model, recipe.bits, layers=layers)
        return model, [{"kind": "share", "bits": recipe.bits, "layers": sorted(shared)}], {}
    ranks = factorize_model(model, recipe.factorization, energy=recipe.energy, layers=layers)
    if not ranks:
        raise ConfigError(
            f"lowrank: no layer would get smaller at energy={recipe.energy} ({recipe.factorization})"
        )
    return model, [{"kind": "lowrank", "method": recipe.factorization, "ranks": ranks}], {"ranks": ranks}


def _accuracy(model: nn.Module, loader: DataLoader) -> float:
    return evaluate_classifier(model, loader, torch.device("cpu"))[1]


def _base(train_recipe: ClassifyRecipe) -> dict[str, Any]:
    return {"task": "classify", "recipe": recipe_to_dict(train_recipe), "num_classes": len(Digits.classes)}


def _build_base(base: dict[str, Any]) -> nn.Module:
    recipe = ClassifyRecipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in base["recipe"].items()})
    return build_model(recipe, num_classes=int(base["num_classes"]))


def load_compressed_classifier(path: str | Path) -> nn.Module:
    """The compressed classifier saved by :func:`compress_classifier` (eval mode)."""
    return compress_io.load_compressed(path, _build_base)


def _measure(models: dict[str, nn.Module], recipe: CompressRecipe) -> dict[str, dict[str, float]]:
    latency = {}
    for batch in (1, 8):
        example = _input_example(models["original"], batch)
        latency[batch] = paired_latency_ms(models, example, repeats=recipe.latency_repeats)
    rows = {}
    for name, model in models.items():
        macs, params = macs_and_params(model, _input_example(model, 1))
        rows[name] = {"parameters": params, "macs": macs, "latency_ms_b1": latency[1][name],
                      "latency_ms_b8": latency[8][name]}  # fmt: skip
    return rows


def _check_request(method: str, recipe: CompressRecipe) -> None:
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: expected one of {list(METHODS)}")
    if not recipe.weights:
        raise ConfigError("weights: give the model to compress as weights=RUN/model.pt")
    if not Path(recipe.weights).is_file():
        raise ConfigError(f"weights={recipe.weights!r}: no such file (a classify or detect run's model.pt)")


def compress_model(method: str, recipe: CompressRecipe, run_dir: str | Path) -> dict[str, Any]:
    """:func:`compress_classifier`, or :func:`~visionkit.compress.detect.compress_detector` when
    ``recipe.weights`` is a detector's ``model.pt`` (``train detect``)."""
    _check_request(method, recipe)
    if model_format(recipe.weights) == DETECTOR_FORMAT:
        return compress_detector(method, recipe, run_dir)
    return compress_classifier(method, recipe, run_dir)


def compress_classifier(method: str, recipe: CompressRecipe, run_dir: str | Path) -> dict[str, Any]:
    """Compress the classifier ``recipe.weights`` by ``method``, fine-tune it, measure it against the
    original and write the run folder (module docstring). Returns the report."""
    _check_request(method, recipe)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # before any work: an unwritable folder fails now
    save_recipe(recipe, run_dir / "config.json")
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    original, train_recipe = load_classifier(recipe.weights)
    splits = {name: Digits(name, seed=train_recipe.seed) for name in ("train", "test")}
    train_loader = DataLoader(splits["train"], batch_size=recipe.batch_size, shuffle=True)
    test_loader = DataLoader(splits["test"], batch_size=512)
    compressed, edits, details = _apply(method, original, recipe, train_loader)
    accuracy = {
        "original": _accuracy(original, test_loader),
        "compressed": _accuracy(compressed, test_loader),
    }
    hooks = [MaskHook(compressed, details.pop("masks"))] if "masks" in details else []
    _finetune(compressed, recipe, train_loader, recipe.finetune_epochs, hooks)
    accuracy["finetuned"] = _accuracy(compressed, test_loader)
    path = compress_io.save_compressed(run_dir / "model.pt", compressed, _base(train_recipe), edits)
    reloaded = load_compressed_classifier(path)
    example = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        if not torch.equal(reloaded(example), compressed.eval()(example)):
            raise ConfigError(
                f"{path}: the reloaded model differs from the compressed one"
            )  # a bug if raised
    rows = _measure({"original": original, "compressed": compressed}, recipe)
    rows["original"]["bytes_on_disk"] = serialized_bytes(original.state_dict())
    rows["compressed"]["bytes_on_disk"] = path.stat().st_size
    rows["original"]["test_accuracy"] = accuracy["original"]
    rows["compressed"]["test_accuracy_before_finetune"] = accuracy["compressed"]
    rows["compressed"]["test_accuracy"] = accuracy["finetuned"]
    if method == "share":
        details["storage"] = storage_report(compressed)
    if method == "prune" and not recipe.structured:
        details["sparse_storage_ratio"] = storage_ratio(compressed)
    report = {"method": method, "weights": recipe.weights, "model": train_recipe.model, **rows_summary(rows),
              "rows": rows, "details": details}  # fmt: skip
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def rows_summary(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Ratios original / compressed (speed-up, size, MACs) and the accuracy change in points."""
    before, after = rows["original"], rows["compressed"]

    def ratio(key: str) -> float:
        return before[key] / after[key] if after[key] else math.inf

    return {
        "speedup_b1": ratio("latency_ms_b1"),
        "speedup_b8": ratio("latency_ms_b8"),
        "size_ratio": ratio("bytes_on_disk"),
        "macs_ratio": ratio("macs"),
        "accuracy_change_points": 100 * (after["test_accuracy"] - before["test_accuracy"]),
    }
