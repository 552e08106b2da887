"""Segmentation evaluation and prediction: pixel accuracy, mean class accuracy, mean IoU, frequency-weighted
IoU and per-class IoU over a dataset (void pixels left out), the same in a band around class edges, and the
per-image confusion matrices that paired-bootstrap comparisons resample.

Images are predicted one size at a time (consecutive images of one size are batched, never padded), so a
prediction does not depend on its neighbours in the batch.

Example:
    >>> from visionkit.models import create_model
    >>> model = create_model("fcn8s_small", widths=(4, 8, 8, 16, 16))
    >>> [tuple(m.shape) for m in predict(model, [torch.rand(3, 20, 30), torch.rand(3, 9, 9)])]
    [(20, 30), (9, 9)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from visionkit.metrics.segmentation import SegmentationResult
from visionkit.metrics.segmentation_compare import boundary_band, per_image_confusion_matrices

__all__ = ["SegmentationEvaluation", "evaluate_segmenter", "predict", "predict_logits"]


@dataclass(frozen=True)
class SegmentationEvaluation:
    """Results over a dataset; :attr:`metrics` is the flat summary runs log.

    Attributes:
        matrices: ``[N, C, C]`` per-image pixel confusion matrices (row: true class).
        boundary_matrices: the same over the boundary band of each image.
        class_names: background first.
    """

    matrices: np.ndarray
    boundary_matrices: np.ndarray
    class_names: tuple[str, ...]

    @property
    def result(self) -> SegmentationResult:
        return SegmentationResult.from_confusion_matrix(self.matrices.sum(0))

    @property
    def boundary(self) -> SegmentationResult:
        return SegmentationResult.from_confusion_matrix(self.boundary_matrices.sum(0))

    @property
    def metrics(self) -> dict[str, float]:
        """``mIoU``, ``pixel_accuracy``, ``mean_accuracy``, ``fw_IoU``, ``boundary_mIoU``,
        ``boundary_accuracy`` and ``IoU/<class>`` (NaN for a class seen nowhere)."""
        result, boundary = self.result, self.boundary
        return {
            "mIoU": result.mean_iou,
            "pixel_accuracy": result.pixel_accuracy,
            "mean_accuracy": result.mean_accuracy,
            "fw_IoU": result.frequency_weighted_iou,
            "boundary_mIoU": boundary.mean_iou,
            "boundary_accuracy": boundary.pixel_accuracy,
            **{
                f"IoU/{name}": float(v)
                for name, v in zip(self.class_names, result.per_class_iou, strict=True)
            },
        }


def _same_size_batches(images: Sequence[Tensor], batch_size: int) -> Iterator[tuple[int, int]]:
    start = 0
    while start < len(images):
        end = start + 1
        while end < len(images) and end - start < batch_size and images[end].shape == images[start].shape:
            end += 1
        yield start, end
        start = end


@torch.no_grad()
def predict_logits(model: nn.Module, images: Sequence[Tensor], batch_size: int = 8) -> list[Tensor]:
    """Class scores ``[C, H, W]`` of each image (``Tensor[3, H, W]`` in ``[0, 1]``), on the model's device in
    evaluation mode, returned on the CPU in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    weight = next(model.parameters(), None)  # None: no parameters (an ONNX Runtime session, on the CPU)
    device = weight.device if weight is not None else torch.device("cpu")
    results: list[Tensor] = []
    try:
        for start, end in _same_size_batches(images, batch_size):
            batch = torch.stack([image.to(device) for image in images[start:end]])
            results += list(model(batch).float().cpu())
    finally:
        model.train(was_training)
    return results


def predict(model: nn.Module, images: Sequence[Tensor], batch_size: int = 8) -> list[Tensor]:
    """Class maps int64 ``[H, W]`` (arg-max of :func:`predict_logits`)."""
    return [scores.argmax(0) for scores in predict_logits(model, images, batch_size)]


def evaluate_segmenter(
    model: nn.Module,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    batch_size: int = 8,
    boundary_width: int = 3,
    ignore_index: int = 255,
) -> SegmentationEvaluation:
    """Predict every ``(image, mask)`` of ``dataset`` and count pixels per image (void left out)."""
    num_classes = len(class_names)
    matrices, boundary = [], []
    for start in range(0, len(dataset), batch_size):  # type: ignore[arg-type]
        pairs = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]  # type: ignore[arg-type]
        maps = predict(model, [image for image, _ in pairs], batch_size)
        for found, (_, mask) in zip(maps, pairs, strict=True):
            truth = mask.numpy()[None]
            banded = np.where(boundary_band(truth, boundary_width, ignore_index), truth, ignore_index)
            matrices.append(
                per_image_confusion_matrices(found.numpy()[None], truth, num_classes, ignore_index)[0]
            )
            boundary.append(
                per_image_confusion_matrices(found.numpy()[None], banded, num_classes, ignore_index)[0]
            )
    empty = np.zeros((0, num_classes, num_classes), dtype=np.int64)
    return SegmentationEvaluation(
        np.stack(matrices) if matrices else empty,
        np.stack(boundary) if boundary else empty,
        tuple(class_names),
    )
