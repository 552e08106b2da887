"""Cascade R-CNN and RefineDet in the detection task: ``train detect`` trains them through the one loop,
their ``model.pt`` reloads and reproduces the run's metrics, and RefineDet's ablation switches reach the
builder (and are saved with the model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionkit.engine.detect import (
    DetectRecipe,
    build_datasets,
    evaluate_detector,
    load_detector,
    train_detector,
)
from visionkit.engine.detect.recipe import recipe_from_overrides
from visionkit.errors import ConfigError

TINY = dict(num_train=8, num_val=4, image_size=64, batch_size=4, warmup_steps=1, epochs=1, fpn_channels=16,
            threads=1, progress=False, tensorboard=False)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("cascade_rcnn_plain_fpn", {}),
        ("refinedet_plain", {"refine_anchors": False, "negative_filtering": False}),
    ],
)
def test_train_detect_trains_and_the_saved_model_reproduces_its_metrics(
    tmp_path: Path, model: str, options: dict
) -> None:
    recipe = DetectRecipe(model=model, **TINY, **options)
    metrics = train_detector(recipe, tmp_path / "run", log=lambda _: None)
    assert metrics["steps"] == 2
    detector, label_map = load_detector(tmp_path / "run" / "last.pt")
    for key, value in options.items():
        assert getattr(detector, key) is value
    again = evaluate_detector(detector, build_datasets(recipe).val, label_map.num_classes).metrics
    assert again["AP"] == metrics["AP"]


def test_the_ablation_switches_are_recipe_keys_of_refinedet_only() -> None:
    recipe = recipe_from_overrides(
        ["model=refinedet_plain", "refine_anchors=false", "negative_filtering=true"]
    )
    assert recipe.refine_anchors is False and recipe.negative_filtering is True
    with pytest.raises(ConfigError, match="refine_anchors=False: model 'cascade_rcnn_plain_fpn' has no such"):
        DetectRecipe(model="cascade_rcnn_plain_fpn", refine_anchors=False)
