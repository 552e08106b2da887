"""§23 and §33: the handbook's metric formulas and its worked AP example, recomputed.

The §33 example ranks 20 test samples of class "car" (scores and labels from the handbook's table, as in
the README). The handbook's AP rules are implemented literally beside the library's (VOC) ones: a rule as
printed that leaves a recall level without a precision, or scores a perfect ranking below 1, is an
erratum. §23's F-score formula is compared with :func:`visionkit.metrics.classification.fbeta_score`
(equal to scikit-learn's).
"""

from __future__ import annotations

import numpy as np

from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.metrics.classification import fbeta_score, precision, recall
from visionkit.metrics.multilabel import interpolated_average_precision, ranked_precision_recall

#: the handbook's §33 table: confidence scores and ground truth of 20 samples for class "car"
SCORES = (
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
)
LABELS = (0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1)

PRECISION5 = Claim("§33", "Precision=2/5=40%", "top-5 precision is 2/5 = 40 %", kind="fact")
RECALL5 = Claim("§33", "Recall=2/6=30%", "top-5 recall is 2/6 = 30 %", kind="fact")
ALL_POINT = Claim(
    "§33",
    "对于每个recall值r，我们可以计算出对应（r’ > r）的最大precision",
    "for each of the M recall values r, take the highest precision at recall r' > r",
    kind="fact",
)
ELEVEN_POINT = Claim(
    "§33",
    "对于recall大于每一个阈值（比如recall>0.3），我们都会得到一个对应的最大precision",
    "11-point AP: for recall greater than each threshold (e.g. recall > 0.3) take the highest precision",
    kind="fact",
)
F_BETA = Claim(
    "§23",
    "F-Score = (1+β^2) x (PxR) / (β^2x(P+R)) = 2xTP/(2xTP + FP + FN)",
    "F-score = (1 + β²)·P·R / (β²·(P + R)) = 2TP / (2TP + FP + FN)",
    kind="fact",
)
F_ONE = Claim("§23", "当β=1时，F1-score = 2xPxR/(P+R)", "for β = 1, F1 = 2PR / (P + R)", kind="fact")


def handbook_all_point(precision_values: np.ndarray, recall_values: np.ndarray) -> float | None:
    """The §33 rule as printed: mean over r = 1/M … M/M of max precision at recall r' > r (``None`` when a
    recall level has no r' > r, i.e. the rule is undefined there)."""
    levels = np.unique(recall_values[recall_values > 0])
    picked = []
    for level in levels:
        above = recall_values > level
        if not above.any():
            return None
        picked.append(precision_values[above].max())
    return float(np.mean(picked))


def handbook_eleven_point(precision_values: np.ndarray, recall_values: np.ndarray) -> float:
    """The 11-point rule as printed (recall *greater than* each threshold; none → precision 0)."""
    total = 0.0
    for threshold in np.arange(0.0, 1.1, 0.1):
        above = recall_values > threshold
        total += precision_values[above].max() if above.any() else 0.0
    return total / 11


