"""What the segmentation datasets share: ``(image, mask)`` items from :meth:`SegmentationDataset.load`,
with the index checked and the joint transforms applied."""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from visionkit.errors import DatasetError

__all__ = ["SegmentationDataset"]


class SegmentationDataset(Dataset[tuple[Tensor, Tensor]]):
    """Base class: a subclass sets ``transforms`` and implements ``__len__``, :meth:`load` and (for
    ``on_corrupt="skip"``) :meth:`item_name`; :attr:`skipped` lists the files left out as unreadable."""

    transforms: Any = None
    skipped: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """Image float32 ``[3, H, W]`` in ``[0, 1]`` and int64 mask ``[H, W]`` of item ``index``
        (untransformed)."""
        raise NotImplementedError

    def item_name(self, index: int) -> str:
        """The file that stands for item ``index`` (in ``skipped`` when it cannot be read)."""
        return str(index)

    def readable_items(self, on_corrupt: str) -> list[int]:
        """The items to keep: all with ``on_corrupt="raise"``; with ``"skip"`` those that load without a
        :class:`DatasetError` — each is read once now, the others are named in :attr:`skipped` (one
        warning)."""
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        self.skipped = []
        if on_corrupt == "raise":
            return list(range(len(self)))
        kept = []
        for index in range(len(self)):
            try:
                self.load(index)
                kept.append(index)
            except DatasetError:
                self.skipped.append(self.item_name(index))
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable images, e.g. {self.skipped[0]}", stacklevel=3
            )
        return kept

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, mask = self.load(index)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask
