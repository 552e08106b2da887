"""The feature contract every classification backbone follows (what necks and detectors consume).

API (one way, used everywhere):

* ``model.forward_features(x) -> dict[str, Tensor]`` returns the multi-scale feature maps
  ``{"c2": ..., "c3": ..., "c4": ..., "c5": ...}``. ``c<k>`` is the output of the **deepest layer whose
  output has stride 2^k** relative to the input (stride 4, 8, 16, 32).
* ``model.out_channels: dict[str, int]`` and ``model.strides: dict[str, int]`` describe them, e.g.
  resnet50: ``out_channels = {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}``,
  ``strides = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}``.
* ``model(x)`` returns class logits ``(N, num_classes)``; every builder also takes
  ``features_only=True``, which removes the classification head (so no parameter goes unused) and
  makes ``model(x)`` return the same dict as ``forward_features``. A torchvision checkpoint loads into
  a ``features_only`` model with ``strict=False`` (only head keys are missing).

Example:
    >>> import torch
    >>> from visionkit.models import create_model
    >>> backbone = create_model("resnet18", features_only=True)
    >>> {k: tuple(v.shape) for k, v in backbone(torch.randn(1, 3, 64, 64)).items()}
    {'c2': (1, 64, 16, 16), 'c3': (1, 128, 8, 8), 'c4': (1, 256, 4, 4), 'c5': (1, 512, 2, 2)}
"""

from __future__ import annotations

import itertools
from typing import Any

from torch import Tensor, nn

from visionkit.errors import InputShapeError
from visionkit.structures import ShapeSpec

__all__ = ["FEATURE_NAMES", "FEATURE_STRIDES", "Backbone", "run_with_taps", "tap_stages"]

FEATURE_NAMES = ("c2", "c3", "c4", "c5")
FEATURE_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def run_with_taps(layers: nn.Sequential, x: Tensor, taps: dict[int, str]) -> dict[str, Tensor]:
    """Run ``layers`` in order, keeping the outputs of the layers whose index is in ``taps``.

    Stops after the last tapped layer (later layers are not needed for features).
    """
    features: dict[str, Tensor] = {}
    last = max(taps)
    for index, layer in enumerate(layers):
        x = layer(x)
        if index in taps:
            features[taps[index]] = x
        if index == last:
            break
    return features


def tap_stages(layers: nn.Sequential, taps: dict[int, str]) -> list[nn.Module]:
    """:meth:`Backbone.stages` of a sequential backbone: the first layer is the stem, then the layers up to
    each tap (``c2``..``c5``) form one stage."""
    ends = [index for index, _ in sorted(taps.items(), key=lambda item: item[1])]
    bounds = [1, *(end + 1 for end in ends)]
    return [nn.ModuleList(list(layers)[:1])] + [
        nn.ModuleList(list(layers)[start:end]) for start, end in itertools.pairwise(bounds)
    ]


class Backbone(nn.Module):
    """Base class: ``forward`` = ``forward_head(forward_features(x)["c5"])`` or the features dict.

    Subclasses set ``out_channels`` (dict), ``head_names`` (attributes removed by
    :meth:`remove_head`) and implement :meth:`forward_features` and :meth:`forward_head`.
    """

    head_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.features_only = False
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = dict(FEATURE_STRIDES)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of each feature map of :meth:`forward_features` (necks are built from it)."""
        return {name: ShapeSpec(self.out_channels[name], self.strides[name]) for name in self.out_channels}

    def stages(self) -> list[nn.Module]:
        """The stem, then the modules producing ``c2, c3, c4, c5`` in order (what ``freeze_at`` counts).

        ``freeze_at=N`` (:func:`freeze_stages`) freezes the stem and the first ``N`` of these stages."""
        raise NotImplementedError(f"{type(self).__name__} does not list its stages")

    def forward_head(self, c5: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def in_channels(self) -> int | None:
        """Channels of the input images (those of the first convolution; ``None`` if it has none)."""
        first = next((m for m in self.modules() if isinstance(m, nn.Conv2d)), None)
        return None if first is None else first.in_channels

    def check_input(self, x: Tensor) -> None:
        """:class:`~visionkit.errors.InputShapeError` (a ``ValueError``) unless ``x`` is ``(N, C, H, W)``
        with the backbone's ``C``; ``TypeError`` unless it is floating point (a uint8 image must be
        converted and normalized first)."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputShapeError(f"{type(self).__name__}: expected an image batch (N, C, H, W), got {shape}")
        channels = self.in_channels
        if channels is not None and x.shape[1] != channels:
            raise InputShapeError(
                f"{type(self).__name__}: expected (N, {channels}, H, W) images, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__}: expected a floating-point image batch, got dtype {x.dtype} "
                "(convert uint8 images with .float() / 255 and normalize them first)"
            )

    def forward(self, x: Tensor) -> Any:
        self.check_input(x)
        features = self.forward_features(x)
        return features if self.features_only else self.forward_head(features["c5"])

    def remove_head(self) -> Backbone:
        """Drop the classification head in place; ``forward`` then returns the features dict."""
        for name in self.head_names:
            setattr(self, name, None)
        self.features_only = True
        return self


def finish(model: Backbone, features_only: bool) -> Backbone:
    """Apply the ``features_only`` builder option."""
    if not isinstance(features_only, bool):
        raise TypeError(f"features_only must be a bool, got {type(features_only).__name__}")
    return model.remove_head() if features_only else model
