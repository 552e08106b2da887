"""Detection datasets: COCO JSON, Pascal VOC XML and YOLO txt readers (also through an ultralytics
``data.yaml``), writers and dataset classes.

All loaders yield ``(image, target)``: ``image`` a ``Tensor[3, H, W]`` float32 in ``[0, 1]``; ``target`` a
dict with ``boxes`` float32 ``[N, 4]`` xyxy absolute pixels, ``labels`` int64 ``[N]`` (contiguous,
``0 .. K-1``, see :class:`LabelMap`), ``iscrowd`` int64 ``[N]``, ``difficult`` int64 ``[N]``, ``area``
float32 ``[N]`` and ``image_id`` int.
"""

from visionkit.data.datasets.base import DetectionDataset, read_image, record_to_target
from visionkit.data.datasets.coco import CocoDetection, read_coco, write_coco
from visionkit.data.datasets.convert import FORMATS, convert_dataset, read_annotations, write_annotations
from visionkit.data.datasets.data_yaml import data_yaml_names, is_data_yaml, read_data_yaml
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import (
    AnnotationSet,
    DatasetError,
    ImageRecord,
    apply_bounds,
    make_record,
)
from visionkit.data.datasets.voc import VOC_CLASSES, VocDetection, read_voc, write_voc
from visionkit.data.datasets.yolo import YoloDetection, read_yolo, write_yolo

__all__ = [
    "FORMATS",
    "VOC_CLASSES",
    "AnnotationSet",
    "CocoDetection",
    "DatasetError",
    "DetectionDataset",
    "ImageRecord",
    "LabelMap",
    "VocDetection",
    "YoloDetection",
    "apply_bounds",
    "convert_dataset",
    "data_yaml_names",
    "is_data_yaml",
    "make_record",
    "read_annotations",
    "read_coco",
    "read_data_yaml",
    "read_image",
    "read_voc",
    "read_yolo",
    "record_to_target",
    "write_annotations",
    "write_coco",
    "write_voc",
    "write_yolo",
]
