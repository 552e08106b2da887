"""Class-imbalance tools: class weights vs scikit-learn, over-sampler balance, under-sampler counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from visionkit.data.samplers import ClassBalancedSampler, UnderSampler, class_counts, class_weights

LABELS = [0] * 70 + [1] * 20 + [2] * 10


def test_class_weights_equal_sklearn_balanced() -> None:
    reference = compute_class_weight("balanced", classes=np.arange(3), y=np.array(LABELS))
    np.testing.assert_allclose(class_weights(LABELS).numpy(), reference, rtol=1e-6)
    # weighted counts are equal: each class contributes the same total weight
    totals = class_weights(LABELS) * class_counts(LABELS).float()
    assert torch.allclose(totals, totals[0].expand(3))


def test_class_weights_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        class_weights([0, 2, 2])
    with pytest.raises(ValueError, match="out of range"):
        class_counts([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="non-empty"):
        class_weights([])
    with pytest.raises(ValueError, match="non-negative"):
        class_weights([0, -1])


def test_balanced_sampler_draws_classes_equally_and_deterministically() -> None:
    sampler = ClassBalancedSampler(LABELS, num_samples=30_000, seed=1)
    picks = torch.tensor(list(sampler))
    frequencies = torch.bincount(torch.tensor(LABELS)[picks], minlength=3).float() / len(picks)
    assert torch.allclose(frequencies, torch.full((3,), 1 / 3), atol=0.015)
    assert list(sampler) == picks.tolist()  # same epoch, same draw
    sampler.set_epoch(1)
    assert list(sampler) != picks.tolist()
    assert len(ClassBalancedSampler(LABELS)) == 3 * 70  # default: every class as large as the largest


def test_under_sampler_keeps_minority_size_per_class() -> None:
    sampler = UnderSampler(LABELS, seed=0)
    picks = torch.tensor(list(sampler))
    assert len(sampler) == len(picks) == 30
    assert torch.bincount(torch.tensor(LABELS)[picks]).tolist() == [10, 10, 10]
    assert len(set(picks.tolist())) == 30  # no repeats: sampling without replacement
    sampler.set_epoch(3)
    assert sorted(set(sampler)) != sorted(picks.tolist())  # a different subset of the majority


def test_samplers_in_a_data_loader() -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    loader = torch.utils.data.DataLoader(dataset, batch_size=10, sampler=UnderSampler(LABELS, seed=0))
    seen = torch.cat([labels for _, labels in loader])
    assert torch.bincount(seen).tolist() == [10, 10, 10]
