"""Distillation losses against the formula: T² · mean over the batch of Σ_k p_k (log p_k − log q_k).

The reference evaluates the formula with Python's ``decimal`` at 50 digits (``exp``/``ln`` correctly
rounded there), so it is exact for our purpose; the bound covers our float64 evaluation only:

* each log-softmax value ``ℓ = z/T − max − log Σ exp(z/T − max)`` carries at most ``K + 6`` rounded
  operations and two libm calls (1 ulp each) on quantities of magnitude at most ``2·M + log K + 1``
  (``M = max |z/T|``), so ``|δℓ| ≤ D = γ(K + 8)·(2M + log K + 1)``;
* a probability ``p = exp(ℓ)`` is then within relative ``e^D − 1 + ε`` of the exact one, so each term
  ``p (ℓp − ℓq)`` is within ``p·2D + p·(e^D − 1 + ε)·|ℓp − ℓq|``;
* the sums over ``K`` classes and ``N`` samples, the mean and the ``T²`` add ``γ(K + N + 3)`` relative to
  ``Σ|terms|``.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import loss_formulas as formulas
import pytest
import torch
from tests.tolerances import LIBM_ULPS, assert_within, eps, gamma, unit_roundoff

from running_error import Bounded
from running_error import exact as exact_value
from visionkit.losses.distill import DistillationLoss, distillation_loss, hint_loss, soft_target_loss

getcontext().prec = 50


def _log_softmax_exact(row: list[float], temperature: float) -> list[Decimal]:
    scaled = [Decimal(v) / Decimal(temperature) for v in row]
    top = max(scaled)
    total = sum((s - top).exp() for s in scaled)
    return [s - top - total.ln() for s in scaled]


def _reference(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> tuple[float, float, float]:
    """(loss, Σ|p (ℓp − ℓq)| / N · T², M) of the formula, exactly (to 50 digits)."""
    total, absolute = Decimal(0), Decimal(0)
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        log_q, log_p = _log_softmax_exact(s_row, temperature), _log_softmax_exact(t_row, temperature)
        for lp, lq in zip(log_p, log_q, strict=True):
            term = lp.exp() * (lp - lq)
            total += term
            absolute += abs(term)
    scale = Decimal(temperature) ** 2 / len(student)
    m = max(float(student.abs().max()), float(teacher.abs().max())) / temperature
    return float(total * scale), float(absolute * scale), m


def _bound(absolute: float, m: float, k: int, n: int, temperature: float) -> float:
    d = gamma(k + 8, torch.float64) * (2 * m + math.log(k) + 1)
    per_term = 2 * d * temperature**2 + (math.expm1(d) + eps(torch.float64)) * absolute
    return per_term + gamma(k + n + 3, torch.float64) * absolute


@pytest.mark.parametrize(
    ("n", "k", "temperature", "seed"), [(1, 2, 1.0, 0), (8, 10, 4.0, 1), (5, 3, 20.0, 2)]
)
def test_soft_target_loss_equals_formula_with_t_squared_and_batch_mean(
    n: int, k: int, temperature: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, k, generator=generator, dtype=torch.float64) * 5
    teacher = torch.randn(n, k, generator=generator, dtype=torch.float64) * 5
    teacher[0, :2] = teacher[0, 0]  # a tie
    expected, absolute, m = _reference(student, teacher, temperature)
    expected_tensor = torch.tensor(expected, dtype=torch.float64)
    bound = _bound(absolute, m, k, n, temperature)
    assert_within(soft_target_loss(student, teacher, temperature), expected_tensor, bound, "soft target loss")


def test_mean_is_over_the_batch_not_the_classes() -> None:
    student = torch.zeros(1, 4, dtype=torch.float64)
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0, 0.0]], dtype=torch.float64)
    one = soft_target_loss(student, teacher, 1.0)
    two = soft_target_loss(student.repeat(2, 1), teacher.repeat(2, 1), 1.0)
    assert torch.equal(one, two)  # same rows twice: the batch mean is unchanged
    # KL(p ‖ uniform) = log 4 − H(p) with p = (2, 1, 1, 1) / 5
    p = [0.4, 0.2, 0.2, 0.2]
    exact = math.log(4) + sum(x * math.log(x) for x in p)
    # Both against the exact KL: the library's log_softmax / exp / sum formula in running-error arithmetic
    # (its input log 2 within 1 ulp of ln 2), and the expression above (decimal p rounded, libm logs).
    libm = LIBM_ULPS * eps(torch.float64)
    logits = Bounded(teacher.double(), torch.tensor([[libm * math.log(2.0), 0.0, 0.0, 0.0]]), torch.float64)
    log_p = formulas.log_softmax(logits, 1)
    log_q = formulas.log_softmax(exact_value(torch.zeros(1, 4, dtype=torch.float64), torch.float64), 1)
    library = (log_p.exp() * (log_p - log_q)).sum(1)
    probabilities = Bounded(
        torch.tensor(p, dtype=torch.float64),
        unit_roundoff(torch.float64) * torch.tensor(p, dtype=torch.float64),
        torch.float64,
    )
    four = Bounded(torch.tensor(4.0, dtype=torch.float64), 0.0, torch.float64)
    reference = four.log() + (probabilities * probabilities.log()).sum(0)
    assert abs(float(one) - exact) <= float(library.error[0] + reference.error) * (1 + 2**-36)


def test_gradcheck_and_teacher_gets_no_gradient() -> None:
    student = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 4, 2])
    assert torch.autograd.gradcheck(
        lambda s: distillation_loss(s, teacher, targets, temperature=3.0, alpha=0.7), (student,)
    )
    distillation_loss(student, teacher, targets).backward()
    assert teacher.grad is None


def test_alpha_mixes_soft_and_hard_terms() -> None:
    torch.manual_seed(0)
    student, teacher, targets = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    soft = soft_target_loss(student, teacher, 2.0)
    hard = torch.nn.functional.cross_entropy(student, targets)
    assert torch.equal(
        distillation_loss(student, teacher, targets, temperature=2.0, alpha=1.0), 1.0 * soft + 0.0 * hard
    )
    assert torch.equal(
        distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.0), 0.0 * soft + 1.0 * hard
    )
    assert torch.equal(DistillationLoss(2.0, 0.3)((student, teacher), targets),
                       distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.3))  # fmt: skip


def test_empty_batch_is_zero_and_backpropagates() -> None:
    student = torch.zeros(0, 3, requires_grad=True)
    loss = distillation_loss(student, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and student.grad is not None


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), alpha=2.0)
    with pytest.raises(ValueError, match="hint features"):
        hint_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, 3))
