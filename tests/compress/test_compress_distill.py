"""Distillation: the Distiller's hooks and 1×1 adapter, the named loss terms against plain references, and
``visionkit train classify teacher=...`` through the classify trainer (one loop), with its bad input.

The soft-target loss itself is checked against a 50-digit evaluation of its formula in
``tests/losses/test_losses_distill.py``; here the criterion is checked to *be* those functions (same
calls, same inputs → ``torch.equal``) and the hint term against an exact ``Fraction`` mean.
"""

from __future__ import annotations

import doctest
import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tests.tolerances import assert_fraction_within, gamma
from torch import nn

from visionkit.cli import main
from visionkit.compress.distill import DistillationCriterion, Distiller, distill_classifier, parse_hint
from visionkit.engine.classify import (
    ClassifyRecipe,
    build_model,
    load_classifier,
    save_classifier,
    train_classifier,
)
from visionkit.engine.config import recipe_to_dict
from visionkit.errors import CheckpointError, ConfigError
from visionkit.losses.distill import soft_target_loss


def _student() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def _teacher() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 5)
    )


def test_hint_outputs_are_the_hooked_layers_through_the_adapter() -> None:
    torch.manual_seed(0)
    student, teacher = _student(), _teacher()
    distiller = Distiller(student, teacher, hint=("1", "2"), example=torch.zeros(1, 1, 8, 8))
    assert isinstance(distiller.adapter, nn.Conv2d) and distiller.adapter.kernel_size == (1, 1)
    assert (distiller.adapter.in_channels, distiller.adapter.out_channels) == (4, 6)
    x = torch.randn(3, 1, 8, 8)
    logits, teacher_logits, ours, theirs = distiller.train()(x)
    with torch.no_grad():
        assert torch.equal(teacher_logits, teacher(x)) and torch.equal(theirs, teacher[:3](x))
        assert torch.equal(ours, distiller.adapter(student[:2](x)))
    assert torch.equal(logits, student(x))
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    names = set(distiller.state_dict())
    assert not any(name.startswith(("_teacher", "teacher")) for name in names)
    assert {"adapter.weight", "adapter.bias"} <= names


def test_training_moves_student_and_adapter_not_the_teacher() -> None:
    torch.manual_seed(1)
    student, teacher = _student(), _teacher()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distiller(student, teacher, hint=("1", "2"), example=torch.zeros(1, 1, 8, 8))
    optimizer = torch.optim.SGD(distiller.parameters(), lr=0.1)
    criterion = DistillationCriterion(2.0, 0.5, 1.0)
    for _ in range(3):
        terms = criterion(distiller.train()(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())  # BN stats too
    assert distiller.adapter is not None and distiller.adapter.weight.grad is not None
    assert student[0].weight.grad is not None and student[0].weight.grad.abs().sum() > 0


def test_larger_teacher_map_is_average_pooled_smaller_one_is_an_error() -> None:
    student = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(64, 5))
    teacher = _teacher()
    distiller = Distiller(student, teacher, hint=("0", "0"), example=torch.zeros(1, 1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    _, _, ours, theirs = distiller.train()(x)
    with torch.no_grad():
        assert ours.shape == (2, 6, 4, 4) and torch.equal(theirs, nn.functional.avg_pool2d(teacher[0](x), 2))
    with pytest.raises(ConfigError, match=r"teacher layer '0'.*student layer '0'"):
        Distiller(teacher, student, hint=("0", "0"), example=torch.zeros(1, 1, 8, 8))


def test_unknown_or_flat_hint_layer_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"student has no layer 'body\.9'"):
        Distiller(_student(), _teacher(), hint=("body.9", "2"), example=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="teacher has no layer '7'"):
        Distiller(_student(), _teacher(), hint=("1", "7"), example=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"student layer '2' must output an \(N, C, H, W\)"):
        Distiller(_student(), _teacher(), hint=("2", "2"), example=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="hint='a:b:c'"):
        parse_hint("a:b:c")
    assert parse_hint("") is None


def test_criterion_terms_are_the_loss_functions_and_the_hint_mean() -> None:
    """soft/hard: the same calls on the same inputs (exact). hint: ``β·mean((a − b)²)`` against the exact
    Fraction mean; each term is two rounded operations (subtract, square) on exact inputs, the mean of
    ``n`` terms adds ``γ(n)`` and the weight one more rounding: within ``γ(n + 3)`` of the exact value
    relative (all terms are non-negative)."""
    generator = torch.Generator().manual_seed(2)
    student, teacher = (torch.randn(6, 5, generator=generator, dtype=torch.float64) * 3 for _ in range(2))
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    ours, theirs = (torch.randn(6, 3, 4, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    terms = DistillationCriterion(3.0, 0.7, 0.75)((student, teacher, ours, theirs), targets)
    assert torch.equal(terms["soft"], 0.7 * soft_target_loss(student, teacher, 3.0))
    assert torch.equal(terms["hard"], (1.0 - 0.7) * nn.functional.cross_entropy(student, targets))
    pairs = zip(ours.flatten().tolist(), theirs.flatten().tolist(), strict=True)
    exact = Fraction(3, 4) * sum((Fraction(a) - Fraction(b)) ** 2 for a, b in pairs) / ours.numel()
    assert_fraction_within(
        float(terms["hint"]), exact, gamma(ours.numel() + 3, torch.float64) * exact, "hint"
    )
    assert set(DistillationCriterion()((student, teacher), targets)) == {"soft", "hard"}
    with pytest.raises(ValueError, match="hint_weight"):
        DistillationCriterion(hint_weight=-1.0)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    recipe = ClassifyRecipe()
    return save_classifier(build_model(recipe, 10), recipe, tmp_path_factory.mktemp("teacher") / "model.pt")


FAST = ["epochs=1", "threads=1", "progress=false"]


def test_alpha_zero_distillation_trains_exactly_as_the_student_alone(
    teacher_file: Path, tmp_path: Path
) -> None:
    """With ``alpha=0`` the loss is ``0·soft + 1·CE`` = CE exactly: the same trainer must give the same
    weights bit for bit — the distillation goes through the classify trainer, not a loop of its own."""
    alone = ClassifyRecipe(epochs=1, threads=1, progress=False)
    train_classifier(alone, tmp_path / "alone")
    distilled = ClassifyRecipe(epochs=1, threads=1, progress=False, teacher=str(teacher_file), alpha=0.0)
    distill_classifier(distilled, tmp_path / "distilled")
    a, _ = load_classifier(tmp_path / "alone" / "model.pt")
    b, _ = load_classifier(tmp_path / "distilled" / "model.pt")
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_tiny_student_parameter_count_by_hand() -> None:
    """stem 1·4·9 + BN 8; blocks 4→4 (2·144 + 2·8), 4→8/2 (288 + 576 + 2·16 + 1×1 4·8 + 16),
    8→16/2 (1152 + 2304 + 2·32 + 8·16 + 32); fc 16·10 + 10."""
    from visionkit.models.small import resnet_tiny_digits

    by_hand = (
        (36 + 8) + (2 * 144 + 2 * 8) + (288 + 576 + 2 * 16 + 32 + 16) + (1152 + 2304 + 2 * 32 + 128 + 32)
    )
    assert sum(p.numel() for p in resnet_tiny_digits().parameters()) == by_hand + 170 == 5142


def test_train_classify_with_teacher_and_hint_saves_the_student_alone(
    teacher_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "student"
    result = CliRunner().invoke(main, ["train", "classify", f"teacher={teacher_file}", "alpha=0.5",
                                       "model=resnet_tiny_digits", "temperature=2", "hint_weight=0.5",
                                       "hint=1.stages.1:1.stages.1", *FAST, "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 2 and "train_loss" in rows[0].split(",")  # one epoch of the classify trainer
    model, recipe = load_classifier(out / "model.pt")  # the student alone: no adapter, no teacher
    assert recipe.model == "resnet_tiny_digits" and model[1].fc.in_features == 16  # adapter was 8 -> 32
    assert recipe.teacher == str(teacher_file) and recipe.hint == "1.stages.1:1.stages.1"
    assert json.loads((out / "metrics.json").read_text())["parameters"] == sum(
        p.numel() for p in model.parameters()
    )


def test_bad_teacher_files_and_keys_are_errors_naming_them(teacher_file: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path, message in ((tmp_path / "none.pt", "no such file"), (garbage, "not a classify model.pt")):
        result = CliRunner().invoke(main, ["train", "classify", f"teacher={path}", *FAST,
                                           "--out", str(tmp_path / "s")])  # fmt: skip
        assert result.exit_code == 1 and f"teacher={str(path)!r}" in result.output, result.output
        assert message in result.output and "Traceback" not in result.output
    three = tmp_path / "three.pt"
    recipe = ClassifyRecipe()
    torch.save({"task": "classify", "recipe": recipe_to_dict(recipe), "num_classes": 3,
                "state_dict": build_model(recipe, 3).state_dict()}, three)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"three\.pt.*3 classes, the student has 10"):
        distill_classifier(ClassifyRecipe(teacher=str(three), **{"epochs": 1}), tmp_path / "t")
    result = CliRunner().invoke(main, ["train", "classify", f"teacher={teacher_file}", "hint=1.nope:1.stem",
                                       *FAST, "--out", str(tmp_path / "u")])  # fmt: skip
    assert result.exit_code != 0 and "'1.nope'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["train", "classify", "hint=1.stem:1.stem", *FAST])
    assert result.exit_code == 2 and "hint=" in result.output and "teacher" in result.output
    with pytest.raises(ConfigError, match="teacher="):
        train_classifier(ClassifyRecipe(teacher=str(teacher_file), epochs=1), tmp_path / "v")


def test_docstring_examples_run() -> None:
    import visionkit.compress.distill as module

    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
