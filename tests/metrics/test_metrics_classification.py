"""Classification metrics against scikit-learn (live, to 1e-12) and the handbook's §33 example."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from visionkit.metrics import classification as cls
from visionkit.metrics import curves
from visionkit.metrics.multilabel import (
    interpolated_average_precision,
    multilabel_mean_average_precision,
    precision_recall_at_k,
    ranked_precision_recall,
)

TOL = 1e-12


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
            for a, b in zip(ours[:3], ref[:3], strict=True):
                np.testing.assert_allclose(a, b, rtol=0, atol=TOL, equal_nan=True)
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
            assert abs(cls.precision(t, p) - skm.precision_score(y_true, y_pred)) < TOL
            assert abs(cls.recall(t, p) - skm.recall_score(y_true, y_pred)) < TOL
            assert abs(cls.true_positive_rate(t, p) - skm.recall_score(y_true, y_pred)) < TOL
            assert abs(cls.f1_score(t, p) - skm.f1_score(y_true, y_pred)) < TOL
            assert abs(cls.fbeta_score(t, p, 2.0) - skm.fbeta_score(y_true, y_pred, beta=2.0)) < TOL
            assert abs(cls.accuracy(t, p) - skm.accuracy_score(y_true, y_pred)) < TOL
            assert abs(cls.balanced_accuracy(t, p) - skm.balanced_accuracy_score(y_true, y_pred)) < TOL
        tn, fp, _, _ = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
        assert cls.specificity(t, p) == pytest.approx(tn / (tn + fp), abs=TOL)
        assert cls.false_positive_rate(t, p) == pytest.approx(fp / (fp + tn), abs=TOL)


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
            np.testing.assert_allclose(
                cls.confusion_matrix(y_true, y_pred, normalize=normalize), ref, atol=TOL
            )
        np.testing.assert_array_equal(
            cls.multilabel_confusion_matrix(y_true, y_pred), skm.multilabel_confusion_matrix(y_true, y_pred)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert (
                abs(cls.balanced_accuracy(y_true, y_pred) - skm.balanced_accuracy_score(y_true, y_pred)) < TOL
            )


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
            for a, b in zip(ours[:3], ref[:3], strict=True):
                np.testing.assert_allclose(a, b, atol=TOL)


def test_top_k_accuracy_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        scores = rng.integers(0, 4, (50, 6)).astype(np.float64)  # many ties
        y_true = rng.integers(0, 6, 50)
        for k in (1, 2, 5):
            ref = skm.top_k_accuracy_score(y_true, scores, k=k, labels=range(6))
            assert abs(cls.top_k_accuracy(y_true, scores, k) - ref) < TOL


def test_classification_report_matches_sklearn_dict() -> None:
    y_true, y_pred = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]
    text, table = cls.classification_report(y_true, y_pred, class_names=["cat", "dog", "bird"])
    ref = skm.classification_report(y_true, y_pred, target_names=["cat", "dog", "bird"], output_dict=True)
    for key, row in ref.items():
        if key == "accuracy":
            assert abs(table[key] - row) < TOL
            continue
        for field, value in row.items():
            assert abs(table[key][field] - value) < TOL, (key, field)
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
                for a, b in zip(ours_roc, ref_roc, strict=True):
                    np.testing.assert_allclose(a, b, atol=TOL, equal_nan=True)
        for a, b in zip(curves.precision_recall_curve(y_true, scores), ref_pr, strict=True):
            np.testing.assert_allclose(a, b, atol=TOL)
        assert abs(curves.average_precision(y_true, scores) - ref_ap) < TOL
        if len(set(y_true)) == 2:
            assert abs(curves.roc_auc_score(y_true, scores) - skm.roc_auc_score(y_true, scores)) < TOL
        else:
            with pytest.raises(ValueError, match="both classes"):
                curves.roc_auc_score(y_true, scores)


def test_auc_and_multilabel_averages_equal_sklearn() -> None:
    rng = np.random.default_rng(6)
    x = np.sort(rng.random(20))
    y = rng.random(20)
    assert abs(curves.auc(x, y) - skm.auc(x, y)) < TOL
    assert abs(curves.auc(x[::-1], y[::-1]) - skm.auc(x[::-1], y[::-1])) < TOL
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        curves.auc([0.0, 1.0, 0.5], [1.0, 1.0, 1.0])
    y_true = rng.integers(0, 2, (60, 5))
    scores = rng.integers(0, 6, (60, 5)) / 5.0
    for average in ("micro", "macro", "weighted", "samples", None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "samples": rows without positives (sklearn sets recall to 1)
            reference = skm.average_precision_score(y_true, scores, average=average)
        np.testing.assert_allclose(
            curves.average_precision(y_true, scores, average=average), reference, atol=TOL
        )
    for average in ("micro", "macro", "weighted", None):
        np.testing.assert_allclose(
            curves.roc_auc_score(y_true, scores, average=average),
            skm.roc_auc_score(y_true, scores, average=average),
            atol=TOL,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_step = skm.average_precision_score(y_true, scores, average="macro")
    assert (
        abs(multilabel_mean_average_precision(scores, y_true, "step").mean_average_precision - sk_step) < TOL
    )


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
    assert precision_value[0] == pytest.approx(2 / 5, abs=TOL)
    assert recall_value[0] == pytest.approx(2 / 6, abs=TOL)  # 33.3 %: the handbook prints 30 %
    assert recall_value[0] != pytest.approx(0.30, abs=1e-3)
    # the top-5 is images 4, 2, 13, 19, 6 (1-based) as the handbook lists
    assert (np.argsort(-np.array(HANDBOOK_SCORES), kind="mergesort")[:5] + 1).tolist() == [4, 2, 13, 19, 6]
    p, r = ranked_precision_recall(HANDBOOK_SCORES, HANDBOOK_TARGETS)
    # "all" AP: mean over the 6 recall levels of the best precision at recall >= level
    ranked = np.array(HANDBOOK_TARGETS)[np.argsort(-np.array(HANDBOOK_SCORES), kind="mergesort")]
    hits = np.flatnonzero(ranked) + 1
    precisions_at_hits = np.arange(1, 7) / hits
    by_hand = np.mean([precisions_at_hits[i:].max() for i in range(6)])
    assert interpolated_average_precision(p[:, 0], r[:, 0], "all") == pytest.approx(by_hand, abs=TOL)
    eleven = np.mean(
        [p[:, 0][r[:, 0] >= t].max() if (r[:, 0] >= t).any() else 0 for t in np.linspace(0, 1, 11)]
    )
    assert interpolated_average_precision(p[:, 0], r[:, 0], "11point") == pytest.approx(eleven, abs=TOL)


def _slow_interpolated_ap(scores, targets, method):
    """Obviously-correct reference: loop over the ranking."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    positives = sum(targets)
    tp = 0
    points = []
    for k, i in enumerate(order, start=1):
        tp += targets[i]
        points.append((tp / k, tp / positives))
    if method == "11point":
        levels = [j / 10 for j in range(11)]
    else:
        levels = [j / positives for j in range(1, positives + 1)]
    best = [max([p for p, r in points if r >= level - 1e-15], default=0.0) for level in levels]
    return sum(best) / len(levels)


def test_multilabel_map_against_slow_reference() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 10, (40, 6)) / 10.0
    targets = rng.integers(0, 2, (40, 6))
    targets[:, 3] = 0
    for method in ("11point", "all"):
        result = multilabel_mean_average_precision(torch.from_numpy(scores), targets, method)
        assert np.isnan(result.per_class[3]) and result.num_classes_without_positives == 1
        for c in (0, 1, 2, 4, 5):
            ref = _slow_interpolated_ap(scores[:, c].tolist(), targets[:, c].tolist(), method)
            assert result.per_class[c] == pytest.approx(ref, abs=TOL)
        assert result.mean_average_precision == pytest.approx(np.nanmean(result.per_class), abs=TOL)


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
