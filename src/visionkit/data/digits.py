"""The real handwritten digits that scikit-learn ships (UCI "Optical Recognition of Handwritten Digits",
1,797 images of 8x8 pixels with values 0–16, ten classes) as a torch ``Dataset``.

The CSV (``sklearn/datasets/data/digits.csv.gz``, 64 pixel columns + the label) is read directly with
NumPy; scikit-learn is a runtime dependency only so that this file is present — it is never imported,
which keeps start-up fast and avoids importing SciPy. A copy of the file elsewhere can be given with
``path=``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test", "all")
NUM_CLASSES = 10


def digits_csv_path() -> Path:
    """Locate scikit-learn's ``digits.csv.gz`` without importing scikit-learn.

    Raises:
        FileNotFoundError: scikit-learn is not installed (install ``scikit-learn``) or lacks the file.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the digits data ships with scikit-learn: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"digits data file {path} is missing from the scikit-learn installation")
    return path


def load_digits_arrays(path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the digits CSV: images ``(1797, 8, 8)`` float32 in [0, 16] and labels ``(1797,)`` int64.

    Raises:
        ValueError: a row does not have 65 values or holds values out of range (names file and line).
    """
    path = Path(path) if path is not None else digits_csv_path()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as file:
        rows = []
        for line_number, line in enumerate(file, 1):
            values = line.strip().split(",")
            if len(values) != 65:
                raise ValueError(
                    f"{path}, line {line_number}: expected 65 comma-separated values, got {len(values)}"
                )
            rows.append([float(v) for v in values])
    data = np.asarray(rows, dtype=np.float32)
    pixels, labels = data[:, :64], data[:, 64]
    bad = np.flatnonzero((pixels < 0).any(1) | (pixels > 16).any(1) | (labels < 0) | (labels > 9))
    if bad.size:
        raise ValueError(f"{path}, line {bad[0] + 1}: pixel values must be in [0, 16] and labels in 0..9")
    return pixels.reshape(-1, 8, 8), labels.astype(np.int64)


def split_indices(
    labels: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, np.ndarray]:
    """Deterministic stratified train/val/test indices: each class is shuffled with ``seed`` and cut by
    ``fractions``, so every split has (nearly) the class proportions of the whole set.

    Example:
        >>> parts = split_indices(np.repeat(np.arange(2), 10), (0.6, 0.2, 0.2))
        >>> [len(parts[name]) for name in ("train", "val", "test")]
        [12, 4, 4]
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    generator = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        n_train = round(fractions[0] * len(members))
        n_val = round(fractions[1] * len(members))
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


class Digits(Dataset):
    """The scikit-learn digits as ``(image, label)`` pairs: image ``(1, 8, 8)`` float32 in [0, 1]
    (pixel / 16), label an ``int`` in 0..9.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (stratified, see :func:`split_indices`).
        fractions: train/val/test fractions.
        seed: seed of the split (the same seed always gives the same split).
        transform: optional callable applied to each image tensor.
        path: a digits CSV (``.csv`` or ``.csv.gz``) instead of scikit-learn's copy.

    Example:
        >>> train = Digits("train")
        >>> image, label = train[0]
        >>> len(train), tuple(image.shape), type(label).__name__
        (1258, (1, 8, 8), 'int')
    """

    classes: ClassVar[tuple[int, ...]] = tuple(range(NUM_CLASSES))

    def __init__(
        self,
        split: str = "train",
        *,
        fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        transform=None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        images, labels = load_digits_arrays(path)
        if split != "all":
            index = split_indices(labels, fractions, seed)[split]
            images, labels = images[index], labels[index]
        self.split, self.transform = split, transform
        self.images = torch.from_numpy(images / 16.0).float().unsqueeze(1)
        self.targets = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


__all__ = ["NUM_CLASSES", "Digits", "digits_csv_path", "load_digits_arrays", "split_indices"]
