"""Verdict logic on fixed numbers, both ways, for §13–§36 (the rest: test_lab_experiments_verdicts.py)."""

from __future__ import annotations

from visionkit.lab.experiments import (
    s13_parameter_counts,
    s14_vgg_kernels,
    s16_foreground_background,
    s18_kmeans_anchors,
    s19_cnn_essence,
    s20_pooling_gradients,
    s21_residual_depth,
    s24_roi_alignment,
    s26_optimizer_snippets,
    s28_mobilenet,
    s29_schedules,
    s30_class_imbalance,
    s33_metric_examples,
    s36_inception,
)


def flags(verdicts) -> list[bool]:
    return [v.holds for v in (verdicts if isinstance(verdicts, list) else [verdicts])]


def test_parameter_counts_both_ways() -> None:
    assert flags(s13_parameter_counts.judge_counts(34_944, 37_752_832, 4_097_000, 2_000_000)) == [True] * 4
    assert flags(s13_parameter_counts.judge_counts(23_296, 37_752_833, 4_096_000, 5_000_000)) == [False] * 4


def test_vgg_both_ways() -> None:
    fields = {"2x3x3": 5, "3x3x3": 7, "7x7": 7}
    params = {"2x3x3": 18 * 256, "3x3x3": 27 * 256, "7x7": 49 * 256}
    holds = s14_vgg_kernels.judge_vgg(fields, params, 16, {"3x3x3": 0.95, "7x7": 0.9})
    assert flags(holds) == [True] * 3
    fails = s14_vgg_kernels.judge_vgg(
        {**fields, "3x3x3": 9}, {**params, "7x7": 50 * 256}, 16, {"3x3x3": 0.9, "7x7": 0.95}
    )
    assert flags(fails) == [False] * 3


def test_foreground_background_both_ways() -> None:
    assert (
        flags(s16_foreground_background.judge_imbalance({"foreground": 1, "background": 999}, 200_700))
        == [True] * 2
    )
    assert (
        flags(s16_foreground_background.judge_imbalance({"foreground": 10, "background": 90}, 2_000_000))
        == [False] * 2
    )


def test_anchor_count_both_ways() -> None:
    assert flags(s18_kmeans_anchors.judge_anchor_count({3: 0.9, 5: 0.85, 9: 0.95})) == [True]
    verdict = s18_kmeans_anchors.judge_anchor_count({3: 0.84, 5: 0.89, 9: 0.94})
    assert flags(verdict) == [False] and verdict.is_erratum and "0.890 with 5" in verdict.correction


def test_cnn_both_ways() -> None:
    params = {"conv": 160, "local": 160 * 28 * 28, "dense": 10**7}
    assert flags(s19_cnn_essence.judge_cnn(params, 1e-15, 1e-13, {"raw": 0.0, "pooled": 0.3})) == [True] * 3
    fails = s19_cnn_essence.judge_cnn({**params, "local": 1000}, 1e-12, 1e-13, {"raw": 0.3, "pooled": 0.3})
    assert flags(fails) == [False] * 3


def test_pooling_both_ways() -> None:
    mean = {"share_error": 0.0, "sum_error": 1e-15, "sum_bound": 1e-12}
    maximum = {
        "receivers_min": 1,
        "receivers_max": 1,
        "value_error": 0.0,
        "sum_error": 0.0,
        "sum_bound": 1e-12,
    }
    assert flags(s20_pooling_gradients.judge_pooling(mean, maximum)) == [True, True]
    assert flags(
        s20_pooling_gradients.judge_pooling({**mean, "share_error": 1e-17}, {**maximum, "receivers_max": 4})
    ) == [False, False]
    assert flags(
        s20_pooling_gradients.judge_pooling({**mean, "sum_error": 1e-9}, {**maximum, "sum_error": 1e-9})
    ) == [False, False]


def test_residual_both_ways() -> None:
    def results(plain: tuple[float, float], v1: tuple[float, float], v2_loss: float, v2_val: float) -> dict:
        table = {
            ("plain", 1): plain[0],
            ("plain", 12): plain[1],
            ("v1", 1): v1[0],
            ("v1", 12): v1[1],
            ("v2", 1): 0.9,
        }
        out = {
            key: {"train_accuracy": value, "train_loss": 0.1, "val_accuracy": 0.9}
            for key, value in table.items()
        }
        out[("v2", 12)] = {"train_accuracy": 0.95, "train_loss": v2_loss, "val_accuracy": v2_val}
        return out

    holds = s21_residual_depth.judge_residual(
        results((0.96, 0.57), (0.83, 0.98), 0.05, 0.95), {"v1": (18, 20), "v2": (20, 20)}
    )
    assert flags(holds) == [True] * 4
    fails = s21_residual_depth.judge_residual(
        results((0.5, 0.9), (0.98, 0.8), 0.2, 0.8), {"v1": (20, 20), "v2": (18, 20)}
    )
    assert flags(fails) == [False] * 4 and fails[3].is_erratum


