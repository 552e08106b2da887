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


def _bench():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cascade_refinedet.py"
    spec = importlib.util.spec_from_file_location("bench_cascade_refinedet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ablation_bench_scores_every_run_on_the_same_draws_as_the_pairwise_bootstrap() -> None:
    """``paired_draws`` (all runs on one set of draws) gives exactly :func:`bootstrap_ap_gain`'s interval."""
    import numpy as np
    import torch

    from visionkit.data.shapes import ShapesDataset
    from visionkit.lab.demo import bootstrap_ap_gain

    dataset = ShapesDataset(6, seed=1)
    targets = [{k: v for k, v in dataset[i][1].items() if k != "image_id"} for i in range(len(dataset))]
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
               for t in targets]  # fmt: skip
    missing = [{k: v[1:] for k, v in p.items()} for p in perfect]
    draws = _bench().paired_draws({"perfect": perfect, "missing": missing}, targets, resamples=25)
    for metric in ("AP", "AP75"):
        expected = bootstrap_ap_gain(missing, perfect, dataset, 25, metric=metric)
        gain = draws["perfect"][metric] - draws["missing"][metric]
        low, high = np.percentile(gain, [2.5, 97.5])
        assert (low, high) == (expected["low"], expected["high"]) and low > 0
