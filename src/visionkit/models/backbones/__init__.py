"""Classification backbones; importing this package registers them.

All follow the feature contract of :mod:`visionkit.models.backbones.base`:
``forward_features(x) -> {"c2", "c3", "c4", "c5"}``, ``out_channels``, ``strides``, and the
``features_only=True`` builder option.

Fast paths (same numbers, tested in tests/models/test_models_fast_paths.py, timed in
benchmarks/bench_models.py):

* channels_last: ``model.to(memory_format=torch.channels_last)`` and
  ``x.contiguous(memory_format=torch.channels_last)`` — oneDNN convolutions without layout conversion.
* ``torch.compile(model)``: every backbone (logits or ``features_only`` dict) is captured as one graph
  (``fullgraph=True`` works), so Inductor can fuse conv-BN-activation chains.

Example:
    >>> import torch
    >>> from visionkit.models import create_model
    >>> model = create_model("mobilenet_v2", num_classes=10).eval().to(memory_format=torch.channels_last)
    >>> model(torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)).shape
    torch.Size([1, 10])
"""

from visionkit.models.backbones.alexnet import AlexNet
from visionkit.models.backbones.base import FEATURE_NAMES, FEATURE_STRIDES, Backbone
from visionkit.models.backbones.darknet import Darknet19, Darknet53
from visionkit.models.backbones.googlenet import GoogLeNet, GoogLeNetOutputs
from visionkit.models.backbones.mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1_input_size
from visionkit.models.backbones.resnet import PreActResNet, ResNet
from visionkit.models.backbones.vgg import VGG

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_STRIDES",
    "VGG",
    "AlexNet",
    "Backbone",
    "Darknet19",
    "Darknet53",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "MobileNetV1",
    "MobileNetV2",
    "PreActResNet",
    "ResNet",
    "mobilenet_v1_input_size",
]
