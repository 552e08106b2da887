"""What several experiments share: the digits as tensors, a small classification run through the engine's
:class:`~visionkit.engine.trainer.Trainer`, and a matplotlib import that never opens a window.

The lab has no training loop of its own: :func:`fit` builds the engine's optimizer, hooks and trainer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from visionkit.data.digits import Digits
from visionkit.engine import optim
from visionkit.engine.hooks import EarlyStopping, EvalHook
from visionkit.engine.trainer import HookBase, Trainer

__all__ = [
    "DigitsTensors",
    "FitResult",
    "accuracy_of",
    "digits_tensors",
    "fit",
    "median_seconds",
    "mlp",
    "pyplot",
    "shapes_boxes",
]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class DigitsTensors:
    """The scikit-learn digits split train/val/test as ``(N, 1, 8, 8)`` float images in [0, 1] and labels."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def digits_tensors(seed: int = 0) -> DigitsTensors:
    """The stratified digits splits (70/15/15, fixed by ``seed``) as tensors."""
    splits = {name: Digits(name, seed=seed) for name in ("train", "val", "test")}
    return DigitsTensors(*((s.images, s.targets) for s in splits.values()))


@torch.no_grad()
def accuracy_of(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``model`` in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    value = float((model(images).argmax(1) == labels).float().mean())
    model.train(was_training)
    return value


@dataclass
class FitResult:
    """The trainer's per-epoch history (train/val loss and accuracy added) and its counters."""

    history: list[dict[str, float]]
    steps: int
    skipped_steps: int

    def last(self, key: str) -> float:
        return self.history[-1][key]


def _optimizer(name: str, parameters: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return optim.SGD(parameters, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'momentum' or 'adam', got {name!r}")


def fit(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int = 32,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    seed: int = 0,
    patience: int | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy,
    sampler: Any = None,
    hooks: Sequence[HookBase] = (),
    evaluate: bool = True,
) -> FitResult:
    """Train ``model`` on ``train`` with the engine's :class:`Trainer`; record train/val loss and accuracy
    each epoch (a classifier's cross-entropy; ``evaluate=False`` for other models); stop early on
    validation loss after ``patience`` bad epochs (best weights restored).

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (the trainer's own check).
    """
    images, labels = train
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(images, labels),
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
    )

    def measure(model: nn.Module) -> dict[str, float]:
        record = {}
        for split, (x, y) in (("train", train), ("val", val)):
            logits = model(x)
            record[f"{split}_loss"] = float(nn.functional.cross_entropy(logits, y))
            record[f"{split}_accuracy"] = float((logits.argmax(1) == y).float().mean())
        return record

    all_hooks: list[HookBase] = [EvalHook(measure)] if evaluate else []
    if patience is not None:
        all_hooks.append(EarlyStopping("val_loss", mode="min", patience=patience))
    all_hooks += list(hooks)
    trainer = Trainer(
        model,
        _optimizer(optimizer, model.parameters(), lr, weight_decay),
        loader,
        loss_fn=loss_fn,
        hooks=all_hooks,
        max_epochs=epochs,
        clip_norm=clip_norm,
        seed=seed,
    )
    trainer.train()
    return FitResult(trainer.history, trainer.step, trainer.skipped_steps)


def mlp(
    sizes: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    *,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """``Flatten → (Linear → [BatchNorm] → activation → [Dropout])* → Linear`` over ``sizes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def median_seconds(function: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls after ``warmup`` calls (CPU timing:
    noisy on a shared machine, so verdicts on times use generous criteria)."""
    import statistics
    import time

    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def shapes_boxes(count: int, seed: int, config: Any = None) -> list[Tensor]:
    """Ground-truth boxes (xyxy float32 pixels) of ``count`` ``shapes`` images drawn from ``seed``."""
    from visionkit.data.shapes import render_shapes

    return [torch.from_numpy(render_shapes(i, seed, config)["boxes"]).float() for i in range(count)]


def image_panels(panels: Sequence[tuple[Any, str]], *, cmap: str = "coolwarm", **imshow: Any) -> Any:
    """A figure with one ``imshow`` panel per ``(2-D array, title)``, without ticks."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 2.9), squeeze=False)
    for axis, (image, title) in zip(axes[0], panels, strict=True):
        axis.imshow(image.numpy() if hasattr(image, "numpy") else image, cmap=cmap, **imshow)
        axis.set_title(title, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    return figure
