"""Knowledge distillation of a classifier (handbook §27; Hinton, Vinyals & Dean 2015; Romero et al. 2015).

A :class:`Distiller` wraps a student and a frozen teacher. In training mode it returns everything the
loss needs — the student's logits ``(N, K)``, the teacher's ``(N, K)`` and, with a hint, the student's
hooked feature map passed through a 1×1 convolution *adapter* ``(N, C_t, H, W)`` and the teacher's hooked
map ``(N, C_t, H, W)``; in eval mode it returns the student's logits alone, so evaluation code does not
know it is there. The teacher is not a submodule: it is in neither the state dict nor the optimizer, and
``Distiller.train()`` leaves it in eval mode (its BatchNorm statistics stay fixed). The adapter is a
submodule: it is trained with the student and dropped afterwards.

:class:`DistillationCriterion` is the loss on those outputs, returned as named terms so the training log
shows each: ``soft = α · T² · mean_n KL(softmax(t/T) ‖ softmax(s/T))``, ``hard = (1 − α) · CE(s, y)``
(:mod:`visionkit.losses.distill`) and ``hint = β · mean((adapter(f_s) − f_t)²)``.

:func:`distill_classifier` is what ``visionkit train classify teacher=RUN/model.pt alpha=0.9
temperature=4 [hint=S:T hint_weight=1]`` runs: it loads the teacher and hands the :class:`Distiller` and
the criterion to :func:`visionkit.engine.classify.train_classifier` — the task's one training loop.

Example:
    >>> import torch
    >>> from torch import nn
    >>> student = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    >>> teacher = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    >>> distiller = Distiller(student, teacher, hint=("0", "0"), example=torch.zeros(1, 1, 8, 8))
    >>> outputs = distiller.train()(torch.randn(2, 1, 8, 8))
    >>> [tuple(t.shape) for t in outputs]
    [(2, 10), (2, 10), (2, 8, 8, 8), (2, 8, 8, 8)]
    >>> sorted(DistillationCriterion(4.0, 0.9, 1.0)(outputs, torch.tensor([3, 7])))
    ['hard', 'hint', 'soft']
    >>> tuple(distiller.eval()(torch.randn(2, 1, 8, 8)).shape)
    (2, 10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.engine.classify import ClassifyRecipe, load_classifier, train_classifier
from visionkit.errors import CheckpointError, ConfigError
from visionkit.losses.distill import hint_loss, soft_target_loss

__all__ = ["DistillationCriterion", "Distiller", "FeatureHook", "distill_classifier", "parse_hint"]


class FeatureHook:
    """Keeps the output of the submodule ``name`` of ``model`` from its latest forward (a forward hook).

    Args:
        model: the model holding the layer.
        name: qualified module name, as ``model.get_submodule(name)`` takes it.
        role: ``"student"`` or ``"teacher"``, for error messages.

    Raises:
        ConfigError: no submodule ``name`` (names the layer and a few that exist).
    """

    def __init__(self, model: nn.Module, name: str, role: str = "model") -> None:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            known = [n for n, _ in model.named_modules() if n][:12]
            raise ConfigError(
                f"hint: the {role} has no layer {name!r}; some of its layers: {known}"
            ) from None
        self.name, self.role, self.features = name, role, None
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.features = output

    def take(self) -> Tensor:
        """The kept ``(N, C, H, W)`` output (cleared); an error if the layer did not run or is not 4-D."""
        features, self.features = self.features, None
        if not isinstance(features, Tensor) or features.dim() != 4:
            got = type(features).__name__ if not isinstance(features, Tensor) else list(features.shape)
            raise ConfigError(
                f"hint: {self.role} layer {self.name!r} must output an (N, C, H, W) tensor, got {got}"
            )
        return features

    def remove(self) -> None:
        self._handle.remove()


def parse_hint(hint: str) -> tuple[str, str] | None:
    """``"STUDENT_LAYER:TEACHER_LAYER"`` → ``(student_layer, teacher_layer)``; ``""`` → ``None``.

    >>> parse_hint("1.stages.1:1.layer2")
    ('1.stages.1', '1.layer2')
    """
    if not hint:
        return None
    parts = [part.strip() for part in hint.split(":")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"hint={hint!r}: expected STUDENT_LAYER:TEACHER_LAYER")
    return parts[0], parts[1]


class Distiller(nn.Module):
    """A student trained against a frozen teacher (module docstring).

    Args:
        student: the model being trained, ``(N, ...) -> (N, K)``.
        teacher: a trained model with the same input and ``K``; frozen and kept in eval mode.
        hint: ``(student_layer, teacher_layer)`` for a FitNets hint, or ``None``.
        example: an input for one probing forward (needed with ``hint``: it gives the channel counts of
            the 1×1 adapter and checks the spatial sizes).

    Raises:
        ConfigError: a hint layer does not exist, is not 4-D, or the teacher's map is smaller than the
            student's (a larger one is average-pooled to the student's size).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        hint: tuple[str, str] | None = None,
        example: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self._teacher = [teacher.eval().requires_grad_(False)]  # a list: not a submodule
        self.adapter: nn.Module | None = None
        self._hooks: tuple[FeatureHook, FeatureHook] | None = None
        if hint is not None:
            if example is None:
                raise ValueError("Distiller: a hint needs an example input to size its adapter")
            self._hooks = (FeatureHook(student, hint[0], "student"), FeatureHook(teacher, hint[1], "teacher"))
            with torch.no_grad():
                was_training = student.training
                student.eval()
                student(example), teacher(example)
                student.train(was_training)
                ours, theirs = (hook.take() for hook in self._hooks)
            if theirs.shape[-2] < ours.shape[-2] or theirs.shape[-1] < ours.shape[-1]:
                raise ConfigError(
                    f"hint: teacher layer {hint[1]!r} gives a {list(theirs.shape[-2:])} map, smaller than "
                    f"student layer {hint[0]!r}'s {list(ours.shape[-2:])}; choose an earlier teacher layer"
                )
            self.adapter = nn.Conv2d(ours.shape[1], theirs.shape[1], 1).to(ours.device, ours.dtype)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def forward(self, images: Tensor) -> Any:
        logits = self.student(images)
        if not self.training:
            if self._hooks is not None:
                self._hooks[0].features = None
            return logits
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        if self._hooks is None or self.adapter is None:
            return logits, teacher_logits
        ours, theirs = (hook.take() for hook in self._hooks)
        if theirs.shape[-2:] != ours.shape[-2:]:
            theirs = nn.functional.adaptive_avg_pool2d(theirs, ours.shape[-2:])
        return logits, teacher_logits, self.adapter(ours), theirs

    def remove_hooks(self) -> None:
        """Detach the feature hooks from the student and the teacher."""
        for hook in self._hooks or ():
            hook.remove()
        self._hooks = None


