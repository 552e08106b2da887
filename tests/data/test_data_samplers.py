"""Class-imbalance tools: class weights vs scikit-learn, over-sampler balance, under-sampler counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from tolerances import assert_within, gamma
from visionkit.data.samplers import ClassBalancedSampler, UnderSampler, class_counts, class_weights

LABELS = [0] * 70 + [1] * 20 + [2] * 10


def test_class_weights_equal_sklearn_balanced() -> None:
    reference = compute_class_weight("balanced", classes=np.arange(3), y=np.array(LABELS))
    # both divide n by (classes · count) in float64 (one rounding); ours then rounds to float32
    assert torch.equal(class_weights(LABELS), torch.from_numpy(reference).float())
    # weighted counts are equal: each class contributes n / classes, up to the float32 weight's rounding
    # and the product's (γ₂ in float32)
    totals = class_weights(LABELS) * class_counts(LABELS).float()
    assert_within(totals, torch.full((3,), len(LABELS) / 3), gamma(2, torch.float32) * len(LABELS) / 3)


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
    frequencies = torch.bincount(torch.tensor(LABELS)[picks], minlength=3).double() / len(picks)
    # each frequency is a mean of 30 000 Bernoulli(1/3) draws: by Hoeffding P(|f − 1/3| ≥ t) ≤ 2e^(−2nt²);
    # t for a false-failure probability of 1e-6 over the 3 classes (a stream change in torch's multinomial
    # is a fresh sample). Sampling by class frequency instead (0.7 / 0.2 / 0.1) is > 20 t away.
    t = math.sqrt(math.log(2 * 3 / 1e-6) / (2 * len(picks)))
    assert_within(frequencies, torch.full((3,), 1 / 3, dtype=torch.float64), t)
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
