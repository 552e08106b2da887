"""Detection evaluation and prediction: COCO AP (pycocotools-equal), VOC07 and VOC12 mAP, over one or
several processes.

Example:
    >>> import torch
    >>> target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0]),
    ...           "area": torch.tensor([100.0])}
    >>> found = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]),
    ...          "labels": torch.tensor([0])}
    >>> ap50 = evaluate_predictions([found], [target], num_classes=1).metrics["AP50"]
    >>> ap50  # the mean of 101 interpolated precisions of 1.0, summed in float64 as pycocotools does
    0.9999999999999999
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from visionkit.data.transforms import collate_detection
from visionkit.engine.distributed import DistributedContext, all_gather_objects, shard_indices
from visionkit.metrics.detection import DetectionMeter
from visionkit.metrics.detection.coco import CocoResult
from visionkit.metrics.detection.voc import VocResult
from visionkit.structures import Detections, Target

__all__ = ["DetectionEvaluation", "evaluate_detector", "evaluate_predictions", "predict"]


@dataclass(frozen=True)
class DetectionEvaluation:
    """COCO and VOC results of one evaluation; :attr:`metrics` is the flat summary that runs log."""

    coco: CocoResult
    voc07: VocResult
    voc12: VocResult

    @property
    def metrics(self) -> dict[str, float]:
        """``AP, AP50, AP75, APs, APm, APl, AR100`` (COCO) and ``VOC07_mAP``, ``VOC12_mAP``."""
        coco = self.coco.as_dict()
        return {
            **{key: float(coco[key]) for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")},
            "VOC07_mAP": float(self.voc07.mean_average_precision),
            "VOC12_mAP": float(self.voc12.mean_average_precision),
        }


def evaluate_predictions(
    predictions: Sequence[Detections], targets: Sequence[Target], num_classes: int
) -> DetectionEvaluation:
    """COCO AP (pycocotools-equal), VOC07 (11-point) and VOC12 (all-point) mAP of ``predictions``."""
    meter = DetectionMeter("coco", num_classes=num_classes)
    meter.update(predictions, targets)  # type: ignore[arg-type]
    return DetectionEvaluation(meter.coco(), meter.voc("11point"), meter.voc("all"))


@torch.no_grad()
def predict(detector: nn.Module, images: Sequence[Tensor], batch_size: int = 8) -> list[Detections]:
    """Detections of ``images`` (list of ``Tensor[3, H, W]`` in ``[0, 1]``) in evaluation mode, on the
    detector's device, returned on the CPU in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = detector.training
    detector.eval()
    device = next(detector.parameters()).device
    results: list[Detections] = []
    try:
        for start in range(0, len(images), batch_size):
            batch = [image.to(device) for image in images[start : start + batch_size]]
            results += [{key: value.cpu() for key, value in d.items()} for d in detector(batch)]  # type: ignore[misc]
    finally:
        detector.train(was_training)
    return results


@torch.no_grad()
def evaluate_detector(
    detector: nn.Module,
    dataset: Dataset,
    num_classes: int,
    *,
    batch_size: int = 8,
    context: DistributedContext | None = None,
) -> DetectionEvaluation:
    """Evaluate ``detector`` on every image of ``dataset``; with several processes each predicts its shard
    and rank 0 gathers all predictions in dataset order, so the result equals one process's."""
    context = context or DistributedContext()
    indices = shard_indices(len(dataset), context)  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, collate_fn=collate_detection)
    predictions: list[Detections] = []
    targets: list[Target] = []
    for images, batch_targets in loader:
        predictions += predict(detector, images, batch_size)
        targets += batch_targets
    if context.distributed:
        gathered = all_gather_objects((indices, predictions, targets), context)
        order: dict[int, tuple[Detections, Target]] = {}
        for rank_indices, rank_predictions, rank_targets in gathered:  # type: ignore[misc]
            order.update(zip(rank_indices, zip(rank_predictions, rank_targets, strict=True), strict=True))
        predictions = [order[i][0] for i in sorted(order)]
        targets = [order[i][1] for i in sorted(order)]
    return evaluate_predictions(predictions, targets, num_classes)
