"""Pascal VOC semantic segmentation: ``JPEGImages/<id>.jpg`` with ``SegmentationClass/<id>.png`` (palette
PNGs: class index per pixel, 255 = void, ignored), split lists in ``ImageSets/Segmentation/<set>.txt``.

Classes: ``classes.txt`` in the root (one name per line, background first) when present, else VOC's 21
(``background`` and the 20 object classes).

Example:
    >>> from visionkit.data.segmentation import ShapesSegmentation, export_shapes_segmentation
    >>> root = export_shapes_segmentation(ShapesSegmentation(2), "VOC2012", image_set="val")
    >>> dataset = VocSegmentation(root, image_set="val")
    >>> image, mask = dataset[0]
    >>> mask.dtype, dataset.num_classes  # classes.txt of the shapes export: background + 3
    (torch.int64, 4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from visionkit.data.datasets import VOC_CLASSES, read_image
from visionkit.data.segmentation.base import SegmentationDataset
from visionkit.data.segmentation.masks import check_mask, read_mask_png
from visionkit.errors import DatasetError

__all__ = ["VOC_SEGMENTATION_CLASSES", "VocSegmentation", "read_class_names"]

VOC_SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines skipped); a :class:`DatasetError` naming the file if empty
    or repeated."""
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise DatasetError(
            f"{path}: expected two or more distinct class names, background first; got {names}"
        )
    return names


class VocSegmentation(SegmentationDataset):
    """A VOC-layout segmentation folder as ``(image, mask)``: image float32 ``[3, H, W]`` in ``[0, 1]``, mask
    int64 ``[H, W]``.

    Args:
        root: the folder holding ``JPEGImages/`` and ``SegmentationClass/``.
        image_set: a split of ``ImageSets/Segmentation/`` (``None``: every mask in ``SegmentationClass/``).
        transforms: optional joint ``(image, mask) -> (image, mask)``.
        on_corrupt: ``"raise"`` (default) or ``"skip"``: read every pair once now and leave out those that
            fail, listed in :attr:`skipped`.

    Raises:
        DatasetError: a missing folder or split file, an id without its image or mask; when read: a mask
            whose size differs from its image's, labels outside the classes (255 aside), an unknown
            palette colour, an RGB mask — each naming the file and the values.
    """

    def __init__(
        self,
        root: str | Path,
        image_set: str | None = None,
        *,
        transforms: Any = None,
        on_corrupt: str = "raise",
    ) -> None:
        self.root, self.transforms = Path(root), transforms
        masks = self.root / "SegmentationClass"
        if not masks.is_dir():
            raise DatasetError(f"{self.root}: no SegmentationClass/ folder (not a VOC segmentation dataset)")
        names_file = self.root / "classes.txt"
        self.class_names = read_class_names(names_file) if names_file.is_file() else VOC_SEGMENTATION_CLASSES
        self.ids = self._read_ids(image_set)
        self.pairs = [(self._image_path(i), masks / f"{i}.png") for i in self.ids]
        self.pairs = [self.pairs[i] for i in self.readable_items(on_corrupt)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _read_ids(self, image_set: str | None) -> list[str]:
        if image_set is None:
            ids = sorted(path.stem for path in (self.root / "SegmentationClass").glob("*.png"))
        else:
            listing = self.root / "ImageSets" / "Segmentation" / f"{image_set}.txt"
            if not listing.is_file():
                raise DatasetError(f"{self.root}: no split file {listing} (image_set={image_set!r})")
            ids = [
                line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        if not ids:
            raise DatasetError(f"{self.root}: no images in image_set={image_set!r}")
        return ids

    def _image_path(self, image_id: str) -> Path:
        for suffix in _IMAGE_SUFFIXES:
            path = self.root / "JPEGImages" / f"{image_id}{suffix}"
            if path.is_file():
                return path
        raise DatasetError(
            f"{self.root}: image {image_id!r} has no file in JPEGImages/ ({'/'.join(_IMAGE_SUFFIXES)})"
        )

    def item_name(self, index: int) -> str:
        return str(self.pairs[index][0])

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """Image and checked mask of item ``index`` (untransformed)."""
        image_path, mask_path = self.pairs[index]
        if not mask_path.is_file():
            raise DatasetError(f"mask {str(mask_path)!r} of image {str(image_path)!r}: no such file")
        image = read_image(image_path, index)
        mask = read_mask_png(mask_path)
        where = f"{str(mask_path)!r} (image {str(image_path)!r})"
        return image, check_mask(mask, self.num_classes, where, image_size=image.shape[1:])