def judge_metrics(
    p5: float,
    r5: float,
    all_point_literal: float | None,
    all_point_voc: float,
    eleven_literal_perfect: float,
    f_rows: list[dict[str, float]],
) -> list[Verdict]:
    """``p5``/``r5``: top-5 precision and recall; the literal AP rules' values (``None``: undefined);
    ``f_rows``: ``beta``, ``handbook`` and ``library`` F-scores on one example."""
    f_match = all(abs(row["handbook"] - row["library"]) <= 1e-12 for row in f_rows)
    f1 = [row for row in f_rows if row["beta"] == 1.0]
    wrong = [row for row in f_rows if abs(row["handbook"] - row["library"]) > 1e-12]
    return [
        judge(PRECISION5, "top-5 precision == 0.40", p5, holds=abs(p5 - 0.4) < 1e-12),
        judge(
            RECALL5,
            "top-5 recall rounds to 30 % (nearest 1 %)",
            f"{r5:.4f}",
            holds=round(r5, 2) == 0.30,
            correction=f"recall@5 = 2/6 = {r5:.1%}",
        ),
        judge(
            ALL_POINT,
            "the rule defines a precision at every recall level (so AP exists)",
            "undefined at r = M/M (no r' > 1)" if all_point_literal is None else f"{all_point_literal:.4f}",
            holds=all_point_literal is not None,
            correction=f"use recall r' ≥ r (PASCAL VOC): AP = {all_point_voc:.4f} on this example",
        ),
        judge(
            ELEVEN_POINT,
            "a perfect ranking scores 11-point AP = 1 under the rule as printed",
            f"{eleven_literal_perfect:.4f}",
            holds=abs(eleven_literal_perfect - 1.0) < 1e-12,
            correction=f"recall > 1.0 never happens, so the rule caps AP at 10/11 = {10 / 11:.4f}; "
            "VOC2007 uses recall ≥ threshold",
        ),
        judge(
            F_BETA,
            "handbook formula == F-β (scikit-learn's definition) for β ∈ {0.5, 1, 2}",
            "; ".join(f"β={r['beta']:g}: {r['handbook']:.4f} vs {r['library']:.4f}" for r in f_rows),
            holds=f_match,
            correction="F_β = (1+β²)·P·R / (β²·P + R) = (1+β²)TP / ((1+β²)TP + β²FN + FP); "
            f"the printed form is wrong for β ≠ 1 (β = {', '.join(format(r['beta'], 'g') for r in wrong)})",
        ),
        judge(
            F_ONE,
            "2PR/(P+R) == F1 (library)",
            f"{f1[0]['handbook']:.4f} vs {f1[0]['library']:.4f}",
            holds=abs(f1[0]["handbook"] - f1[0]["library"]) <= 1e-12,
        ),
    ]


def _f_rows() -> list[dict[str, float]]:
    targets = [1, 1, 1, 0, 0, 0, 0, 1]
    predictions = [1, 1, 0, 1, 1, 0, 0, 1]
    p, r = float(precision(targets, predictions)), float(recall(targets, predictions))
    rows = []
    for beta in (0.5, 1.0, 2.0):
        handbook = (1 + beta**2) * (p * r) / (beta**2 * (p + r))
        rows.append(
            {
                "beta": beta,
                "P": p,
                "R": r,
                "handbook": handbook,
                "library": float(fbeta_score(targets, predictions, beta=beta)),
            }
        )
    return rows


@register("metric-examples", ("§33", "§23"), "The handbook's AP example and F-score formula", errata=True)
def metric_examples(ctx: LabContext) -> Findings:
    precision_values, recall_values = (a[:, 0] for a in ranked_precision_recall(SCORES, LABELS))
    literal = handbook_all_point(precision_values, recall_values)
    voc_all = interpolated_average_precision(precision_values, recall_values, "all")
    voc_11 = interpolated_average_precision(precision_values, recall_values, "11point")
    perfect_p, perfect_r = (a[:, 0] for a in ranked_precision_recall([0.9, 0.8, 0.2], [1, 1, 0]))
    eleven_perfect = handbook_eleven_point(perfect_p, perfect_r)
    f_rows = _f_rows()
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    axis.plot(recall_values, precision_values, marker="o", label="top-k, k = 1…20")
    axis.scatter([recall_values[4]], [precision_values[4]], color="red", zorder=3, label="top-5 (0.333, 0.4)")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(f"§33 example: VOC AP {voc_all:.3f} (all), {voc_11:.3f} (11-pt)")
    axis.legend()
    figure.tight_layout()
    ctx.figure(figure, "pr_curve", "Precision–recall of the handbook's 20-sample ranking for class car.")
    ranking = [
        {"rank": k + 1, "precision": precision_values[k], "recall": recall_values[k]} for k in range(10)
    ]
    return Findings(
        verdicts=judge_metrics(
            float(precision_values[4]), float(recall_values[4]), literal, voc_all, eleven_perfect, f_rows
        ),
        tables=[
            Table.of("Top-k of the §33 ranking (first 10)", ranking),
            Table.of("F-β on targets 1,1,1,0,0,0,0,1 and predictions 1,1,0,1,1,0,0,1", f_rows),
        ],
        numbers={
            "precision_at_5": precision_values[4],
            "recall_at_5": recall_values[4],
            "voc_ap_all": voc_all,
            "voc_ap_11point": voc_11,
        },
    )
