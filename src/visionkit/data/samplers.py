"""Class-imbalance tools (handbook §30): class weights, a class-balanced over-sampler and an under-sampler.

* :func:`class_weights` — ``n_samples / (n_classes * count_c)`` (scikit-learn's ``"balanced"``), for a
  weighted loss such as ``cross_entropy(weight=...)``.
* :class:`ClassBalancedSampler` — draws indices with replacement, each class equally likely
  (minority classes are repeated: over-sampling).
* :class:`UnderSampler` — each epoch keeps a random subset of every class of the minority class's
  size (majority classes are cut: under-sampling).

Both samplers draw from their own generator seeded with ``seed + epoch`` (call ``set_epoch``; the
:class:`~visionkit.engine.trainer.Trainer` does), or from torch's global RNG when ``seed`` is ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _labels(labels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(labels)
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D sequence of class indices, got shape {tuple(tensor.shape)}"
        )
    if tensor.is_floating_point() or bool((tensor < 0).any()):
        raise ValueError("labels must be non-negative integers")
    return tensor.long()


def class_counts(labels: Sequence[int] | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Number of samples of each class, shape ``(num_classes,)``."""
    tensor = _labels(labels)
    size = int(tensor.max()) + 1 if num_classes is None else num_classes
    if int(tensor.max()) >= size:
        raise ValueError(f"label {int(tensor.max())} is out of range for num_classes={size}")
    return torch.bincount(tensor, minlength=size)


def class_weights(labels: Sequence[int] | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Balanced class weights ``n_samples / (n_classes * count_c)``, shape ``(num_classes,)`` float32.

    Raises:
        ValueError: a class in ``range(num_classes)`` has no sample (its weight would be infinite).

    Example:
        >>> class_weights([0, 0, 0, 1])
        tensor([0.6667, 2.0000])
    """
    counts = class_counts(labels, num_classes)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(f"classes {missing} have no samples; cannot weight them")
    return (counts.sum() / (len(counts) * counts.double())).float()


class _EpochSampler(Sampler[int]):
    def __init__(self, labels: Sequence[int] | torch.Tensor, seed: int | None) -> None:
        self.labels = _labels(labels)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use a different (deterministic) draw for each epoch."""
        self.epoch = epoch

    def _generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed + self.epoch)


class ClassBalancedSampler(_EpochSampler):
    """Over-sample: draw ``num_samples`` indices with replacement, every class with equal probability.

    Args:
        labels: class index per sample, ``(N,)``.
        num_samples: draws per epoch (default: ``num_classes * largest class count``).
        seed: see the module docstring.

    Example:
        >>> sampler = ClassBalancedSampler([0] * 90 + [1] * 10, seed=0)
        >>> picks = torch.tensor(list(sampler))
        >>> len(picks), bool(0.4 < (picks >= 90).float().mean() < 0.6)
        (180, True)
    """

    def __init__(
        self, labels: Sequence[int] | torch.Tensor, num_samples: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__(labels, seed)
        counts = torch.bincount(self.labels)
        present = counts > 0
        self.num_samples = int(present.sum() * counts.max()) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        self.weights = 1.0 / counts.double()[self.labels]

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        draws = torch.multinomial(
            self.weights, self.num_samples, replacement=True, generator=self._generator()
        )
        return iter(draws.tolist())


class UnderSampler(_EpochSampler):
    """Under-sample: each epoch, a random subset of every class as large as the smallest class, shuffled.

    Example:
        >>> sampler = UnderSampler([0] * 90 + [1] * 10, seed=0)
        >>> picks = torch.tensor(list(sampler))
        >>> len(picks), int((picks >= 90).sum())
        (20, 10)
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, seed: int | None = None) -> None:
        super().__init__(labels, seed)
        counts = torch.bincount(self.labels)
        self.per_class = int(counts[counts > 0].min())
        self.classes = torch.nonzero(counts > 0).flatten().tolist()

    def __len__(self) -> int:
        return self.per_class * len(self.classes)

    def __iter__(self) -> Iterator[int]:
        generator = self._generator()
        chosen = []
        for label in self.classes:
            members = torch.nonzero(self.labels == label).flatten()
            chosen.append(members[torch.randperm(len(members), generator=generator)[: self.per_class]])
        picks = torch.cat(chosen)
        return iter(picks[torch.randperm(len(picks), generator=generator)].tolist())


__all__ = ["ClassBalancedSampler", "UnderSampler", "class_counts", "class_weights"]
