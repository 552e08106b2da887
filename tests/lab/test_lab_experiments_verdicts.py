"""Every experiment's verdict logic on fixed numbers, both ways: the claim holds / does not hold.

The numbers are made up to sit on each side of the criterion; what the experiments really measure is
tested by running them (test_lab_experiments.py) and, for the errata, in test_lab_experiments_errata.py.
"""

from __future__ import annotations

from visionkit.lab.experiments import (
    s01_fitting,
    s02_vanishing_gradients,
    s03_exploding_gradients,
    s04_batch_norm,
    s05_initialization,
    s06_lr_range_test,
    s07_whitening,
    s08_soft_nms,
    s10_anchor_coverage,
    s11_focal_loss,
    s12_separable_group_conv,
)


def flags(verdicts) -> list[bool]:
    return [v.holds for v in (verdicts if isinstance(verdicts, list) else [verdicts])]


def test_fitting_both_ways() -> None:
    def runs(diagnosis: str, gaps: dict[str, float], vals: dict[str, float]) -> dict:
        return {
            name: {"train": 1.0, "val": vals.get(name, 0.8), "gap": gap, "diagnosis": diagnosis}
            for name, gap in gaps.items()
        }

    names = ("baseline", *s01_fitting.OVERFIT_REMEDIES)
    over = runs("overfitting", dict.fromkeys(names, 0.1) | {"baseline": 0.2}, {"more data": 0.97})
    under = {
        "baseline": {"train": 0.6, "val": 0.6, "gap": 0.0, "diagnosis": "underfitting"},
        "bigger": {"train": 0.9, "val": 0.9, "gap": 0.0, "diagnosis": "good"},
    }
    assert flags(s01_fitting.judge_fitting(over, under)) == [True] * 5
    worse = runs("good", dict.fromkeys(names, 0.3) | {"baseline": 0.2}, {"dropout 0.5": 0.99})
    under_bad = {
        "baseline": {"train": 0.99, "val": 0.99, "gap": 0.0, "diagnosis": "good"},
        "bigger": {"train": 0.5, "val": 0.5, "gap": 0.0, "diagnosis": "underfitting"},
    }
    assert flags(s01_fitting.judge_fitting(worse, under_bad)) == [False] * 5


def test_vanishing_both_ways() -> None:
    vanishing = dict.fromkeys(s02_vanishing_gradients.VARIANTS, 0.5) | {
        "sigmoid": 1e-20,
        "sigmoid, N(0, 1) weights": 1e-13,
    }
    assert flags(s02_vanishing_gradients.judge_vanishing(vanishing)) == [True] * 4
    none = dict.fromkeys(s02_vanishing_gradients.VARIANTS, 1e-3) | {
        "sigmoid": 0.5,
        "sigmoid, N(0, 1) weights": 0.5,
    }
    assert flags(s02_vanishing_gradients.judge_vanishing(none)) == [False] * 4


def test_exploding_both_ways() -> None:
    good = {
        "unclipped": {"first_loss": 1e20, "last_loss": 1e20, "skipped": 5, "flagged": 1.0},
        "clipped": {"first_loss": 80.0, "last_loss": 10.0, "skipped": 0, "flagged": 1.0},
        "he": {"first_loss": 2.0, "last_loss": 1.0, "skipped": 0, "flagged": 0.0},
    }
    assert flags(s03_exploding_gradients.judge_exploding(good)) == [True] * 3
    bad = {
        "unclipped": {"first_loss": 2.0, "last_loss": 1.0, "skipped": 0, "flagged": 0.0},
        "clipped": {"first_loss": 2.0, "last_loss": 3.0, "skipped": 1, "flagged": 1.0},
        "he": {"first_loss": 2.0, "last_loss": 1.0, "skipped": 0, "flagged": 1.0},
    }
    assert flags(s03_exploding_gradients.judge_exploding(bad)) == [False] * 3


def test_batch_norm_both_ways() -> None:
    plain = {0.001: 0.5, 0.01: 0.95, 0.1: 0.1}
    normalized = {0.001: 0.8, 0.01: 0.97, 0.1: 0.95}
    assert flags(s04_batch_norm.judge_batch_norm(plain, normalized)) == [True, True]
    assert flags(s04_batch_norm.judge_batch_norm(normalized, plain)) == [False, False]


