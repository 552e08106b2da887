"""What the training runs of every task module share (``engine/detect/``, ``engine/segment/``): the recipe
keys of training and of the run, the device, resuming a run folder, the optimizer, the per-step CSV log
and the best-model hook.

A task's recipe is a frozen dataclass with (at least) the fields these functions read: ``epochs``,
``batch_size``, ``eval_every``, ``warmup_steps``, ``patience``, ``workers``, ``threads``, ``time_limit``,
``optimizer`` (``"adamw"`` or ``"sgd"``), ``lr``, ``momentum``, ``weight_decay``, ``clip_norm``,
``ema_decay``, ``device``, ``seed`` and ``resume``.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from visionkit.engine import optim as optimizers
from visionkit.engine.budget import TimeLimit, WarmupCosine
from visionkit.engine.checkpoint import list_checkpoints
from visionkit.engine.config import apply_overrides, is_integer, is_number, load_recipe, require
from visionkit.engine.distributed import DistributedContext, init_distributed
from visionkit.engine.regularization import weight_decay_groups
from visionkit.engine.tensorboard import tensorboard_writer
from visionkit.engine.trainer import HookBase, Trainer
from visionkit.errors import ConfigError, NonFiniteLossError

__all__ = [
    "BestModel",
    "StepLogger",
    "budget_hooks",
    "build_optimizer",
    "check_amp",
    "check_resume",
    "check_run_fields",
    "check_training_fields",
    "distributed_context",
    "recipe_with_resume",
    "resolve_device",
    "run_folder",
    "run_tensorboard",
    "train_or_explain",
]

RecipeT = TypeVar("RecipeT")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_training_fields(r: Any) -> None:
    """The training keys of a task recipe (a :class:`ConfigError` names the key, value and valid range)."""
    for key in ("epochs", "batch_size", "eval_every"):
        require(is_integer(getattr(r, key), 1), key, getattr(r, key), "an integer >= 1")
    for key in ("warmup_steps", "patience", "workers", "threads"):
        require(is_integer(getattr(r, key), 0), key, getattr(r, key), "an integer >= 0")
    require(is_number(r.time_limit, 0), "time_limit", r.time_limit, "seconds >= 0 (0: no limit)")
    require(is_number(r.lr, 0, 10, open_low=True), "lr", r.lr, "a finite learning rate in (0, 10]")
    require(is_number(r.momentum, 0, 1) and r.momentum < 1, "momentum", r.momentum, "a number in [0, 1)")
    require(is_number(r.weight_decay, 0, 1), "weight_decay", r.weight_decay, "a number in [0, 1]")
    require(is_number(r.clip_norm, 0, open_low=True), "clip_norm", r.clip_norm, "a finite number > 0")
    require(
        is_number(r.ema_decay, 0, 1) and r.ema_decay < 1,
        "ema_decay",
        r.ema_decay,
        "0 (off) or a decay in (0, 1)",
    )


def check_run_fields(r: Any) -> None:
    """``device`` (auto, cpu, cuda, cuda:N, mps) and ``seed`` (an integer)."""
    require(bool(_DEVICE.match(r.device)), "device", r.device, "auto, cpu, cuda, cuda:N or mps")
    require(is_integer(r.seed), "seed", r.seed, "an integer")


def resolve_device(text: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a
    :class:`ConfigError` names the devices this machine has when the one asked for is missing."""
    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text not in available:
        raise ConfigError(
            f"device={text!r}: not available on this machine; available: {', '.join(available)}"
        )
    return torch.device(text)


def recipe_with_resume(recipe_type: type[RecipeT], overrides: Sequence[str]) -> RecipeT:
    """The recipe of ``key=value`` overrides: on the defaults, or — with ``resume=RUN_DIR`` — on that run's
    own recipe (``config.json``), so ``resume=RUN_DIR`` alone continues the run as it was."""
    base = recipe_type()
    folders = [
        item.partition("=")[2].strip() for item in overrides if item.partition("=")[0].strip() == "resume"
    ]
    if folders and folders[-1]:
        config = Path(folders[-1]) / "config.json"
        if not config.is_file():
            raise ConfigError(f"resume={folders[-1]!r}: not a run folder (no config.json there)")
        base = load_recipe(recipe_type, config)
    return apply_overrides(base, list(overrides))


def check_resume(recipe: Any, free_keys: Collection[str]) -> Path | None:
    """The run folder to resume, after checking that its recipe equals this one (``free_keys`` aside); a
    :class:`ConfigError` lists the differing keys."""
    if not recipe.resume:
        return None
    folder = Path(recipe.resume)
    config = folder / "config.json"
    if not config.is_file():
        raise ConfigError(f"resume={recipe.resume!r}: not a run folder (no config.json there)")
    saved = load_recipe(type(recipe), config)
    differing = [
        f"{field.name} (run: {getattr(saved, field.name)!r}, now: {getattr(recipe, field.name)!r})"
        for field in dataclasses.fields(recipe)
        if field.name not in free_keys and getattr(saved, field.name) != getattr(recipe, field.name)
    ]
    if differing:
        raise ConfigError(
            f"resume={recipe.resume!r}: the recipe differs from the run's in " + "; ".join(differing)
        )
    if not list_checkpoints(folder / "checkpoints"):
        raise ConfigError(f"resume={recipe.resume!r}: the run has no checkpoint to continue from")
    return folder


