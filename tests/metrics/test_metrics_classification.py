"""Classification metrics against scikit-learn (live) and the handbook's §33 example.

Tolerances (tests/tolerances.py): every per-class value here is one correctly rounded float64 operation on
exact integer counts (precision ``tp/(tp+fp)``, recall, F-β ``(1+β²)·tp / (β²·(tp+fn) + tp+fp)`` — the
products of small integers with 1.25, 0.25, 2, 5, 4 are exact —, rates, curve points, accuracy = exact
count / n), and the averages, curves and areas run the same numpy operations on the same arrays as
scikit-learn 1.9 (``np.average``, ``np.mean``, ``np.trapezoid``, ``-np.sum(np.diff(r) * p[:-1])``): those
comparisons are exact. The one place where the arithmetic differs is a macro average with a NaN class
(``zero_division=nan``): we average the defined values, sklearn calls ``np.nanmean`` (the same values
summed in other positions): :func:`tolerances.mean_difference_bound`. The §33 and slow-loop references
are exact rationals; our float64 AP is bounded against them by counting its roundings.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from tolerances import assert_fraction_within, assert_numbers_within, gamma, mean_difference_bound
from visionkit.metrics import classification as cls
from visionkit.metrics import curves
from visionkit.metrics.multilabel import (
    interpolated_average_precision,
    multilabel_mean_average_precision,
    precision_recall_at_k,
    ranked_precision_recall,
)

F64 = torch.float64


def _macro_bound(per_class: np.ndarray) -> float:
    """Our macro average is ``np.mean`` of the defined per-class values, sklearn's ``np.nanmean`` of all:
    the same sum and division when nothing is NaN (0), otherwise the same values in other positions."""
    values = per_class[~np.isnan(per_class)]
    if values.size in (0, per_class.size):
        return 0.0
    return mean_difference_bound(float(np.abs(values).sum()), values.size, F64)


def _random_cases(seed: int, num: int = 25):
    """Class-index pairs: random, imbalanced, all-one-class, classes only predicted, empty classes."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(num):
        n = int(rng.integers(1, 60))
        k = int(rng.integers(1, 6))
        y_true = rng.integers(0, k, n)
        y_pred = rng.integers(0, k + (i % 3 == 0), n)
        if i % 5 == 0:
            y_true[:] = 0  # one class only
        if i % 7 == 0:
            y_pred = y_true.copy()
        cases.append((y_true, y_pred))
    return cases


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_prf_equal_sklearn_multiclass(average, zero_division) -> None:
    for y_true, y_pred in _random_cases(0):
        labels = sorted(set(y_true) | set(y_pred) | {5})  # class 5 is empty: zero-division paths
        for beta in (0.5, 1.0, 2.0):
            ours = cls.precision_recall_fscore_support(
                y_true, y_pred, beta=beta, average=average, labels=labels, zero_division=zero_division
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = skm.precision_recall_fscore_support(
                    y_true, y_pred, beta=beta, average=average, labels=labels, zero_division=zero_division
                )
            per_class = cls.precision_recall_fscore_support(
                y_true, y_pred, beta=beta, average=None, labels=labels, zero_division=zero_division
            )
            for a, b, terms in zip(ours[:3], ref[:3], per_class[:3], strict=True):
                bound = _macro_bound(terms) if average == "macro" else 0.0
                assert_numbers_within(a, b, bound, f"{average} beta={beta}")
            if average is None:
                np.testing.assert_array_equal(ours[3], ref[3])


def test_binary_scores_equal_sklearn_and_accept_tensors() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        y_true = rng.integers(0, 2, 40)
        y_pred = rng.integers(0, 2, 40)
        t, p = torch.from_numpy(y_true), torch.from_numpy(y_pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one division of exact counts each (balanced accuracy: the same np.mean of the same recalls)
            assert cls.precision(t, p) == skm.precision_score(y_true, y_pred)
            assert cls.recall(t, p) == skm.recall_score(y_true, y_pred)
            assert cls.true_positive_rate(t, p) == skm.recall_score(y_true, y_pred)
            assert cls.f1_score(t, p) == skm.f1_score(y_true, y_pred)
            assert cls.fbeta_score(t, p, 2.0) == skm.fbeta_score(y_true, y_pred, beta=2.0)
            assert cls.accuracy(t, p) == skm.accuracy_score(y_true, y_pred)
            assert cls.balanced_accuracy(t, p) == skm.balanced_accuracy_score(y_true, y_pred)
        tn, fp, _, _ = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
        assert cls.specificity(t, p) == tn / (tn + fp)
        assert cls.false_positive_rate(t, p) == fp / (fp + tn)


def test_confusion_matrices_equal_sklearn() -> None:
    for y_true, y_pred in _random_cases(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_matrix = skm.confusion_matrix(y_true, y_pred)
        np.testing.assert_array_equal(cls.confusion_matrix(y_true, y_pred), ref_matrix)
        for normalize in ("true", "pred", "all"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = skm.confusion_matrix(y_true, y_pred, normalize=normalize)
            # count / row, column or total sum of exact counts: one division, as sklearn
            np.testing.assert_array_equal(cls.confusion_matrix(y_true, y_pred, normalize=normalize), ref)
        np.testing.assert_array_equal(
            cls.multilabel_confusion_matrix(y_true, y_pred), skm.multilabel_confusion_matrix(y_true, y_pred)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert cls.balanced_accuracy(y_true, y_pred) == skm.balanced_accuracy_score(y_true, y_pred)


def test_multilabel_indicator_scores_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    for i in range(20):
        y_true = rng.integers(0, 2, (30, 4))
        y_pred = rng.integers(0, 2, (30, 4))
        if i % 4 == 0:
            y_true[:, 2] = 0  # a class without positives
        np.testing.assert_array_equal(
            cls.multilabel_confusion_matrix(y_true, y_pred), skm.multilabel_confusion_matrix(y_true, y_pred)
        )
        np.testing.assert_array_equal(
            cls.multilabel_confusion_matrix(y_true, y_pred, samplewise=True),
            skm.multilabel_confusion_matrix(y_true, y_pred, samplewise=True),
        )
        assert cls.accuracy(y_true, y_pred) == skm.accuracy_score(y_true, y_pred)
        for average in ("micro", "macro", "weighted", "samples", None):
            ours = cls.precision_recall_fscore_support(y_true, y_pred, average=average)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = skm.precision_recall_fscore_support(y_true, y_pred, average=average)
            # zero_division 0 on both sides: no NaN, so macro/samples average the same arrays as sklearn
            for a, b in zip(ours[:3], ref[:3], strict=True):
                np.testing.assert_array_equal(a, b)


def test_top_k_accuracy_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        scores = rng.integers(0, 4, (50, 6)).astype(np.float64)  # many ties
        y_true = rng.integers(0, 6, 50)
        for k in (1, 2, 5):
            ref = skm.top_k_accuracy_score(y_true, scores, k=k, labels=range(6))
            assert cls.top_k_accuracy(y_true, scores, k) == ref  # exact hit count / 50


def test_classification_report_matches_sklearn_dict() -> None:
    y_true, y_pred = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]
    text, table = cls.classification_report(y_true, y_pred, class_names=["cat", "dog", "bird"])
    ref = skm.classification_report(y_true, y_pred, target_names=["cat", "dog", "bird"], output_dict=True)
    for key, row in ref.items():
        if key == "accuracy":
            assert table[key] == row
            continue
        for field, value in row.items():  # no zero division here: the same arrays are averaged
            assert table[key][field] == value, (key, field)
    assert "bird" in text and "weighted avg" in text


def _score_cases(seed: int):
    rng = np.random.default_rng(seed)
    for i in range(40):
        n = int(rng.integers(2, 80))
        y_true = rng.integers(0, 2, n)
        if i % 8 == 0:
            y_true[:] = 1
        if i % 8 == 1:
            y_true[:] = 0
        scores = rng.random(n) if i % 2 else rng.integers(0, 5, n) / 4.0  # ties
        yield y_true, scores


def test_curves_equal_sklearn_with_ties_and_one_class() -> None:
    for y_true, scores in _score_cases(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_pr = skm.precision_recall_curve(y_true, scores)
            ref_ap = skm.average_precision_score(y_true, scores)
            for drop in (True, False):
                ref_roc = skm.roc_curve(y_true, scores, drop_intermediate=drop)
                ours_roc = curves.roc_curve(
                    torch.from_numpy(y_true), torch.from_numpy(scores), drop_intermediate=drop
                )
                for a, b in zip(ours_roc, ref_roc, strict=True):  # counts / last count, as sklearn
                    np.testing.assert_array_equal(a, b)
        for a, b in zip(curves.precision_recall_curve(y_true, scores), ref_pr, strict=True):
            np.testing.assert_array_equal(a, b)
        # -np.sum(np.diff(recall) * precision[:-1]) and np.trapezoid on the identical curves, as sklearn
        assert curves.average_precision(y_true, scores) == ref_ap
        if len(set(y_true)) == 2:
            assert curves.roc_auc_score(y_true, scores) == skm.roc_auc_score(y_true, scores)
        else:
            with pytest.raises(ValueError, match="both classes"):
                curves.roc_auc_score(y_true, scores)


def test_auc_and_multilabel_averages_equal_sklearn() -> None:
    rng = np.random.default_rng(6)
    x = np.sort(rng.random(20))
    y = rng.random(20)
    assert curves.auc(x, y) == skm.auc(x, y)  # both ±np.trapezoid(y, x)
    assert curves.auc(x[::-1], y[::-1]) == skm.auc(x[::-1], y[::-1])
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        curves.auc([0.0, 1.0, 0.5], [1.0, 1.0, 1.0])
    y_true = rng.integers(0, 2, (60, 5))
    scores = rng.integers(0, 6, (60, 5)) / 5.0
    for average in ("micro", "macro", "weighted", "samples", None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "samples": rows without positives (sklearn sets recall to 1)
            reference = skm.average_precision_score(y_true, scores, average=average)
        # per-class values as above; np.mean / np.average(weights=column sums) of the same arrays
        np.testing.assert_array_equal(curves.average_precision(y_true, scores, average=average), reference)
    for average in ("micro", "macro", "weighted", None):
        np.testing.assert_array_equal(
            curves.roc_auc_score(y_true, scores, average=average),
            skm.roc_auc_score(y_true, scores, average=average),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_step = skm.average_precision_score(y_true, scores, average="macro")
    assert y_true.any(axis=0).all()  # every class has a positive: both average the same 5 values
    assert multilabel_mean_average_precision(scores, y_true, "step").mean_average_precision == sk_step


# Handbook §33: 20 test images, the confidence that each shows a car and whether it does (ground truth).
HANDBOOK_SCORES = [
    0.23,
    0.76,
    0.01,
    0.91,
    0.13,
    0.45,
    0.12,
    0.03,
    0.38,
    0.11,
    0.03,
    0.09,
    0.65,
    0.07,
    0.12,
    0.24,
    0.10,
    0.23,
    0.46,
    0.08,
]
HANDBOOK_TARGETS = [0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_handbook_section_33_example() -> None:
    precision_value, recall_value = precision_recall_at_k(HANDBOOK_SCORES, HANDBOOK_TARGETS, k=5)
    assert precision_value[0] == 2 / 5 and recall_value[0] == 2 / 6  # tp / k, tp / M: one division each
    assert f"{recall_value[0]:.1%}" == "33.3%"  # the handbook prints 30 %
    # the top-5 is images 4, 2, 13, 19, 6 (1-based) as the handbook lists
    assert (np.argsort(-np.array(HANDBOOK_SCORES), kind="mergesort")[:5] + 1).tolist() == [4, 2, 13, 19, 6]
    p, r = ranked_precision_recall(HANDBOOK_SCORES, HANDBOOK_TARGETS)
    # "all" AP: mean over the 6 recall levels of the best precision at recall >= level
    for method in ("all", "11point"):
        exact, bound = _exact_interpolated_ap(HANDBOOK_SCORES, HANDBOOK_TARGETS, method)
        assert_fraction_within(interpolated_average_precision(p[:, 0], r[:, 0], method), exact, bound, method)


def _exact_interpolated_ap(scores, targets, method) -> tuple[Fraction, Fraction]:
    """Obviously-correct reference in exact rationals, and the bound of our float64 AP against it.

    Rank (stable: ties in input order), precision ``tp/k`` and recall ``tp/M`` after each prediction;
    AP = mean over the levels (``j/10``, j = 0…10, or ``j/M``, j = 1…M) of the best precision at recall
    >= level. Ours rounds ``tp/k`` and ``tp/M`` once each (``M`` positives), the envelope is a max (exact):

    * ``"11point"``: ``Σ fl(e/11)`` over 11 levels in sequence: each term has 2 roundings and passes
      through at most 10 additions, so the error is at most ``γ(12)·Σ e/11``.
    * ``"all"``: ``Σⱼ (rⱼ − rⱼ₋₁)·eⱼ`` over the M recall steps: each term is
      ``rⱼeⱼ(1 + θ₄) − rⱼ₋₁eⱼ(1 + θ₄')`` (``rⱼ``, ``eⱼ``, the subtraction, the product) and the sum of M
      terms adds ``θ_(M−1)``, so the error is at most ``γ(M + 3)·Σⱼ (rⱼ + rⱼ₋₁)·eⱼ``.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    positives = sum(targets)
    tp, points = 0, []
    for k, i in enumerate(order, start=1):
        tp += targets[i]
        points.append((Fraction(tp, k), Fraction(tp, positives)))
    if method == "11point":
        levels = [Fraction(j, 10) for j in range(11)]
    else:
        levels = [Fraction(j, positives) for j in range(1, positives + 1)]
    best = [max([p for p, r in points if r >= level], default=Fraction(0)) for level in levels]
    exact = sum(best) / len(levels)
    if method == "11point":
        return exact, Fraction(gamma(12, F64)) * sum(best) / 11
    steps = sum((2 * level - Fraction(1, positives)) * e for level, e in zip(levels, best, strict=True))
    return exact, Fraction(gamma(positives + 3, F64)) * steps


def test_multilabel_map_against_slow_reference() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 10, (40, 6)) / 10.0
    targets = rng.integers(0, 2, (40, 6))
    targets[:, 3] = 0
    for method in ("11point", "all"):
        result = multilabel_mean_average_precision(torch.from_numpy(scores), targets, method)
        assert np.isnan(result.per_class[3]) and result.num_classes_without_positives == 1
        exact, bounds = [], []
        for c in (0, 1, 2, 4, 5):
            ref, bound = _exact_interpolated_ap(scores[:, c].tolist(), targets[:, c].tolist(), method)
            assert_fraction_within(result.per_class[c], ref, bound, f"{method} class {c}")
            exact.append(ref)
            bounds.append(bound)
        # np.mean of the 5 values, each within its bound of the exact AP: those errors, plus γ(5) of the sum
        total = sum(exact) + sum(bounds)
        mean_bound = sum(bounds) / 5 + Fraction(gamma(5, F64)) * total / 5
        assert_fraction_within(result.mean_average_precision, sum(exact) / 5, mean_bound, method)


def test_eleven_point_levels_are_exact_tenths() -> None:
    # 10 positives, the first 3 ranked first: recall is exactly 3/10 at precision 1, so the 0.3 level
    # gets precision 1 (np.arange(0, 1.1, 0.1) makes that level 0.30000000000000004 and misses it)
    targets = [1, 1, 1] + [0] * 20 + [1] * 7
    scores = np.linspace(1.0, 0.0, len(targets))
    p, r = ranked_precision_recall(scores, targets)
    exact, bound = _exact_interpolated_ap(scores.tolist(), targets, "11point")
    assert exact == Fraction(19, 33)
    assert_fraction_within(interpolated_average_precision(p[:, 0], r[:, 0], "11point"), exact, bound)


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="targets and predictions"):
        cls.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="average='binary'"):
        cls.precision([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="average must be"):
        cls.precision([0, 1], [0, 1], average="mean")
    with pytest.raises(ValueError, match="scores must be finite"):
        curves.roc_curve([0, 1], [0.5, float("nan")])
    with pytest.raises(TypeError, match="targets"):
        cls.accuracy("01", [0, 1])
    with pytest.raises(ValueError, match="k must be"):
        precision_recall_at_k([0.1, 0.2], [0, 1], k=3)
