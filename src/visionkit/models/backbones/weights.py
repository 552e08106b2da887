"""Start a detector from pretrained backbone weights and freeze its early stages (detectron2's ``freeze_at``).

visionkit's backbones (ResNet, MobileNetV2, VGG, AlexNet, GoogLeNet) have torchvision's parameter names and
shapes, so a torchvision classification checkpoint (``resnet50-0676ba61.pth`` ...) loads into the
``features_only`` backbone of a detector; its classification head is left out. Nothing is downloaded.

Example:
    >>> import tempfile, torch
    >>> from visionkit.models import create_model
    >>> path = tempfile.mkdtemp() + "/resnet18.pth"
    >>> torch.save(create_model("resnet18").state_dict(), path)
    >>> backbone = create_model("resnet18", features_only=True)
    >>> load_backbone_weights(backbone, path)  # 20 conv weights + 20 BatchNorm layers x 5 tensors
    120
    >>> freeze_stages(backbone, 2)  # the stem, layer1 and layer2
    ['stem', 'c2', 'c3']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from visionkit.errors import CheckpointError, ConfigError
from visionkit.models.backbones.base import Backbone
from visionkit.nn.norm import freeze_batch_norm
from visionkit.torchfile import UnreadableFileError, load_weights_only

__all__ = ["freeze_stages", "load_backbone_weights"]

STAGE_NAMES = ("stem", "c2", "c3", "c4", "c5")


def _read_state_dict(path: str | os.PathLike[str]) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"backbone_weights: no such file {os.fspath(path)!r}")
    try:
        saved = load_weights_only(path)
    except UnreadableFileError as error:
        raise CheckpointError(f"backbone_weights: cannot read {os.fspath(path)!r}: {error}") from None
    for key in ("state_dict", "model"):  # our checkpoints and common wrappers
        if isinstance(saved, Mapping) and isinstance(saved.get(key), Mapping):
            saved = saved[key]
    if not isinstance(saved, Mapping) or not all(isinstance(v, Tensor) for v in saved.values()):
        raise CheckpointError(f"backbone_weights: {os.fspath(path)!r} holds no state dict of tensors")
    return saved


def load_backbone_weights(backbone: Backbone, path: str | os.PathLike[str]) -> int:
    """Load a (torchvision-format) classification checkpoint into ``backbone``, strictly.

    The keys of the classification head (``backbone.head_names``: ``fc``, ``classifier``...) are left
    out; every other key must exist with the same shape on both sides.

    Returns:
        The number of tensors loaded.

    Raises:
        CheckpointError: unreadable file, or missing / unexpected keys or different shapes — the message
            lists the first of each (e.g. the checkpoint of another architecture).
    """
    state = _read_state_dict(path)
    heads = tuple(f"{name}." for name in getattr(backbone, "head_names", ()))
    state = {key: value for key, value in state.items() if not key.startswith(heads)}
    own = backbone.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key}: {tuple(state[key].shape)} in the file, {tuple(own[key].shape)} in the model"
              for key in own if key in state and state[key].shape != own[key].shape]  # fmt: skip
    if missing or unexpected or shapes:
        problems = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("different shapes", shapes)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                problems.append(f"{len(items)} {title} ({', '.join(items[:5])}{more})")
        raise CheckpointError(
            f"backbone_weights {os.fspath(path)!r} does not fit {type(backbone).__name__}: "
            + "; ".join(problems)
        )
    backbone.load_state_dict(state, strict=True)
    return len(state)


def freeze_stages(backbone: Backbone, freeze_at: int, frozen_batch_norm: bool = True) -> list[str]:
    """Freeze the stem and the first ``freeze_at`` stages (0: the stem only; 4: the whole backbone).

    Frozen parameters stop requiring gradients; with ``frozen_batch_norm`` every batch norm of the backbone
    becomes a :class:`~visionkit.nn.norm.FrozenBatchNorm2d` (fixed statistics: small detection batches give
    noisy ones). Returns the names of the frozen parts.
    """
    if not isinstance(freeze_at, int) or not 0 <= freeze_at <= 4:
        raise ConfigError(f"freeze_at={freeze_at!r}: expected an integer in [0, 4] (stem + that many stages)")
    stages: list[Any] = backbone.stages()
    for stage in stages[: freeze_at + 1]:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
    if frozen_batch_norm:
        freeze_batch_norm(backbone)
    return list(STAGE_NAMES[: freeze_at + 1])


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that still require gradients (what the optimizer should get after freezing)."""
    return [p for p in module.parameters() if p.requires_grad]
