"""The training loop: a short loop plus hooks (detectron2 ``HookBase`` style).

The loop does only what every run needs — move the batch to the device, compute the losses, check
they are finite, back-propagate (with mixed precision and gradient accumulation), clip, step — and
leaves schedule, checkpoints, evaluation, logging, progress, early stopping, EMA and diagnostics to
hooks (:mod:`visionkit.engine.hooks`).

Loss contract:

* ``loss_fn is None``: ``model(batch)`` returns a scalar loss tensor or a ``dict[str, Tensor]`` of
  named scalar losses (what detectors return in training); the total is their sum.
* ``loss_fn`` given: the batch is an ``(inputs, targets)`` pair and ``loss_fn(model(inputs), targets)``
  returns a scalar tensor or a dict of them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from visionkit.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_latest_checkpoint,
    restore_rng_state,
    seed_everything,
)
from visionkit.engine.distributed import unwrap_model
from visionkit.errors import NonFiniteGradientError, NonFiniteLossError

LossOutput = torch.Tensor | Mapping[str, torch.Tensor]
NONFINITE_POLICIES = ("skip", "stop")


class HookBase:
    """Base class of trainer hooks; override any of the five callbacks. ``self.trainer`` is set by
    :class:`Trainer`. Hooks with state to resume implement ``state_dict``/``load_state_dict``."""

    trainer: Trainer

    def before_train(self) -> None:
        """Called once before the first epoch (after a resume has been applied)."""

    def before_step(self) -> None:
        """Called before each batch."""

    def after_step(self) -> None:
        """Called after each batch; ``trainer.stepped`` says whether the optimizer stepped."""

    def after_epoch(self) -> None:
        """Called after each epoch; ``trainer.history[-1]`` is the epoch record (add metrics to it)."""

    def after_train(self) -> None:
        """Called once at the end, also when training stops with an error."""


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested lists, tuples and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def _named_losses(output: LossOutput) -> dict[str, torch.Tensor]:
    if isinstance(output, torch.Tensor):
        if output.numel() != 1:
            raise ValueError(f"the loss must be a scalar tensor, got shape {tuple(output.shape)}")
        return {"loss": output.reshape(())}
    if isinstance(output, Mapping) and output:
        return {str(name): value.reshape(()) for name, value in output.items()}
    raise TypeError(
        f"the model/loss_fn must return a scalar tensor or a dict of them, got {type(output).__name__}"
    )


class Trainer:
    """Train ``model`` with ``optimizer`` over ``train_loader`` for ``max_epochs`` epochs.

    Args:
        model: the model; its device is the training device unless ``device`` is given.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters.
        train_loader: an iterable of batches, re-iterated each epoch (a ``DataLoader``).
        loss_fn: see the module docstring for the loss contract.
        hooks: run in the given order at each callback (put evaluation before early stopping).
        max_epochs: number of epochs.
        device: training device (default: the model's).
        amp: mixed precision — float16 with a grad scaler on CUDA, bfloat16 autocast on CPU.
        accumulation_steps: batches whose gradients are summed (each loss divided by it) per step.
        clip_norm: clip the total gradient 2-norm to this (``None``: no clipping; the norm is still
            checked for NaN/Inf).
        clip_value: clamp each gradient entry to ``[-clip_value, clip_value]``.
        on_nonfinite_grad: ``"skip"`` (drop the step, count it in ``skipped_steps``) or ``"stop"``
            (raise :class:`NonFiniteGradientError`) when the gradient norm is NaN/Inf.
        seed: seed Python/NumPy/torch before training (``None``: leave the RNGs alone).
        max_steps: stop after this many optimizer steps (``None``: no limit).

    Example:
        >>> model = nn.Linear(2, 1)
        >>> data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(3)]
        >>> trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), data,
        ...                   loss_fn=nn.functional.mse_loss, max_epochs=2, seed=0)
        >>> trainer.train(); trainer.step, len(trainer.history)
        (6, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable[Any],
        *,
        loss_fn: Callable[[Any, Any], LossOutput] | None = None,
        hooks: Sequence[HookBase] = (),
        max_epochs: int = 1,
        device: str | torch.device | None = None,
        amp: bool = False,
        accumulation_steps: int = 1,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        on_nonfinite_grad: str = "skip",
        seed: int | None = None,
        max_steps: int | None = None,
    ) -> None:
        if max_epochs < 1 or accumulation_steps < 1:
            raise ValueError(
                f"max_epochs and accumulation_steps must be >= 1, got {max_epochs} and {accumulation_steps}"
            )
        if on_nonfinite_grad not in NONFINITE_POLICIES:
            raise ValueError(
                f"on_nonfinite_grad must be one of {NONFINITE_POLICIES}, got {on_nonfinite_grad!r}"
            )
        for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        first = next(model.parameters(), None)
        self.device = (
            torch.device(device)
            if device is not None
            else (first.device if first is not None else torch.device("cpu"))
        )
        self.model = model.to(self.device)
        self.optimizer, self.train_loader, self.loss_fn = optimizer, train_loader, loss_fn
        self.max_epochs, self.max_steps, self.seed = max_epochs, max_steps, seed
        self.accumulation_steps, self.clip_norm, self.clip_value = accumulation_steps, clip_norm, clip_value
        self.on_nonfinite_grad = on_nonfinite_grad
        self.amp = amp and self.device.type in ("cuda", "cpu")
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.device.type == "cuda")
        self.hooks = list(hooks)
        for hook in self.hooks:
            hook.trainer = self
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken (including skipped ones)
        self.iteration = 0  # batches processed in total
        self.batch_in_epoch = 0
        self.skipped_steps = 0
        self.stepped = False
        self.should_stop = False
        self.last_losses: dict[str, float] = {}
        self.last_batch_size = 0
        self.history: list[dict[str, float]] = []
        self._epoch_loss_sum = 0.0
        self._epoch_samples = 0
        self._epoch_rng: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None

    # ---------------------------------------------------------------- loop
    def train(self) -> None:
        """Run the loop from the current position (0, or where :meth:`load_state_dict` left it)."""
        if self.seed is not None and self.iteration == 0:
            seed_everything(self.seed)
        try:
            self._call("before_train")
            while self.epoch < self.max_epochs and not self.should_stop:
                self._train_one_epoch()
        finally:
            self._call("after_train")

    def _train_one_epoch(self) -> None:
        self.model.train()
        if self._epoch_rng is None or self.batch_in_epoch == 0:
            self._epoch_rng = capture_rng_state()  # the sampler's shuffle is drawn from this state
            self._epoch_loss_sum = 0.0
        else:
            restore_rng_state(self._epoch_rng)  # resume mid-epoch: replay the same shuffle
        sampler = getattr(self.train_loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        skip = self.batch_in_epoch
        batches = iter(self.train_loader)
        for _ in range(skip):
            next(batches)  # already trained on before the interruption
        if self._resume_rng is not None and skip:
            restore_rng_state(self._resume_rng)  # the RNG as it was after the last trained batch
        self._resume_rng = None
        total = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None  # type: ignore[arg-type]
        start, self._epoch_samples = time.perf_counter(), 0
        for batch in batches:
            self._call("before_step")
            last = total is not None and self.batch_in_epoch + 1 == total
            self.run_step(batch, force_step=last)
            self._call("after_step")
            if self.should_stop or (self.max_steps is not None and self.step >= self.max_steps):
                self.should_stop = True
                break
        if self.should_stop and total is not None and self.batch_in_epoch < total:
            return  # stopped mid-epoch: no epoch record
        record = {
            "epoch": float(self.epoch + 1),
            "step": float(self.step),
            "train_loss": self._epoch_loss_sum / max(self.batch_in_epoch, 1),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "epoch_seconds": time.perf_counter() - start,
            "samples_per_second": self._epoch_samples / max(time.perf_counter() - start, 1e-9),
        }
        self.epoch += 1
        self.batch_in_epoch = 0
        self.history.append(record)
        self._call("after_epoch")

    def compute_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        """Named scalar losses of one batch, per the loss contract in the module docstring."""
        if self.loss_fn is None:
            return _named_losses(self.model(batch))
        if not isinstance(batch, Sequence) or len(batch) != 2:
            raise TypeError("with loss_fn given, each batch must be an (inputs, targets) pair")
        inputs, targets = batch
        return _named_losses(self.loss_fn(self.model(inputs), targets))

    def run_step(self, batch: Any, *, force_step: bool = False) -> None:
        """Forward, check, backward one batch; step the optimizer every ``accumulation_steps`` batches."""
        batch = move_to_device(batch, self.device)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        with autocast:
            losses = self.compute_losses(batch)
        total = cast(torch.Tensor, sum(losses.values()))
        values = {name: float(value.detach()) for name, value in losses.items()}
        if not math.isfinite(float(total.detach())):
            terms = ", ".join(f"{name}={value}" for name, value in values.items())
            raise NonFiniteLossError(
                f"loss is not finite at iteration {self.iteration} (step {self.step}): {terms}"
            )
        self.last_losses = values
        self.last_batch_size = _batch_size(batch)
        self._epoch_samples += self.last_batch_size
        self.scaler.scale(total.float() / self.accumulation_steps).backward()
        self._epoch_loss_sum += float(total.detach())
        self.iteration += 1
        self.batch_in_epoch += 1
        self.stepped = force_step or self.batch_in_epoch % self.accumulation_steps == 0
        if self.stepped:
            self._optimizer_step()

    def _optimizer_step(self) -> None:
        self.step += 1
        self.scaler.unscale_(self.optimizer)
        parameters = [
            p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(parameters, self.clip_value)
        if self.clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.clip_norm)
        else:  # measured, not changed: a non-finite gradient is caught with or without clipping
            norm = _total_norm(parameters)
        if not torch.isfinite(norm) and not self.scaler.is_enabled():  # (the scaler skips such steps itself)
            if self.on_nonfinite_grad == "stop":
                raise NonFiniteGradientError(f"gradient norm is {float(norm)} at step {self.step}")
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.stepped = False
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _call(self, name: str) -> None:
        for hook in self.hooks:
            getattr(hook, name)()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, scaler, counters, RNG, hooks."""
        return {
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "counters": {
                "epoch": self.epoch,
                "step": self.step,
                "iteration": self.iteration,
                "skipped_steps": self.skipped_steps,
            },
            "sampler": {"batch_in_epoch": self.batch_in_epoch, "epoch_rng": self._epoch_rng},
            "epoch_loss_sum": self._epoch_loss_sum,
            "history": [dict(record) for record in self.history],
            "rng": capture_rng_state(),
            "hooks": {
                str(i): hook.state_dict() for i, hook in enumerate(self.hooks) if hasattr(hook, "state_dict")
            },
        }

    def resume(self, path: str | os.PathLike[str]) -> Path:
        """Load a checkpoint file, or the newest good one in a folder (falling back past bad files).

        Returns:
            The file loaded. Raises :class:`~visionkit.engine.checkpoint.CheckpointError` naming it
            when nothing is usable.
        """
        path = Path(path)
        if path.is_dir():
            path, state = load_latest_checkpoint(path, map_location=self.device)
        else:
            state = load_checkpoint(path, map_location=self.device)
        self.load_state_dict(state)
        return path

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the next :meth:`train` resumes where it stopped."""
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        counters = state["counters"]
        self.epoch, self.step = counters["epoch"], counters["step"]
        self.iteration, self.skipped_steps = counters["iteration"], counters["skipped_steps"]
        self.batch_in_epoch = state["sampler"]["batch_in_epoch"]
        self._epoch_rng = state["sampler"]["epoch_rng"]
        self._epoch_loss_sum = state["epoch_loss_sum"]
        self.history = [dict(record) for record in state["history"]]
        for index, hook_state in state["hooks"].items():
            self.hooks[int(index)].load_state_dict(hook_state)  # type: ignore[attr-defined]
        self._resume_rng = state["rng"]
        restore_rng_state(state["rng"])
        self.should_stop = False


def _total_norm(parameters: list[torch.Tensor]) -> torch.Tensor:
    """2-norm of all gradients together (what ``clip_grad_norm_`` measures)."""
    if not parameters:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()), None)
        return _batch_size(batch) if batch is not None else 0
    if isinstance(batch, tuple | list) and batch:
        return (
            _batch_size(batch[0])
            if isinstance(batch[0], torch.Tensor | tuple | list | Mapping)
            else len(batch)
        )
    return 0


__all__ = ["HookBase", "NonFiniteGradientError", "NonFiniteLossError", "Trainer", "move_to_device"]
