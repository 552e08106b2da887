"""Regularization (handbook §1, §26): weight decay without norm/bias parameters, explicit L1/L2
penalties, and model ensembles (average of the members' probabilities).

Dropout is ``torch.nn.Dropout`` placed in the model (active in ``model.train()``, identity in
``model.eval()``); early stopping is :class:`visionkit.engine.hooks.EarlyStopping`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or "norm" in type(module).__name__.lower()


def split_decay_parameters(
    model: nn.Module, *, exclude_norm: bool = True, exclude_bias: bool = True
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into ``(decay, no_decay)``: biases and normalization-layer parameters
    (scale and shift) go to ``no_decay`` when excluded — decaying them only fights the normalization."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if (exclude_norm and _is_norm(module)) or (exclude_bias and name == "bias"):
                no_decay.append(parameter)
            else:
                decay.append(parameter)
    return decay, no_decay


def weight_decay_groups(
    model: nn.Module, weight_decay: float, *, exclude_norm: bool = True, exclude_bias: bool = True
) -> list[dict]:
    """Parameter groups for an optimizer: L2 ``weight_decay`` on weights, 0 on biases/norm parameters.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        >>> groups = weight_decay_groups(model, 1e-4)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
        [(1, 0.0001), (3, 0.0)]
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay, no_decay = split_decay_parameters(model, exclude_norm=exclude_norm, exclude_bias=exclude_bias)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _weights(model_or_parameters: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(model_or_parameters, nn.Module):
        return list(split_decay_parameters(model_or_parameters)[0])
    return list(model_or_parameters)


def l1_penalty(model_or_parameters: nn.Module | Iterable[torch.Tensor], coefficient: float) -> torch.Tensor:
    """``coefficient * sum |w|`` over the weights (a model's biases and norm parameters excluded).

    Add it to the loss; its gradient ``coefficient * sign(w)`` pushes weights to exactly zero (sparsity).

    Example:
        >>> l1_penalty([torch.tensor([1.0, -2.0])], 0.5)
        tensor(1.5000)
    """
    weights = _weights(model_or_parameters)
    if not weights:
        raise ValueError("l1_penalty got no parameters")
    return coefficient * torch.stack([w.abs().sum() for w in weights]).sum()


def l2_penalty(model_or_parameters: nn.Module | Iterable[torch.Tensor], coefficient: float) -> torch.Tensor:
    """``coefficient / 2 * sum w^2``; its gradient ``coefficient * w`` is SGD's ``weight_decay``.

    Example:
        >>> l2_penalty([torch.tensor([1.0, -2.0])], 0.5)
        tensor(1.2500)
    """
    weights = _weights(model_or_parameters)
    if not weights:
        raise ValueError("l2_penalty got no parameters")
    return coefficient / 2 * torch.stack([w.pow(2).sum() for w in weights]).sum()


def ensemble_probabilities(models: Sequence[nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """Average of the members' softmax probabilities, ``(N, num_classes)`` (models in eval mode)."""
    if not models:
        raise ValueError("ensemble needs at least one model")
    with torch.no_grad():
        return torch.stack([model.eval()(inputs).softmax(-1) for model in models]).mean(0)


class Ensemble(nn.Module):
    """A model ensemble (handbook §26 "model ensembles"): returns ``log`` of the averaged probabilities,
    so ``argmax`` gives the ensemble prediction and ``nll_loss`` its log-loss.

    Example:
        >>> members = [nn.Linear(4, 3) for _ in range(3)]
        >>> [round(p, 5) for p in Ensemble(members)(torch.randn(2, 4)).exp().sum(-1).tolist()]
        [1.0, 1.0]
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("Ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([member(inputs).softmax(-1) for member in self.members]).mean(0)
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


__all__ = [
    "Ensemble",
    "ensemble_probabilities",
    "l1_penalty",
    "l2_penalty",
    "split_decay_parameters",
    "weight_decay_groups",
]