def test_initialization_both_ways() -> None:
    ratios = {
        ("small random", "tanh"): 1e-30,
        ("1/√n", "tanh"): 0.2,
        ("he", "relu"): 0.6,
        ("1/√n", "relu"): 1e-8,
    }
    assert flags(s05_initialization.judge_init(1, ratios)) == [True] * 4
    wrong = {
        ("small random", "tanh"): 0.5,
        ("1/√n", "tanh"): 0.01,
        ("he", "relu"): 50.0,
        ("1/√n", "relu"): 1.0,
    }
    assert flags(s05_initialization.judge_init(7, wrong)) == [False] * 4


def test_range_test_both_ways() -> None:
    assert flags(s06_lr_range_test.judge_range_test({"10× lower": 0.9, "suggested": 0.95, "10× higher": 0.1}))
    assert not flags(
        s06_lr_range_test.judge_range_test({"10× lower": 0.97, "suggested": 0.9, "10× higher": 0.1})
    )[0]


def test_whitening_both_ways() -> None:
    holds = s07_whitening.judge_whitening(
        {"plain": 0.3, "squares": 1e-16, "bound": 1e-14},
        1e-9,
        {"pca": 1e-14, "zca": 1e-14, "bound": 1e-7},
        {1e-5: 2.0, 0.1: 0.9},
        {"train": 0.05, "all": 0.04},
    )
    assert flags(holds) == [True] * 5
    fails = s07_whitening.judge_whitening(
        {"plain": 1e-16, "squares": 0.25, "bound": 1e-14},
        4e5,
        {"pca": 1e-3, "zca": 1e-14, "bound": 1e-7},
        {1e-5: 0.9, 0.1: 2.0},
        {"train": 0.04, "all": 0.05},
    )
    assert flags(fails) == [False] * 5
    assert all(v.is_erratum for v in fails[:3])


def test_soft_nms_both_ways() -> None:
    rows = {"hard 0.5": {"AP": 0.6, "AR100": 0.7}, "gaussian σ 0.5": {"AP": 0.65, "AR100": 0.8}}
    exact = {"gaussian": 0.0, "linear": 1e-16}
    holds = s08_soft_nms.judge_soft_nms(
        rows, {"low": 0.01, "high": 0.08}, exact, {0.3: 0.5, 0.5: 0.7, 0.7: 0.6}
    )
    assert flags(holds) == [True] * 5
    swapped = {"hard 0.5": rows["gaussian σ 0.5"], "gaussian σ 0.5": rows["hard 0.5"]}
    fails = s08_soft_nms.judge_soft_nms(
        swapped,
        {"low": -0.01, "high": 0.08},
        {"gaussian": 1e-3, "linear": 1e-3},
        {0.3: 0.8, 0.5: 0.7, 0.7: 0.6},
    )
    assert flags(fails) == [False] * 5


def test_anchor_coverage_both_ways() -> None:
    holds = s10_anchor_coverage.judge_anchors(
        {"covered": 0.98, "median": 0.75}, {"covered": 0.7, "median": 0.6}, {"single": 0.0, "fpn": 0.9}
    )
    assert flags(holds) == [True] * 3
    fails = s10_anchor_coverage.judge_anchors(
        {"covered": 0.6, "median": 0.65}, {"covered": 0.7, "median": 0.6}, {"single": 0.9, "fpn": 0.9}
    )
    assert flags(fails) == [False] * 3


def test_focal_both_ways() -> None:
    ap = {0.0: 0.5, 2.0: 0.8, 5.0: 0.7}
    holds = s11_focal_loss.judge_focal(0.0, 0.25, {"ce": 0.7, "focal": 1e-3}, ap)
    assert flags(holds) == [True] * 5
    fails = s11_focal_loss.judge_focal(1e-9, 0.5, {"ce": 0.3, "focal": 0.4}, ap | {5.0: 0.9})
    assert flags(fails) == [False] * 5


def test_separable_and_group_both_ways() -> None:
    assert flags(s12_separable_group_conv.judge_separable(0.1150, 0.2)) == [True] * 3
    assert flags(s12_separable_group_conv.judge_separable(0.5, 1.7)) == [False] * 3
    assert flags(s12_separable_group_conv.judge_groups({1: 1.0, 2: 0.5, 4: 0.25}, 0.0)) == [True]
    assert flags(s12_separable_group_conv.judge_groups({1: 1.0, 2: 0.6}, 0.0)) == [False]
    assert flags(s12_separable_group_conv.judge_groups({1: 1.0, 2: 0.5}, 1.5)) == [False]
