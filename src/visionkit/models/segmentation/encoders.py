"""Encoders for :class:`~visionkit.models.segmentation.FCN`: a convolutionalised VGG and the ``features_only``
classification backbones (ResNet, MobileNetV2).

Convolutionalisation (FCN §3.1): VGG's ``fc6`` (a ``Linear`` on the flattened ``512×7×7`` pool5) is the
``7×7`` convolution with the same weights reshaped to ``[4096, 512, 7, 7]``; ``fc7`` is a ``1×1``
convolution. On a 224×224 image the centre position of the score map then equals the classifier's output
(with ``alignment="same"``; tested). Two geometries:

* ``"same"`` (visionkit's, the default): ``conv1_1`` padded by 1 as in the classifier, ``fc6`` padded by 3,
  ceil-mode pooling; the grid at stride ``S`` is centred on ``S·i + (S−1)/2`` and the crops are ``f/2``.
* ``"caffe"``: the authors' nets — ``conv1_1`` padded by 100, unpadded ``fc6``, ceil-mode pooling; crops 19,
  5/27 and 5/9/31 (see :mod:`~visionkit.models.segmentation.alignment`).

Example:
    >>> encoder = VGGEncoder(VGG_CONFIGS[16])
    >>> {name: level.frame.offset for name, level in encoder.levels.items()}
    {'pool3': 3.5, 'pool4': 7.5, 'fc7': 15.5}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

from torch import Tensor, nn

from visionkit.errors import CheckpointError
from visionkit.models.backbones.base import Backbone
from visionkit.models.backbones.vgg import VGG_CONFIGS, make_vgg_layers
from visionkit.models.backbones.weights import _read_state_dict, load_backbone_weights
from visionkit.models.segmentation.alignment import Frame, conv_frame, sequential_frames
from visionkit.models.segmentation.fcn import Level
from visionkit.nn.init import constant_, kaiming_normal_

__all__ = ["ALIGNMENTS", "VGG_CONFIGS", "BackboneEncoder", "VGGEncoder", "convolutionalize_vgg_state_dict"]

Alignment = Literal["same", "caffe"]
ALIGNMENTS = ("same", "caffe")


class VGGEncoder(nn.Module):
    """VGG ``features`` (torchvision's names ``features.<i>``) then ``fc6`` (``fc_kernel``² conv), ``fc7``
    (1×1), each with ReLU and dropout; returns ``{"pool3", "pool4", "fc7"}`` (strides 8, 16, 32).

    Args:
        config: VGG widths per layer with ``"M"`` for 2×2 max-pools (five pools).
        batch_norm: BN after every convolution of ``features``.
        fc_channels, fc_kernel: width and kernel of ``fc6`` (4096 and 7 in VGG16).
        dropout: after ``fc6`` and ``fc7``.
        alignment: ``"same"`` or ``"caffe"`` (see the module docstring).
    """

    def __init__(
        self,
        config: Sequence[int | str],
        *,
        batch_norm: bool = False,
        fc_channels: int = 4096,
        fc_kernel: int = 7,
        dropout: float = 0.5,
        alignment: Alignment = "same",
    ) -> None:
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.features, _, _ = make_vgg_layers(list(config), batch_norm)
        pools = [i for i, layer in enumerate(self.features) if isinstance(layer, nn.MaxPool2d)]
        if len(pools) != 5:
            raise ValueError(f"config needs five 'M' pools (strides 2..32), got {len(pools)}")
        for index in pools:
            pool: nn.MaxPool2d = self.features[index]  # type: ignore[assignment]
            pool.ceil_mode = True  # no input pixel is dropped at odd sizes
        if alignment == "caffe":
            first: nn.Conv2d = self.features[0]  # type: ignore[assignment]
            first.padding = (100, 100)
        channels = [layer.out_channels for layer in self.features if isinstance(layer, nn.Conv2d)]
        padding = fc_kernel // 2 if alignment == "same" else 0
        self.fc6 = nn.Conv2d(channels[-1], fc_channels, fc_kernel, padding=padding)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        for layer in (self.fc6, self.fc7):
            kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            constant_(layer.bias, 0.0)  # type: ignore[arg-type]
        self.alignment = alignment
        self._taps = {pools[2]: "pool3", pools[3]: "pool4"}
        frames = sequential_frames(self.features)
        width = {index: _channels_before(self.features, index) for index in pools}
        self.levels = {
            "pool3": Level(width[pools[2]], frames[pools[2]]),
            "pool4": Level(width[pools[3]], frames[pools[3]]),
            "fc7": Level(fc_channels, conv_frame(frames[-1], fc_kernel, 1, padding)),
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                features[self._taps[index]] = x
        x = self.dropout(self.relu(self.fc6(x)))
        features["fc7"] = self.dropout(self.relu(self.fc7(x)))
        return features

    def load_pretrained(self, path: str | os.PathLike[str]) -> int:
        """Load a torchvision-format VGG classification checkpoint (``features.*``, ``classifier.0/3``);
        returns the number of tensors loaded. The last classifier layer is not used."""
        converted = convolutionalize_vgg_state_dict(_read_state_dict(path))
        converted = {key: value for key, value in converted.items() if not key.startswith("score")}
        own = self.state_dict()
        wrong = [key for key in converted if key not in own or own[key].shape != converted[key].shape]
        missing = sorted(set(own) - set(converted))
        if wrong or missing:
            raise CheckpointError(
                f"backbone_weights {os.fspath(path)!r}: not a checkpoint of this VGG "
                f"(unexpected or misshaped: {wrong[:5]}, missing: {missing[:5]})"
            )
        self.load_state_dict(converted)
        return len(converted)


def _channels_before(layers: nn.Sequential, index: int) -> int:
    convs = [layer for layer in list(layers)[:index] if isinstance(layer, nn.Conv2d)]
    return convs[-1].out_channels


def convolutionalize_vgg_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A VGG classification state dict (torchvision's names) in :class:`VGGEncoder` names: ``features.*``
    unchanged, ``classifier.0`` → ``fc6`` (``[4096, 25088]`` → ``[4096, 512, 7, 7]``), ``classifier.3`` →
    ``fc7`` (``[4096, 4096, 1, 1]``) and ``classifier.6`` → ``score`` (``[K, 4096, 1, 1]``; an FCN's
    ``score_top`` when it scores the same ``K`` classes).

    Example:
        >>> from visionkit.models import create_model
        >>> converted = convolutionalize_vgg_state_dict(create_model("vgg11", num_classes=5).state_dict())
        >>> tuple(converted["fc6.weight"].shape), tuple(converted["score.weight"].shape)
        ((4096, 512, 7, 7), (5, 4096, 1, 1))
    """
    names = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "score"}
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("features."):
            converted[key] = value
            continue
        layer, _, kind = key.rpartition(".")
        if layer not in names:
            continue
        if kind == "weight":
            channels = 512 if layer == "classifier.0" else value.shape[1]
            side = round((value.shape[1] // channels) ** 0.5)
            value = value.reshape(value.shape[0], channels, side, side)
        converted[f"{names[layer]}.{kind}"] = value
    return converted


class BackboneEncoder(nn.Module):
    """A ``features_only`` classification backbone as an FCN encoder: ``{"c3", "c4", "c5"}`` (strides 8, 16,
    32). Its strided layers are odd kernels padded by ``k // 2`` (ResNet, MobileNetV2), so position ``i`` at
    stride ``S`` is centred on input pixel ``S·i`` (offset 0; the mirror tests check it)."""

    def __init__(self, backbone: Backbone, names: Sequence[str] = ("c3", "c4", "c5")) -> None:
        super().__init__()
        if not backbone.features_only:
            raise ValueError("BackboneEncoder needs a features_only backbone")
        self.backbone = backbone
        self.levels = {
            name: Level(backbone.out_channels[name], Frame(backbone.strides[name], 0.0)) for name in names
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        return {name: features[name] for name in self.levels}

    def load_pretrained(self, path: str | os.PathLike[str]) -> int:
        """Load a torchvision-format classification checkpoint into the backbone (its head left out)."""
        return load_backbone_weights(self.backbone, path)