class DistillationCriterion(nn.Module):
    """Named loss terms on a :class:`Distiller`'s training outputs (module docstring).

    Args:
        temperature: ``T > 0``.
        alpha: weight of the soft term in [0, 1] (``1 − alpha`` for cross-entropy).
        hint_weight: ``β >= 0``, used when the outputs carry hint features.

    Returns (forward):
        ``{"soft", "hard"[, "hint"]}`` scalars whose sum is the loss.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, hint_weight: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not hint_weight >= 0:
            raise ValueError(f"hint_weight must be >= 0, got {hint_weight}")
        self.temperature, self.alpha, self.hint_weight = temperature, alpha, hint_weight

    def forward(self, outputs: tuple[Tensor, ...], targets: Tensor) -> dict[str, Tensor]:
        student, teacher = outputs[0], outputs[1]
        hard = nn.functional.cross_entropy(student, targets) if len(targets) else student.sum() * 0.0
        terms = {
            "soft": self.alpha * soft_target_loss(student, teacher, self.temperature),
            "hard": (1.0 - self.alpha) * hard,
        }
        if len(outputs) == 4:
            terms["hint"] = self.hint_weight * hint_loss(outputs[2], outputs[3])
        return terms


def _load_teacher(path: str, num_classes: int) -> nn.Module:
    if not Path(path).is_file():
        raise CheckpointError(f"teacher={path!r}: no such file (a classify run's model.pt)")
    try:
        teacher, _ = load_classifier(path)
    except CheckpointError as error:
        raise CheckpointError(f"teacher={path!r}: {error}") from error
    with torch.no_grad():
        outputs = teacher(torch.zeros(1, 1, 8, 8)).shape[-1]
    if outputs != num_classes:
        raise CheckpointError(f"teacher={path!r}: {outputs} classes, the student has {num_classes}")
    return teacher


def distill_classifier(
    recipe: ClassifyRecipe, run_dir: str | Path, *, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train ``recipe.model`` as a student of ``recipe.teacher`` with the classify task's trainer.

    Soft targets at ``recipe.temperature`` weighted by ``recipe.alpha``, and with ``recipe.hint`` a hint
    term weighted by ``recipe.hint_weight``. The run folder is the ordinary classify one; its ``model.pt``
    holds the student alone.

    Raises:
        ConfigError: no teacher given, or a bad hint layer.
        CheckpointError: the teacher file is missing, not a classify model.pt, or has another class count
            (each names the file).
    """
    if not recipe.teacher:
        raise ConfigError("teacher: give the trained classifier to distil from as teacher=RUN/model.pt")
    from visionkit.data.digits import Digits

    teacher = _load_teacher(recipe.teacher, len(Digits.classes))
    hint = parse_hint(recipe.hint)

    made: list[Distiller] = []

    def wrap(student: nn.Module, device: torch.device) -> tuple[nn.Module, DistillationCriterion]:
        made.append(Distiller(student, teacher, hint=hint, example=torch.zeros(2, 1, 8, 8)))
        teacher.to(device)
        criterion = DistillationCriterion(recipe.temperature, recipe.alpha, recipe.hint_weight)
        return made[-1].to(device), criterion

    try:
        return train_classifier(recipe, run_dir, resume=resume, wrap_student=wrap)
    finally:
        for distiller in made:
            distiller.remove_hooks()
