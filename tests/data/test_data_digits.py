"""The scikit-learn digits as a Dataset: same data as sklearn.datasets.load_digits, deterministic
stratified splits, clear errors for bad files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from visionkit.data.digits import Digits, load_digits_arrays, split_indices


def test_same_data_as_sklearn() -> None:
    images, labels = load_digits_arrays()
    reference = load_digits()
    np.testing.assert_array_equal(images, reference.images.astype(np.float32))
    np.testing.assert_array_equal(labels, reference.target)


def test_splits_are_disjoint_stratified_and_deterministic() -> None:
    _, labels = load_digits_arrays()
    parts = split_indices(labels, seed=0)
    union = np.concatenate(list(parts.values()))
    assert len(union) == len(set(union.tolist())) == len(labels) == 1797
    # train and val are round(f·n) per class (within 1/2 of f·n), test the rest (within 1): exact rationals
    for name, fraction in (("train", Fraction(7, 10)), ("val", Fraction(3, 20)), ("test", Fraction(3, 20))):
        counts = np.bincount(labels[parts[name]], minlength=10).tolist()
        expected = [fraction * n for n in np.bincount(labels).tolist()]
        assert all(abs(c - e) <= 1 for c, e in zip(counts, expected, strict=True)), name
    again = split_indices(labels, seed=0)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], split_indices(labels, seed=1)["test"])


def test_dataset_items() -> None:
    train, test = Digits("train"), Digits("test", transform=lambda image: image * 2)
    assert len(train) + len(Digits("val")) + len(test) == len(Digits("all")) == 1797
    image, label = train[3]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and isinstance(label, int)
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) == 1.0
    assert float(test[0][0].max()) == 2 * float(test.images[0].max())  # × 2 is exact


def test_bad_split_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        Digits("validation")
    with pytest.raises(ValueError, match="fractions"):
        split_indices(np.zeros(10, dtype=np.int64), (0.5, 0.5, 0.5))
    bad = tmp_path / "digits.csv"
    bad.write_text(",".join(["0"] * 65) + "\n" + ",".join(["0"] * 10) + "\n")
    with pytest.raises(ValueError, match=r"digits\.csv, line 2"):
        load_digits_arrays(bad)
    bad.write_text(",".join(["0"] * 63 + ["17", "3"]) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_digits_arrays(bad)
