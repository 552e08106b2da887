"""Trainer hooks: learning-rate schedule, checkpoints, evaluation, CSV/TensorBoard logging, rich progress,
early stopping and an exponential moving average of the weights.

Hooks run in the order given to :class:`~visionkit.engine.trainer.Trainer`; put :class:`EvalHook` before
:class:`EarlyStopping` and :class:`CheckpointHook` last so a checkpoint sees the epoch's metrics.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionkit.engine.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from visionkit.engine.distributed import unwrap_model
from visionkit.engine.trainer import HookBase

SCHEDULE_INTERVALS = ("step", "epoch")


class LRScheduleHook(HookBase):
    """Step a learning-rate scheduler after every optimizer step (``"step"``) or every epoch (``"epoch"``)."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, interval: str = "step") -> None:
        if interval not in SCHEDULE_INTERVALS:
            raise ValueError(f"interval must be one of {SCHEDULE_INTERVALS}, got {interval!r}")
        self.scheduler, self.interval = scheduler, interval

    def after_step(self) -> None:
        if self.interval == "step" and self.trainer.stepped:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def _all_finite(module: nn.Module) -> list[str]:
    """Names of floating-point parameters/buffers holding NaN or Inf."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


class CheckpointHook(HookBase):
    """Write ``checkpoint_<step>.pt`` atomically every ``every_steps`` steps and/or ``every_epochs`` epochs.

    A checkpoint is never written from non-finite weights (the last good one stays); only the ``keep``
    newest files are kept. Resume with ``trainer.resume(directory)``, which falls back past a truncated
    or incompatible newest file.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every_steps: int | None = None,
        every_epochs: int | None = 1,
        keep: int = 2,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory, self.every_steps, self.every_epochs, self.keep = (
            Path(directory),
            every_steps,
            every_epochs,
            keep,
        )
        self.last_path: Path | None = None

    def save(self) -> Path:
        """Write a checkpoint of the trainer now; refuses (``FloatingPointError``) non-finite weights."""
        bad = _all_finite(self.trainer.model)
        if bad:
            raise FloatingPointError(
                f"refusing to write a checkpoint at step {self.trainer.step}: non-finite values in {bad[:5]}"
            )
        path = save_checkpoint(self.trainer.state_dict(), checkpoint_path(self.directory, self.trainer.step))
        prune_checkpoints(self.directory, self.keep)
        self.last_path = path
        return path

    def after_step(self) -> None:
        if self.every_steps and self.trainer.stepped and self.trainer.step % self.every_steps == 0:
            self.save()

    def after_epoch(self) -> None:
        if self.every_epochs and self.trainer.epoch % self.every_epochs == 0:
            self.save()


class EvalHook(HookBase):
    """Call ``evaluate(model) -> dict[str, float]`` every ``every_epochs`` epochs; the metrics join the
    epoch record in ``trainer.history``. The model is in eval mode under ``torch.no_grad()``, and the
    RNG states are restored afterwards, so evaluating never changes the training run."""

    def __init__(self, evaluate: Callable[[nn.Module], dict[str, float]], every_epochs: int = 1) -> None:
        self.evaluate, self.every_epochs = evaluate, every_epochs

    def after_epoch(self) -> None:
        trainer = self.trainer
        if trainer.epoch % self.every_epochs and trainer.epoch != trainer.max_epochs:
            return
        rng = capture_rng_state()
        was_training = trainer.model.training
        trainer.model.eval()
        try:
            with torch.no_grad():
                metrics = self.evaluate(trainer.model)
        finally:
            trainer.model.train(was_training)
            restore_rng_state(rng)
        trainer.history[-1].update({name: float(value) for name, value in metrics.items()})


