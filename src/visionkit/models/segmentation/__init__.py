"""Semantic segmentation: the fully convolutional network (FCN-32s/16s/8s, handbook §22); importing this
package registers the builders of :mod:`visionkit.models.segmentation.builders`.

Example:
    >>> import torch
    >>> from visionkit.models import create_model
    >>> create_model("fcn32s_small")(torch.rand(1, 3, 33, 20)).shape
    torch.Size([1, 4, 33, 20])
"""

from visionkit.models.segmentation import builders
from visionkit.models.segmentation.alignment import Frame
from visionkit.models.segmentation.builders import list_segmenters, register_segmenter
from visionkit.models.segmentation.encoders import (
    BackboneEncoder,
    VGGEncoder,
    convolutionalize_vgg_state_dict,
)
from visionkit.models.segmentation.fcn import FCN, Level, check_images
from visionkit.models.segmentation.upsample import ScoreUpsample, bilinear_kernel

__all__ = [
    "FCN",
    "BackboneEncoder",
    "Frame",
    "Level",
    "ScoreUpsample",
    "VGGEncoder",
    "bilinear_kernel",
    "builders",
    "check_images",
    "convolutionalize_vgg_state_dict",
    "list_segmenters",
    "register_segmenter",
]
