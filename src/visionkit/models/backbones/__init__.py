"""Classification backbones; importing this package registers them.

All follow the feature contract of :mod:`visionkit.models.backbones.base`:
``forward_features(x) -> {"c2", "c3", "c4", "c5"}``, ``out_channels``, ``strides``, and the
``features_only=True`` builder option.
"""

from visionkit.models.backbones.alexnet import AlexNet
from visionkit.models.backbones.base import FEATURE_NAMES, FEATURE_STRIDES, Backbone
from visionkit.models.backbones.darknet import Darknet53
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
    "Darknet53",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "MobileNetV1",
    "MobileNetV2",
    "PreActResNet",
    "ResNet",
    "mobilenet_v1_input_size",
]