def test_roi_both_ways() -> None:
    assert (
        flags(s24_roi_alignment.judge_roi(14, {"pool": 0.4, "align": 1e-5}, {"pool": 0.04, "align": 0.0}))
        == [True] * 2
    )
    fails = s24_roi_alignment.judge_roi(22, {"pool": 0.1, "align": 0.05}, {"pool": 0.04, "align": 0.0})
    assert flags(fails) == [False] * 2 and "22×22" in fails[0].correction


def test_snippets_both_ways() -> None:
    holds = s26_optimizer_snippets.judge_snippets(
        (0.5, 0.01), (0.5, 0.02), False, {"snippet": 1.0, "visionkit": 1.0}
    )
    assert flags(holds) == [True] * 4
    fails = s26_optimizer_snippets.judge_snippets(
        (0.5, 22.6), (0.5, 1e4), True, {"snippet": 3.16, "visionkit": 1.0}
    )
    assert flags(fails) == [False] * 4 and all(v.is_erratum for v in fails)


def test_mobilenet_both_ways() -> None:
    def rows(key: str, ratio) -> list[dict[str, float]]:
        return [
            {key: m, "params_ratio": ratio(m, "p"), "macs_ratio": ratio(m, "m")} for m in (1.0, 0.5, 0.25)
        ]

    exact_alpha = rows("alpha", lambda m, _: m**2)
    exact_rho = rows("rho", lambda m, kind: 1.0 if kind == "p" else m**2)
    stride = {"params_pool": 18_496, "params_s2": 18_496, "macs_pool": 400, "macs_s2": 100}
    assert flags(s28_mobilenet.judge_mobilenet(exact_alpha, exact_rho, stride)) == [True] * 4
    off_alpha = rows("alpha", lambda m, _: 2 * m**2 if m < 1 else 1.0)
    off_rho = rows("rho", lambda m, kind: 1.1 if kind == "p" and m < 1 else m)
    assert flags(s28_mobilenet.judge_mobilenet(off_alpha, off_rho, {**stride, "macs_s2": 400})) == [False] * 4


def test_schedules_both_ways() -> None:
    staircase = [0.5 ** (t // 10) for t in range(30)]
    exponential = [0.95**t for t in range(30)]
    inverse = [1 / (1 + 0.1 * t) for t in range(30)]
    holds = s29_schedules.judge_schedules(staircase, 10, exponential, exponential, inverse, inverse)
    assert flags(holds) == [True] * 4
    sqrt = [1 / (t + 1) ** 0.5 for t in range(30)]
    fails = s29_schedules.judge_schedules([1.0] * 30, 10, sqrt, sqrt, [2 * v for v in inverse], inverse)
    assert flags(fails) == [False] * 4


def test_class_imbalance_both_ways() -> None:
    runs = {
        "plain": {"balanced": 0.7, "accuracy (imbalanced test)": 0.97, "balanced (imbalanced test)": 0.8},
        "over-sampling": {"balanced": 0.9},
        "under-sampling": {"balanced": 0.85},
        "class weights": {"balanced": 0.88},
    }
    assert flags(s30_class_imbalance.judge_imbalance(runs)) == [True] * 3
    worse = {**runs, "plain": {**runs["plain"], "balanced": 0.95, "accuracy (imbalanced test)": 0.82}}
    assert flags(s30_class_imbalance.judge_imbalance(worse)) == [False] * 3


def test_metric_examples_both_ways() -> None:
    right_f = [{"beta": b, "handbook": 0.5, "library": 0.5} for b in (0.5, 1.0, 2.0)]
    holds = s33_metric_examples.judge_metrics(0.4, 0.3, 0.66, 0.66, 1.0, right_f)
    assert flags(holds) == [True] * 6
    wrong_f = [{"beta": b, "handbook": 0.5 + (b != 1.0), "library": 0.6} for b in (0.5, 1.0, 2.0)]
    fails = s33_metric_examples.judge_metrics(0.41, 2 / 6, None, 0.66, 10 / 11, wrong_f)
    assert flags(fails) == [False] * 6 and "33.3%" in fails[1].correction


def test_inception_both_ways() -> None:
    printed = (
        {"weights": 153_600, "macs": 400, "channels": 416, "last_terms": 153_600},
        {"weights": 15_872, "macs": 100, "channels": 256, "last_terms": 15_872},
    )
    assert flags(s36_inception.judge_inception(*printed, 0.9)) == [True] * 7
    fails = s36_inception.judge_inception(
        {"weights": 387_072, "macs": 100, "channels": 417, "last_terms": 153_600},
        {"weights": 157_184 * 3, "macs": 100, "channels": 257, "last_terms": 15_872},
        0.8,
    )
    assert flags(fails) == [False] * 7
