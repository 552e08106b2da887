"""TensorBoard event files beside a run's CSV log: step losses and learning rate, epoch metrics, and a few
images with their predictions (``pip install visionkit[tensorboard]``).

TensorBoard is optional: :func:`tensorboard_writer` returns ``None`` (and the caller prints one line) when
it is not installed, and the hook then does nothing.

Example:
    >>> hook = TensorBoardHook(None)  # no writer: a no-op hook
    >>> hook.every_steps
    10
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from visionkit.engine.trainer import HookBase

__all__ = ["TensorBoardHook", "tensorboard_writer"]


def tensorboard_writer(directory: str | os.PathLike[str]) -> Any | None:
    """A ``SummaryWriter`` writing into ``directory``, or ``None`` when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.fspath(directory))


class TensorBoardHook(HookBase):
    """Log to ``writer``: every ``every_steps`` steps the loss terms, their sum and the learning rate; after
    each epoch the numbers of the epoch record (AP, ...); with ``images`` (a callable returning
    ``{tag: HWC uint8 array}``), those images after every epoch that was evaluated."""

    def __init__(
        self,
        writer: Any | None,
        every_steps: int = 10,
        images: Callable[[], dict[str, np.ndarray]] | None = None,
        image_key: str = "AP",
    ) -> None:
        self.writer, self.every_steps, self.images, self.image_key = writer, every_steps, images, image_key

    def after_step(self) -> None:
        trainer = self.trainer
        if self.writer is None or not trainer.stepped or trainer.step % self.every_steps:
            return
        for name, value in trainer.last_losses.items():
            self.writer.add_scalar(f"loss/{name}", value, trainer.step)
        self.writer.add_scalar("loss/total", sum(trainer.last_losses.values()), trainer.step)
        self.writer.add_scalar("lr", trainer.optimizer.param_groups[0]["lr"], trainer.step)

    def after_epoch(self) -> None:
        if self.writer is None:
            return
        record = self.trainer.history[-1]
        for key, value in record.items():
            if key not in ("epoch", "step"):
                self.writer.add_scalar(f"epoch/{key}", value, self.trainer.step)
        if self.images is not None and self.image_key in record:
            for tag, picture in self.images().items():
                self.writer.add_image(tag, picture, self.trainer.step, dataformats="HWC")
        self.writer.flush()

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()
