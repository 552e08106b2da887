"""Recipes + key=value overrides: casting per field type, unknown keys rejected with the valid list."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Literal

import pytest

from visionkit.engine.config import ConfigError, apply_overrides, describe_recipe, load_recipe, save_recipe


@dataclass(frozen=True)
class Recipe:
    model: str = "resnet18"
    epochs: int = 10
    lr: float = 0.1
    amp: bool = False
    schedule: Literal["cosine", "step"] = "cosine"
    clip_norm: float | None = None
    milestones: tuple[int, ...] = (3, 6)


def test_overrides_cast_to_field_types() -> None:
    recipe = apply_overrides(
        Recipe(),
        [
            "model=vgg11",
            "epochs=3",
            "lr=1e-3",
            "amp=true",
            "schedule=step",
            "clip_norm=2.5",
            "milestones=1,4,9",
        ],
    )
    assert recipe == Recipe("vgg11", 3, 1e-3, True, "step", 2.5, (1, 4, 9))
    assert apply_overrides(recipe, ["clip_norm=none", "amp=0", "milestones="]).clip_norm is None
    assert apply_overrides(recipe, ["milestones="]).milestones == ()
    assert Recipe().epochs == 10  # the original is untouched
    with pytest.raises(FrozenInstanceError):
        recipe.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "epoch=3",
            "unknown key 'epoch'; valid keys: model, epochs, lr, amp, schedule, clip_norm, milestones",
        ),
        ("epochs=3.5", "epochs='3.5': expected int"),
        ("lr=fast", "lr='fast': expected float"),
        ("amp=maybe", "amp='maybe': expected a boolean"),
        ("schedule=linear", "schedule='linear': expected one of \\['cosine', 'step'\\]"),
        ("clip_norm=big", "clip_norm='big': expected float"),
        ("milestones=1,x", "milestones='x': expected int"),
        ("epochs", "must look like key=value"),
    ],
)
def test_bad_overrides_are_explained(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Recipe(), [override])


def test_save_load_round_trip_and_describe(tmp_path: Path) -> None:
    recipe = apply_overrides(Recipe(), ["milestones=2,5", "clip_norm=1.0"])
    path = save_recipe(recipe, tmp_path / "config.json")
    assert load_recipe(Recipe, path) == recipe
    path.write_text('{"epochs": 1, "colour": "red"}')
    with pytest.raises(ConfigError, match="colour"):
        load_recipe(Recipe, path)
    rows = describe_recipe(Recipe)
    assert rows[1] == ("epochs", "int", "10") and rows[0][0] == "model"
    with pytest.raises(TypeError, match="dataclass instance"):
        apply_overrides(Recipe, ["epochs=1"])