def run_folder(
    recipe: Any, run_dir: str | Path | None, free_keys: Collection[str], task: str
) -> tuple[Path, bool]:
    """The folder of a run and whether it resumes: ``recipe.resume`` (checked by :func:`check_resume`;
    ``run_dir`` must then be ``None`` or that folder), else ``run_dir``, else
    ``runs/<task>-<model>-<time>``."""
    resumed = check_resume(recipe, free_keys)
    if resumed is not None:
        if run_dir is not None and Path(run_dir).resolve() != resumed.resolve():
            raise ConfigError(f"resume={recipe.resume!r} continues in its own folder, not in {run_dir}")
        return resumed, True
    if run_dir is None:
        run_dir = Path("runs") / f"{task}-{recipe.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(run_dir), False


def distributed_context(device: str) -> DistributedContext:
    """Join torchrun's process group (a single process without one) on the recipe's ``device``."""
    resolved = resolve_device(device)
    context = init_distributed(use_cuda=resolved.type == "cuda")
    return context if context.distributed else dataclasses.replace(context, device=resolved)


def check_amp(amp: bool, device: torch.device) -> None:
    """Mixed precision runs on CUDA (fp16) or the CPU (bf16); a :class:`ConfigError` elsewhere."""
    if amp and device.type not in ("cuda", "cpu"):
        raise ConfigError(f"amp=true: mixed precision runs on CUDA (fp16) or the CPU (bf16), not {device}")


def budget_hooks(recipe: Any, steps: int) -> tuple[list[HookBase], TimeLimit | None]:
    """The warm-up + cosine schedule over ``steps`` (ending with ``recipe.time_limit`` when set) and the
    time limit itself (``None`` without one)."""
    schedule = WarmupCosine(
        recipe.lr, recipe.warmup_steps, max(1, steps), time_limit=recipe.time_limit or None
    )
    limit = TimeLimit(recipe.time_limit) if recipe.time_limit else None
    return [schedule, *([limit] if limit is not None else [])], limit


def run_tensorboard(enabled: bool, folder: Path, log: Callable[[str], None]) -> Any | None:
    """A TensorBoard writer in ``folder`` when ``enabled`` and installed (else ``None``, said once)."""
    writer = tensorboard_writer(folder) if enabled else None
    if enabled and writer is None:
        log("tensorboard: not installed (pip install visionkit[tensorboard]); logging to log.csv only")
    return writer


def train_or_explain(trainer: Trainer, run_dir: Path) -> None:
    """``trainer.train()``; a non-finite loss stops it with the iteration, the loss terms and the last good
    checkpoint of ``run_dir`` to resume from."""
    try:
        trainer.train()
    except NonFiniteLossError as error:
        checkpoints = list_checkpoints(run_dir / "checkpoints")
        last = (
            f"last good checkpoint {checkpoints[0]} (resume={run_dir})"
            if checkpoints
            else "no checkpoint yet"
        )
        raise NonFiniteLossError(f"{error}; training stopped, {last}; try a lower lr") from None


def build_optimizer(recipe: Any, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over the trainable parameters, no weight decay on biases and norms."""
    groups = []
    for group in weight_decay_groups(model, recipe.weight_decay):
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({**group, "params": params})
    if recipe.optimizer == "sgd":
        return optimizers.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    return optimizers.AdamW(groups, lr=recipe.lr)


class StepLogger(HookBase):
    """Every optimizer step's loss terms, their sum and the learning rate, kept in ``records`` and written
    to ``path`` (CSV) when training ends (the data of per-step training curves)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict[str, float]] = []

    def after_step(self) -> None:
        trainer = self.trainer
        losses = dict(trainer.last_losses)
        self.records.append(
            {
                "step": float(trainer.step),
                **losses,
                "loss": sum(losses.values()),
                "lr": float(trainer.optimizer.param_groups[0]["lr"]),
            }
        )

    def after_train(self) -> None:
        if self.path is None or not self.records:
            return
        columns = list(dict.fromkeys(key for record in self.records for key in record))
        with self.path.open("a" if self.path.exists() else "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            if file.tell() == 0:
                writer.writeheader()
            writer.writerows(self.records)

    def state_dict(self) -> dict[str, Any]:
        return {"records": len(self.records)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None  # rows of the interrupted part were written (or lost with it); new ones are appended


class BestModel(HookBase):
    """After each evaluated epoch: keep ``best.pt`` at the best value of ``monitor`` in the epoch record
    (``save`` writes it) and stop after ``patience`` evaluations without improvement (0: never)."""

    def __init__(self, save: Callable[[str], None] | None, patience: int = 0, monitor: str = "AP") -> None:
        self.save, self.patience, self.monitor = save, patience, monitor
        self.best, self.best_epoch, self.bad = -math.inf, 0, 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value``; True (and ``best.pt`` written) when it is a new best."""
        if value > self.best:
            self.best, self.best_epoch, self.bad = value, epoch, 0
            if self.save is not None:
                self.save("best.pt")
            return True
        self.bad += 1
        return False

    def after_epoch(self) -> None:
        record = self.trainer.history[-1]
        if self.monitor not in record:
            return
        self.update(record[self.monitor], self.trainer.epoch)
        if self.patience and self.bad >= self.patience:
            self.trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad = state["best"], state["best_epoch"], state["bad"]