class CSVLogger(HookBase):
    """Write ``trainer.history`` (one row per epoch) to ``path`` after every epoch; also to TensorBoard
    when ``tensorboard_dir`` is given and ``torch.utils.tensorboard`` is importable."""

    def __init__(
        self, path: str | os.PathLike[str], tensorboard_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.writer: Any = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self.writer = None
            else:
                self.writer = SummaryWriter(str(tensorboard_dir))

    def after_epoch(self) -> None:
        history = self.trainer.history
        columns = list(dict.fromkeys(key for record in history for key in record))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        if self.writer is not None:
            for key, value in history[-1].items():
                self.writer.add_scalar(key, value, int(history[-1]["epoch"]))

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressHook(HookBase):
    """A ``rich`` progress bar per epoch showing the loss, the learning rate and samples per second."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        self.samples, self.start = 0, 0.0

    def before_train(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.3g}  {task.fields[rate]:.0f} samples/s"
            ),
            TimeElapsedColumn(),
            disable=not self.enabled,
        )
        self.progress.start()

    def before_step(self) -> None:
        trainer = self.trainer
        if self.task is None or trainer.batch_in_epoch == 0:
            if self.task is not None:
                self.progress.remove_task(self.task)
            total = len(trainer.train_loader) if hasattr(trainer.train_loader, "__len__") else None  # type: ignore[arg-type]
            self.task = self.progress.add_task(
                "train",
                total=total,
                completed=trainer.batch_in_epoch,
                epoch=trainer.epoch + 1,
                loss=0.0,
                lr=0.0,
                rate=0.0,
            )
            self.samples, self.start = 0, time.perf_counter()

    def after_step(self) -> None:
        trainer = self.trainer
        self.samples += trainer.last_batch_size
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        loss = sum(trainer.last_losses.values())
        lr = trainer.optimizer.param_groups[0]["lr"]
        self.progress.update(self.task, advance=1, loss=loss, lr=lr, rate=rate)

    def after_train(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class EarlyStopping(HookBase):
    """Stop when ``monitor`` (a key of the epoch record) has not improved by ``min_delta`` for ``patience``
    epochs; with ``restore_best`` the best weights are loaded back when training ends."""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0 or min_delta < 0:
            raise ValueError(f"patience and min_delta must be >= 0, got {patience} and {min_delta}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.restore_best = restore_best
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def after_epoch(self) -> None:
        record = self.trainer.history[-1]
        if self.monitor not in record:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, but the epoch record has {sorted(record)}"
            )
        value = record[self.monitor]
        improved = (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, self.trainer.epoch, 0
            self.best_weights = {
                k: v.detach().clone() for k, v in unwrap_model(self.trainer.model).state_dict().items()
            }
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.trainer.should_stop = True

    def after_train(self) -> None:
        if self.restore_best and self.best_weights is not None:
            unwrap_model(self.trainer.model).load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.best_weights = state["best_weights"]


class EMAHook(HookBase):
    """Exponential moving average of the weights, ``ema = d * ema + (1 - d) * weights`` after each
    optimizer step (buffers are copied). Evaluate ``hook.ema_model`` for the smoothed weights.

    ``d = decay``, or with ``ramp > 0`` ``d = decay · (1 − exp(−updates / ramp))`` (YOLOv5's ramp: early
    averages forget the random initial weights quickly, which matters in short runs)."""

    def __init__(self, decay: float = 0.999, ramp: float = 0.0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if not ramp >= 0.0:
            raise ValueError(f"ramp must be >= 0, got {ramp}")
        self.decay, self.ramp = decay, ramp
        self.ema_model: nn.Module | None = None
        self.updates = 0

    def before_train(self) -> None:
        if self.ema_model is None:
            self.ema_model = copy.deepcopy(unwrap_model(self.trainer.model)).eval().requires_grad_(False)

    @torch.no_grad()
    def after_step(self) -> None:
        if not self.trainer.stepped or self.ema_model is None:
            return
        self.updates += 1
        decay = self.decay * (1.0 - math.exp(-self.updates / self.ramp)) if self.ramp else self.decay
        model_state = unwrap_model(self.trainer.model).state_dict()
        for name, average in self.ema_model.state_dict().items():
            if average.is_floating_point():
                average.mul_(decay).add_(model_state[name].detach(), alpha=1.0 - decay)
            else:
                average.copy_(model_state[name])

    def state_dict(self) -> dict[str, Any]:
        assert self.ema_model is not None or self.updates == 0
        return {
            "updates": self.updates,
            "ema": None if self.ema_model is None else self.ema_model.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        if state["ema"] is not None:
            if self.ema_model is None:
                self.ema_model = copy.deepcopy(unwrap_model(self.trainer.model)).eval().requires_grad_(False)
            self.ema_model.load_state_dict(state["ema"])


__all__ = [
    "CSVLogger",
    "CheckpointHook",
    "EMAHook",
    "EarlyStopping",
    "EvalHook",
    "LRScheduleHook",
    "ProgressHook",
]
