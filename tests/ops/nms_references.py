"""Plain-Python references for hard NMS and Soft-NMS, shared by the ops tests (slow, obviously correct)."""

from __future__ import annotations

import math

import torch

from tolerances import LIBM_ULPS, assert_within, eps, exp_argument_error, gamma, product_ratio_bound


def ref_iou(a: list[float], b: list[float]) -> float:
    """Same arithmetic as the library (IEEE float64 when boxes are float64)."""
    width = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    height = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = width * height
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes, scores, threshold, labels=None) -> list[int]:
    """The textbook loop: visit by (score desc, index asc); keep unless a kept box of the same label
    has IoU > threshold."""
    boxes, scores = boxes.tolist(), scores.tolist()
    labels = [0] * len(boxes) if labels is None else labels.tolist()
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(labels[k] != labels[i] or ref_iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


def ref_soft_nms(boxes, scores, method="linear", sigma=0.5, nt=0.3, score_threshold=0.001, labels=None):
    """The loop: select the best remaining box (lower index on ties), decay the others, drop the weak.

    Returns the kept ids, their scores at selection and, per kept box, how many earlier selections
    overlapped it (IoU > 0): an upper bound on the number of decay factors its score received (linear
    decays only above ``nt >= 0``), from which :func:`assert_soft_scores` derives its tolerance.
    """
    boxes, s = boxes.tolist(), scores.tolist()
    labels = [0] * len(boxes) if labels is None else labels.tolist()
    remaining = [i for i in range(len(boxes)) if s[i] >= score_threshold]
    kept, kept_scores = [], []
    decays = [0] * len(boxes)
    while remaining:
        best = max(remaining, key=lambda i: (s[i], -i))
        kept.append(best)
        kept_scores.append(s[best])
        remaining.remove(best)
        for i in remaining:
            if labels[i] != labels[best]:
                continue
            iou = ref_iou(boxes[best], boxes[i])
            decays[i] += iou > 0
            if method == "linear":
                if iou > nt:
                    s[i] *= 1 - iou
            else:
                s[i] *= math.exp(-(iou * iou) / sigma)
        remaining = [i for i in remaining if s[i] >= score_threshold]
    return kept, kept_scores, [decays[i] for i in kept]


def overlapping_earlier(boxes, keep, labels=None) -> list[int]:
    """Per kept box (in ``keep`` order): how many earlier kept boxes of its label overlap it with a
    positive area — the decay count bound of :func:`ref_soft_nms` for a selection order given by an
    engine. A positive intersection is decided exactly in any dtype (``min − max > 0`` iff ``min > max``)."""
    b = boxes.double()[keep]
    lab = torch.zeros(len(keep), dtype=torch.int64) if labels is None else labels[keep]
    width = torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0])
    height = torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1])
    earlier = torch.ones(len(keep), len(keep), dtype=torch.bool).tril(-1)  # [j, i]: i selected before j
    overlap = (width > 0) & (height > 0) & (lab[:, None] == lab[None, :]) & earlier
    return overlap.sum(1).tolist()


def assert_soft_scores(got, want, decays, method, sigma=0.5, want_in_float64=False):
    """Soft-NMS scores ``got`` against ``want`` (another engine, or the loop above), with a derived bound.

    Both sides select the same boxes in the same order (asserted by the caller), so each kept score is
    ``s · f₁ ⋯ f_k`` multiplied in the same order, ``k <= decays[i]`` (boxes removed under the score
    threshold decay nothing). What differs:

    * linear, same dtype: the factors ``1 − IoU`` are identical (``ref_iou`` is the engines' formula in
      the same dtype); only the order of the multiplications may differ (the "rounds" engine applies the
      factors of one round in a scatter): :func:`tolerances.product_ratio_bound` with ``r = 0``.
    * gaussian, same dtype: only ``exp`` (torch's libm / SLEEF / MKL-VML kernel, C's libm, Python's
      ``math.exp``), each within ``LIBM_ULPS`` ulp, i.e. relative ``ε``, of the exact value of the
      identical argument ``−IoU²/sigma``. C's float32 path computes ``exp`` in double and rounds to float
      (``ε64 + u32 < ε32``). Bound: :func:`tolerances.product_ratio_bound` with ``r = ε`` on each side.
    * gaussian, ``got`` in float32 against the loop run in float64 on the same values
      (``want_in_float64``), for boxes with integer coordinates, ``|x| < 2¹⁰`` (see
      :func:`assert_integer_boxes`): widths, areas, intersections and unions are exact in both dtypes,
      so each side's IoU has one rounding, ``IoU²`` one, ``sigma``'s conversion to the dtype one and the
      division one: the argument ``x ≤ 1/sigma`` is within ``γ₅`` (relative) of the exact one, which
      moves ``exp`` by at most ``expm1(γ₅/sigma)`` on top of its own ``ε``.
    """
    dtype = got.dtype
    got = got.detach().double()
    want = torch.as_tensor(want, dtype=torch.float64)
    cross = want_in_float64 and dtype != torch.float64
    if method == "linear":
        assert not cross, "linear Soft-NMS across dtypes: no derived bound implemented"
        sides = ((0.0, dtype),) * 2
    elif cross:
        sides = tuple(
            ((1 + LIBM_ULPS * eps(d)) * (1 + exp_argument_error(1 / sigma, gamma(5, d))) - 1, d)
            for d in (dtype, torch.float64)
        )
    else:
        sides = ((LIBM_ULPS * eps(dtype), dtype),) * 2
    ratio = product_ratio_bound(torch.as_tensor(decays, dtype=torch.int64), *sides)
    assert_within(got, want, ratio * want.abs(), "soft-NMS scores")


def assert_integer_boxes(boxes) -> None:
    """The precondition of the cross-dtype bound above: integer coordinates with ``|x| < 2¹⁰``, so that
    widths (< 2¹¹), areas and intersections (< 2²²) and ``area_a + area_b`` (< 2²³) are integers that
    float32 (24-bit significand) holds exactly."""
    assert bool((boxes == boxes.round()).all() and (boxes.abs() < 2**10).all())
