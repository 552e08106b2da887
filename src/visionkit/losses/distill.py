"""Knowledge-distillation losses (handbook §27 "knowledge distillation"; Hinton, Vinyals & Dean 2015).

Soft targets: the student matches the teacher's class distribution softened by a temperature ``T``,

    L_soft = T² · (1/N) Σ_n KL(softmax(t_n / T) ‖ softmax(s_n / T)),

the KL divergence summed over the classes and averaged over the *batch* (not over batch × classes —
``reduction="mean"`` of ``torch.nn.functional.kl_div`` would divide by the number of classes too). The
``T²`` keeps the gradient of the soft term on the scale of the hard term when ``T`` changes (the soft
gradients scale as ``1/T²``). The total mixes it with the ordinary cross-entropy:
``L = α · L_soft + (1 − α) · CE(s, y)``.

Hint (feature) distillation (Romero et al. 2015, FitNets): ``‖adapter(f_s) − f_t‖²`` averaged over the
elements, the adapter a 1×1 convolution that maps the student's channels to the teacher's.

Example:
    >>> import torch
    >>> student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    >>> float(soft_target_loss(student, teacher, temperature=4.0))
    0.0
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.losses._reduction import as_compute_dtype

__all__ = ["DistillationLoss", "distillation_loss", "hint_loss", "soft_target_loss"]


def _check_logits(student: Tensor, teacher: Tensor) -> None:
    for name, value in (("student", student), ("teacher", teacher)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} logits must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() != 2:
            raise ValueError(f"{name} logits must be (N, classes), got shape {list(value.shape)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {list(student.shape)} vs {list(teacher.shape)}"
        )


def soft_target_loss(student: Tensor, teacher: Tensor, temperature: float = 4.0) -> Tensor:
    """``T² · mean_n KL(softmax(teacher/T) ‖ softmax(student/T))`` (module docstring).

    Args:
        student, teacher: logits ``(N, K)``; the teacher's are detached (no gradient flows into it).
        temperature: ``T > 0``.

    Returns:
        A scalar; 0.0 for an empty batch (still connected to ``student`` for ``backward``).
    """
    _check_logits(student, teacher)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student, teacher = (
        as_compute_dtype(student),
        as_compute_dtype(teacher.detach()).to(as_compute_dtype(student).dtype),
    )
    log_student = torch.log_softmax(student / temperature, dim=1)
    log_teacher = torch.log_softmax(teacher / temperature, dim=1)
    per_sample = (log_teacher.exp() * (log_teacher - log_student)).sum(1)
    if per_sample.numel() == 0:
        return student.sum() * 0.0
    return per_sample.mean() * temperature**2


def distillation_loss(
    student: Tensor, teacher: Tensor, targets: Tensor, *, temperature: float = 4.0, alpha: float = 0.9
) -> Tensor:
    """``α · soft_target_loss + (1 − α) · cross_entropy(student, targets)``.

    Args:
        targets: ``(N,)`` int64 class indices.
        alpha: weight of the soft term in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    hard = (
        nn.functional.cross_entropy(as_compute_dtype(student), targets)
        if len(targets)
        else student.sum() * 0.0
    )
    return alpha * soft_target_loss(student, teacher, temperature) + (1.0 - alpha) * hard


def hint_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Mean squared difference of (adapted) student features and detached teacher features, same shape."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"hint features differ in shape: student {list(student_features.shape)} vs teacher "
            f"{list(teacher_features.shape)} (use a 1x1 adapter to match channels)"
        )
    return nn.functional.mse_loss(
        as_compute_dtype(student_features), as_compute_dtype(teacher_features.detach())
    )


class DistillationLoss(nn.Module):
    """Module form of :func:`distillation_loss`: ``loss((student, teacher), targets)``."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.alpha = temperature, alpha

    def forward(self, logits: tuple[Tensor, Tensor], targets: Tensor) -> Tensor:
        student, teacher = logits
        return distillation_loss(student, teacher, targets, temperature=self.temperature, alpha=self.alpha)
