"""Semantic-segmentation data: ``(image, mask)`` pairs — image float32 ``[3, H, W]`` in ``[0, 1]``, mask int64
``[H, W]`` of class indices with 255 = void (ignored by the loss and every metric).

* :class:`ShapesSegmentation` (generated, no download), exportable as a VOC folder of palette PNGs;
* :class:`VocSegmentation` (``SegmentationClass`` palette PNGs) and :class:`CocoSegmentation` (instance
  polygons / RLE rasterised to classes);
* joint transforms (:mod:`~visionkit.data.segmentation.transforms`) and :func:`collate_segmentation`.
"""

from visionkit.data.segmentation.base import SegmentationDataset
from visionkit.data.segmentation.coco import CocoSegmentation, decode_rle, rasterize_polygons, semantic_mask
from visionkit.data.segmentation.masks import (
    IGNORE_INDEX,
    check_mask,
    read_mask_png,
    voc_palette,
    write_mask_png,
)
from visionkit.data.segmentation.shapes import (
    SEGMENTATION_CLASSES,
    ShapesSegmentation,
    export_shapes_segmentation,
    shapes_mask,
)
from visionkit.data.segmentation.transforms import (
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    collate_segmentation,
    crop_pair,
    resize_pair,
)
from visionkit.data.segmentation.voc import VOC_SEGMENTATION_CLASSES, VocSegmentation, read_class_names

__all__ = [
    "IGNORE_INDEX",
    "SEGMENTATION_CLASSES",
    "VOC_SEGMENTATION_CLASSES",
    "CocoSegmentation",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "SegmentationDataset",
    "ShapesSegmentation",
    "VocSegmentation",
    "check_mask",
    "collate_segmentation",
    "crop_pair",
    "decode_rle",
    "export_shapes_segmentation",
    "rasterize_polygons",
    "read_class_names",
    "read_mask_png",
    "resize_pair",
    "semantic_mask",
    "shapes_mask",
    "voc_palette",
    "write_mask_png",
]
