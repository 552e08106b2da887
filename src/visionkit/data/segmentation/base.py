"""What the segmentation datasets share: ``(image, mask)`` items from :meth:`SegmentationDataset.load`,
with the index checked and the joint transforms applied."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SegmentationDataset"]


class SegmentationDataset(Dataset[tuple[Tensor, Tensor]]):
    """Base class: a subclass sets ``transforms`` and implements ``__len__`` and :meth:`load`."""

    transforms: Any = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """Image float32 ``[3, H, W]`` in ``[0, 1]`` and int64 mask ``[H, W]`` of item ``index``
        (untransformed)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, mask = self.load(index)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask
