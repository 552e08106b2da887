"""cfg= for every recipe (classify, detect, segment, compress, export): file keys cast and checked like
command-line keys, unknown keys and bad values named with the file, the command line wins, a saved
config.json round trips — and every command taking a recipe refuses a bad file before any work (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.compress.run import CompressRecipe
from visionkit.deploy.export import ExportRecipe
from visionkit.engine.classify import ClassifyRecipe
from visionkit.engine.config import apply_overrides, save_recipe
from visionkit.engine.detect import DetectRecipe
from visionkit.engine.segment import SegmentRecipe
from visionkit.errors import ConfigError

#: a recipe, a key of it, the file's value (as YAML text), the cast value, a command-line value that wins
RECIPES = [
    (ClassifyRecipe(), "epochs", "'4'", 4, 6),
    (DetectRecipe(), "nms_method", "soft_linear", "soft_linear", "soft_gaussian"),
    (SegmentRecipe(), "epochs", "3", 3, 5),
    (CompressRecipe(), "ratio", "'0.25'", 0.25, 0.75),
    (ExportRecipe(weights="runs/digits/model.pt"), "calib", "minmax", "minmax", "percentile"),
]


@pytest.mark.parametrize(("base", "key", "text", "value", "winner"), RECIPES, ids=lambda v: type(v).__name__)
def test_cfg_files_work_for_every_recipe(
    base: object, key: str, text: str, value: object, winner: object, tmp_path: Path
) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text(f"{key}: {text}\n")
    assert getattr(apply_overrides(base, [f"cfg={config}"]), key) == value
    assert getattr(apply_overrides(base, [f"{key}={winner}", f"cfg={config}"]), key) == winner
    changed = apply_overrides(base, [f"cfg={config}"])
    saved = save_recipe(changed, tmp_path / "run" / "config.json")
    assert apply_overrides(base, [f"cfg={saved}"]) == changed
    config.write_text(f"{key}: {text}\nno_such_key: 1\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml'?: unknown key 'no_such_key'"):
        apply_overrides(base, [f"cfg={config}"])


def test_a_bad_value_in_a_cfg_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text("nms_method: softer\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml'?: nms_method='softer': expected one of"):
        apply_overrides(DetectRecipe(), [f"cfg={config}"])


@pytest.mark.parametrize(
    "command",
    [
        ["train", "classify"],
        ["train", "detect"],
        ["train", "segment"],
        ["compress", "prune"],
        ["compress", "share"],
        ["compress", "lowrank"],
    ],
)
def test_every_recipe_command_refuses_a_bad_cfg_file_before_work(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a default run folder would land here
    config = tmp_path / "bad.yaml"
    config.write_text("no_such_key: 1\n")
    result = CliRunner().invoke(main, [*command, f"cfg={config}"])
    assert result.exit_code == 2, result.output
    assert "bad.yaml" in result.output and "no_such_key" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing written
