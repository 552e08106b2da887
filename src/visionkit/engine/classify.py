"""Image-classification training from a recipe: ``visionkit train classify`` (and reusable from Python).

:func:`train_classifier` builds the data (``digits``), the model (``visionkit.models.create_model``),
the optimizer and schedule named in a :class:`ClassifyRecipe`, runs the
:class:`~visionkit.engine.trainer.Trainer` with its hooks, and writes a run folder::

    run/
      config.json           the recipe
      log.csv               one row per epoch: losses, accuracies, lr, time
      checkpoints/          checkpoint_<step>.pt (atomic, resumable with resume=<run>/checkpoints)
      learning_curves.png   train/val loss and accuracy, with the fit diagnosis
      gradient_flow.png     mean gradient norm per layer
      metrics.json          final test accuracy, best val accuracy, time, diagnosis
      model.pt              the trained model's recipe and weights (:func:`load_classifier` reads it)

``teacher=RUN/model.pt`` trains the model as a student of a trained classifier with Hinton's soft targets
(:mod:`visionkit.losses.distill`: ``alpha · T² KL + (1 − alpha) · CE`` at ``temperature``) and, with
``hint=STUDENT_LAYER:TEACHER_LAYER``, a FitNets hint term weighted by ``hint_weight``. The teacher, the hooks
and the loss are set up by :func:`visionkit.compress.distill.distill_classifier` (``compress`` ranks above
``engine``), which hands them to :func:`train_classifier` as ``wrap_student``: one training loop for both.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from visionkit.data.digits import Digits
from visionkit.engine import optim as optimizers
from visionkit.engine import schedules
from visionkit.engine.compressed import compressed_task, is_compressed, load_compressed_model
from visionkit.engine.config import check_types, is_integer, is_number, recipe_to_dict, require, save_recipe
from visionkit.engine.diagnostics import (
    GradientFlowHook,
    GradientNormMonitor,
    diagnose_fit,
    plot_learning_curves,
)
from visionkit.engine.distributed import (
    DistributedContext,
    all_reduce_sum,
    init_distributed,
    shard_indices,
    wrap_model,
)
from visionkit.engine.hooks import (
    CheckpointHook,
    CSVLogger,
    EarlyStopping,
    EMAHook,
    EvalHook,
    LRScheduleHook,
    ProgressHook,
)
from visionkit.engine.regularization import weight_decay_groups
from visionkit.engine.trainer import Trainer
from visionkit.errors import CheckpointError, ConfigError
from visionkit.torchfile import UnreadableFileError, load_error_summary, load_weights_only

OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ScheduleName = Literal[
    "none", "step", "multistep", "exponential", "exp_decay", "inverse_time", "inverse_sqrt", "cosine"
]


@dataclass(frozen=True)
class ClassifyRecipe:
    """Everything a classification run needs; every field can be overridden as ``key=value``."""

    model: str = "resnet_digits"
    data: Literal["digits"] = "digits"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    optimizer: OptimizerName = "momentum"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: ScheduleName = "cosine"
    warmup_epochs: int = 0
    step_size: int = 3
    milestones: tuple[int, ...] = (5, 8)
    gamma: float = 0.1
    decay_k: float = 0.1
    clip_norm: float | None = None
    accumulation_steps: int = 1
    amp: bool = False
    ema_decay: float | None = None
    early_stopping_patience: int | None = None
    image_size: int = 0  # 0: 8 for *_digits models, 32 otherwise
    seed: int = 0
    threads: int = 0  # 0: torch's default
    progress: bool = True
    teacher: str = ""  # a classify run's model.pt: distil from it (soft targets)
    temperature: float = 4.0  # distillation only
    alpha: float = 0.9  # distillation only: weight of the soft-target term
    hint: str = ""  # distillation only: STUDENT_LAYER:TEACHER_LAYER for a FitNets hint (1x1 adapter)
    hint_weight: float = 1.0  # distillation only: weight of the hint term

    def __post_init__(self) -> None:
        check_types(self)
        _check_classify_recipe(self)


def _check_classify_recipe(r: ClassifyRecipe) -> None:
    """The value checks of :class:`ClassifyRecipe` (a :class:`ConfigError` names the key)."""
    import visionkit.models.small  # noqa: F401  (registers resnet_digits)
    from visionkit.models import list_models

    names = list_models()
    if r.model not in names:
        close = difflib.get_close_matches(r.model, names, n=4)
        raise ConfigError(
            f"model={r.model!r}: unknown" + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    for key in ("epochs", "batch_size", "step_size", "accumulation_steps"):
        require(is_integer(getattr(r, key), 1), key, getattr(r, key), "an integer >= 1")
    for key in ("warmup_epochs", "image_size", "threads"):
        require(is_integer(getattr(r, key), 0), key, getattr(r, key), "an integer >= 0")
    require(r.warmup_epochs < r.epochs, "warmup_epochs", r.warmup_epochs, f"fewer than epochs ({r.epochs})")
    require(is_number(r.lr, 0, 10, open_low=True), "lr", r.lr, "a finite learning rate in (0, 10]")
    require(is_number(r.momentum, 0, 1) and r.momentum < 1, "momentum", r.momentum, "a number in [0, 1)")
    require(is_number(r.weight_decay, 0, 1), "weight_decay", r.weight_decay, "a number in [0, 1]")
    require(all(m >= 1 for m in r.milestones) and list(r.milestones) == sorted(r.milestones), "milestones",
            r.milestones, "increasing epochs >= 1")  # fmt: skip
    require(is_number(r.gamma, 0, 1, open_low=True), "gamma", r.gamma, "a decay factor in (0, 1]")
    require(is_number(r.decay_k, 0, open_low=True), "decay_k", r.decay_k, "a finite number > 0")
    require(r.clip_norm is None or is_number(r.clip_norm, 0, open_low=True), "clip_norm", r.clip_norm,
            "None or a finite number > 0")  # fmt: skip
    require(r.ema_decay is None or (is_number(r.ema_decay, 0, 1, open_low=True) and r.ema_decay < 1),
            "ema_decay", r.ema_decay, "None or a decay in (0, 1)")  # fmt: skip
    require(r.early_stopping_patience is None or is_integer(r.early_stopping_patience, 0),
            "early_stopping_patience", r.early_stopping_patience, "None or an integer >= 0")  # fmt: skip
    require(is_integer(r.seed), "seed", r.seed, "an integer")
    require(is_number(r.temperature, 0, open_low=True), "temperature", r.temperature, "a positive number")
    require(is_number(r.alpha, 0, 1), "alpha", r.alpha, "a weight in [0, 1]")
    require(is_number(r.hint_weight, 0), "hint_weight", r.hint_weight, "a finite number >= 0")
    if r.hint:
        parts = r.hint.split(":")
        require(len(parts) == 2 and all(p.strip() for p in parts), "hint", r.hint,
                "STUDENT_LAYER:TEACHER_LAYER (module names, e.g. 1.stages.1:1.stages.1)")  # fmt: skip
        require(bool(r.teacher), "hint", r.hint, "a teacher too (teacher=RUN/model.pt)")


def build_optimizer(recipe: ClassifyRecipe, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over weight-decay groups (no decay on biases and norm parameters)."""
    groups = weight_decay_groups(model, recipe.weight_decay)
    name, lr = recipe.optimizer, recipe.lr
    if name in ("sgd", "momentum", "nesterov"):
        momentum = 0.0 if name == "sgd" else recipe.momentum
        return optimizers.SGD(groups, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adamw":
        return optimizers.AdamW(groups, lr=lr)
    classes = {"adagrad": optimizers.Adagrad, "rmsprop": optimizers.RMSprop, "adam": optimizers.Adam}
    return classes[name](groups, lr=lr)


def build_schedule(recipe: ClassifyRecipe, optimizer: torch.optim.Optimizer) -> schedules.ClosedFormLR:
    """The recipe's per-epoch schedule, with linear warm-up over ``warmup_epochs`` when > 0."""
    decay_epochs = max(recipe.epochs - recipe.warmup_epochs, 1)
    factories: dict[str, Any] = {
        "none": lambda o: schedules.ExponentialLR(o, gamma=1.0),
        "step": lambda o: schedules.StepLR(o, recipe.step_size, recipe.gamma),
        "multistep": lambda o: schedules.MultiStepLR(o, recipe.milestones, recipe.gamma),
        "exponential": lambda o: schedules.ExponentialLR(o, recipe.gamma),
        "exp_decay": lambda o: schedules.ExponentialDecayLR(o, recipe.decay_k),
        "inverse_time": lambda o: schedules.InverseTimeLR(o, recipe.decay_k),
        "inverse_sqrt": lambda o: schedules.InverseSqrtLR(o),
        "cosine": lambda o: schedules.CosineLR(o, total_steps=decay_epochs),
    }
    schedule = factories[recipe.schedule](optimizer)
    if recipe.warmup_epochs > 0:
        return schedules.LinearWarmup(optimizer, schedule, recipe.warmup_epochs, start_factor=0.1)
    return schedule


class _ToModelInput(nn.Module):
    """Resize 8x8 digits to ``size`` and repeat the gray channel to the model's input channels."""

    def __init__(self, size: int, channels: int) -> None:
        super().__init__()
        self.size, self.channels = size, channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.size:
            images = nn.functional.interpolate(
                images, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return images.expand(-1, self.channels, -1, -1) if self.channels != images.shape[1] else images


def build_model(recipe: ClassifyRecipe, num_classes: int) -> nn.Module:
    """``create_model(recipe.model)`` behind an input adapter (size and channels for the digits)."""
    import visionkit.models.small  # noqa: F401  (registers resnet_digits)
    from visionkit.models import create_model

    model = create_model(recipe.model, num_classes=num_classes)
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 1
    size = recipe.image_size or (8 if recipe.model.endswith("_digits") else 32)
    return nn.Sequential(_ToModelInput(size, channels), model)


def save_classifier(model: nn.Module, recipe: ClassifyRecipe, path: str | Path) -> Path:
    """Write ``model.pt``: the recipe, the class count and the weights of ``model`` (a build_model)."""
    path = Path(path)
    torch.save({"task": "classify", "recipe": recipe_to_dict(recipe), "num_classes": len(Digits.classes),
                "state_dict": model.state_dict()}, path)  # fmt: skip
    return path


def load_classifier(path: str | Path) -> tuple[nn.Module, ClassifyRecipe]:
    """The model saved by :func:`save_classifier` (in eval mode) and its recipe; also a compressed
    classifier (``visionkit compress``), rebuilt from the description in its file
    (:mod:`visionkit.engine.compressed`), with the recipe of the run it was compressed from.

    Raises:
        CheckpointError: the file is missing, unreadable or not a classify ``model.pt`` (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"classifier weights {path} do not exist")
    try:
        saved = load_weights_only(path)
        if is_compressed(saved):  # `visionkit compress` on a classifier: the base holds the run's recipe
            task = compressed_task(saved)
            if task != "classify":
                raise CheckpointError(f"{path}: a compressed {task!r} model, not a classifier")
            recipe = _saved_recipe(saved["base"])
            model = load_compressed_model(path, saved, "classify", lambda base: _saved_model(base, recipe))
            return model, recipe
        recipe = _saved_recipe(saved)
        model = _saved_model(saved, recipe)
        model.load_state_dict(saved["state_dict"])
    except CheckpointError:
        raise
    except UnreadableFileError as error:
        raise CheckpointError(f"{path} is not a classify model.pt ({error})") from None
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:  # readable, of another kind
        raise CheckpointError(
            f"{path} is not a classify model.pt ({type(error).__name__}: {load_error_summary(error)})"
        ) from error
    return model.eval(), recipe


def _saved_recipe(saved: dict[str, Any]) -> ClassifyRecipe:
    return ClassifyRecipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["recipe"].items()})


def _saved_model(saved: dict[str, Any], recipe: ClassifyRecipe) -> nn.Module:
    return build_model(recipe, num_classes=int(saved["num_classes"]))


def _loaders(recipe: ClassifyRecipe, context: DistributedContext) -> dict[str, DataLoader]:
    """Train loader (a ``DistributedSampler`` shard of ``batch_size / world_size`` per rank when
    distributed, so the global batch stays ``batch_size``) and sharded evaluation loaders."""
    splits = {name: Digits(name, seed=recipe.seed) for name in ("train", "val", "test")}
    if recipe.batch_size % context.world_size:
        raise ValueError(
            f"batch_size={recipe.batch_size} must be divisible by the {context.world_size} processes"
        )
    sampler: DistributedSampler | None = None
    if context.distributed:
        sampler = DistributedSampler(
            splits["train"], context.world_size, context.rank, shuffle=True, seed=recipe.seed, drop_last=True
        )
    loaders = {
        "train": DataLoader(
            splits["train"],
            batch_size=recipe.batch_size // context.world_size,
            shuffle=sampler is None,
            sampler=sampler,
        )
    }
    for name in ("val", "test"):
        shard = Subset(splits[name], shard_indices(len(splits[name]), context))
        loaders[name] = DataLoader(shard, batch_size=512)
    return loaders


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader: DataLoader, device: torch.device, context: DistributedContext | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) over ``loader``, summed over all ranks."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    model.train(was_training)
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], context or DistributedContext())
    return loss_sum / count, correct / count


StudentWrapper = Callable[[nn.Module, torch.device], tuple[nn.Module, Callable[[Any, torch.Tensor], Any]]]


def train_classifier(
    recipe: ClassifyRecipe,
    run_dir: str | Path,
    *,
    resume: str | Path | None = None,
    wrap_student: StudentWrapper | None = None,
) -> dict[str, Any]:
    """Train per ``recipe``, write the run folder (module docstring) and return the final metrics.

    Args:
        wrap_student: ``(model, device) -> (trained_module, loss_fn)``: what is trained instead of the
            built model (which must be a submodule of it) and the loss on its outputs; the built model alone
            is evaluated and saved. Required with ``recipe.teacher``
            (:func:`visionkit.compress.distill.distill_classifier` passes it).

    Raises:
        ConfigError: ``recipe.teacher`` is set and no ``wrap_student`` is given.
    """
    if recipe.teacher and wrap_student is None:
        raise ConfigError(
            f"teacher={recipe.teacher!r}: distillation is set up by visionkit.compress.distill."
            "distill_classifier (what `visionkit train classify teacher=...` calls)"
        )
    run_dir = Path(run_dir)
    context = init_distributed()
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, run_dir / "config.json")
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    loaders = _loaders(recipe, context)
    student = build_model(recipe, num_classes=len(Digits.classes))
    device = context.device
    trained: nn.Module = student
    loss_fn: Any = nn.functional.cross_entropy
    if wrap_student is not None:
        trained, loss_fn = wrap_student(student, device)
        if not any(module is student for module in trained.modules()):
            raise TypeError("wrap_student must return a module that holds the student as a submodule")
    model = wrap_model(trained, context)
    optimizer = build_optimizer(recipe, model)

    def evaluate(model: nn.Module) -> dict[str, float]:
        _, train_accuracy = evaluate_classifier(model, loaders["train"], device, context)
        val_loss, val_accuracy = evaluate_classifier(model, loaders["val"], device, context)
        return {"train_accuracy": train_accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy}

    monitor = GradientNormMonitor(model)
    hooks: list[Any] = [
        LRScheduleHook(build_schedule(recipe, optimizer), interval="epoch"),
        EvalHook(evaluate),
    ]
    if recipe.early_stopping_patience is not None:
        hooks.append(EarlyStopping("val_accuracy", mode="max", patience=recipe.early_stopping_patience))
    if recipe.ema_decay is not None:
        hooks.append(EMAHook(recipe.ema_decay))
    hooks.append(GradientFlowHook(monitor, run_dir / "gradient_flow.png" if context.is_main else None))
    if context.is_main:  # only rank 0 writes files
        hooks += [
            CSVLogger(run_dir / "log.csv"),
            ProgressHook(enabled=recipe.progress),
            CheckpointHook(run_dir / "checkpoints", every_epochs=1, keep=2),
        ]
    trainer = Trainer(
        model, optimizer, loaders["train"], loss_fn=loss_fn, hooks=hooks,
        max_epochs=recipe.epochs, device=device, amp=recipe.amp, accumulation_steps=recipe.accumulation_steps,
        clip_norm=recipe.clip_norm, seed=recipe.seed,
    )  # fmt: skip
    if resume is not None:
        trainer.resume(resume)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    monitor.remove()
    test_loss, test_accuracy = evaluate_classifier(model, loaders["test"], device, context)
    diagnosis = diagnose_fit(trainer.history)
    metrics = {
        "model": recipe.model,
        "parameters": sum(p.numel() for p in student.parameters()),
        "processes": context.world_size,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "skipped_steps": trainer.skipped_steps,
        "train_seconds": round(seconds, 2),
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "best_val_accuracy": max(r["val_accuracy"] for r in trainer.history),
        "final_train_accuracy": trainer.history[-1]["train_accuracy"],
        "diagnosis": diagnosis.verdict,
        "evidence": diagnosis.evidence,
        "gradient_flow": monitor.check().status if monitor.history else "none",
    }
    if context.is_main:
        save_classifier(student, recipe, run_dir / "model.pt")
        plot_learning_curves(trainer.history, run_dir / "learning_curves.png", diagnosis)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


__all__ = [
    "ClassifyRecipe",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "evaluate_classifier",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]
