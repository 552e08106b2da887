"""``visionkit eval``: tables, JSON, PR-curve PNG and clear failures on bad files."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from visionkit.cli import main
from visionkit.metrics.detection.io import load_coco_ground_truth, load_coco_results
from visionkit.metrics.detection.voc import evaluate_voc_sets


def _files(tmp_path):
    rng = np.random.default_rng(0)
    gt = {
        "images": [{"id": i} for i in (3, 1, 2)],
        "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [],
    }
    results = []
    for image_id in (1, 2, 3):
        for _ in range(4):
            x, y, w, h = (*rng.random(2) * 100, *(rng.random(2) * 60 + 10))
            category = int(rng.choice([5, 9]))
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "score": float(rng.random()),
                    "bbox": [x + rng.normal(0, 3), y + rng.normal(0, 3), w, h],
                }
            )
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "score": float(rng.random()) / 2,
                    "bbox": list(rng.random(4) * 80 + 1),
                }
            )
    gt_path, det_path = tmp_path / "instances.json", tmp_path / "detections.json"
    gt_path.write_text(json.dumps(gt))
    det_path.write_text(json.dumps(results))
    return gt, results, str(gt_path), str(det_path)


def test_coco_table_json_and_plot_match_pycocotools(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, _, gt_path, det_path = _files(tmp_path)
    out, png = tmp_path / "out.json", tmp_path / "pr.png"
    run = CliRunner().invoke(
        main, ["eval", det_path, "--gt", gt_path, "--json", str(out), "--plot", str(png)]
    )
    assert run.exit_code == 0, run.output
    assert "AP50" in run.output and "dog" in run.output
    report = json.loads(out.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(det_path), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    np.testing.assert_allclose(list(report["stats"].values()), evaluator.stats, atol=1e-9)
    assert [row["name"] for row in report["per_class"]] == ["cat", "dog"]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100


@pytest.mark.parametrize(("metric", "interpolation"), [("voc07", "11point"), ("voc12", "all")])
def test_voc_metrics(tmp_path, metric, interpolation) -> None:
    _, _, gt_path, det_path = _files(tmp_path)
    out = tmp_path / "voc.json"
    run = CliRunner().invoke(
        main,
        [
            "eval",
            det_path,
            "--gt",
            gt_path,
            "--metric",
            metric,
            "--iou",
            "0.6",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "voc.png"),
        ],
    )
    assert run.exit_code == 0, run.output
    gt = load_coco_ground_truth(gt_path)
    expected = evaluate_voc_sets(
        gt, load_coco_results(det_path, gt), iou_threshold=0.6, interpolation=interpolation
    )
    assert json.loads(out.read_text())["mAP"] == pytest.approx(expected.mean_average_precision, abs=1e-12)
    assert "mAP@0.6" in run.output


def test_bad_files_exit_non_zero_with_a_clear_message(tmp_path) -> None:
    _, results, gt_path, det_path = _files(tmp_path)
    runner = CliRunner()
    run = runner.invoke(main, ["eval", str(tmp_path / "missing.json"), "--gt", gt_path])
    assert run.exit_code != 0 and "missing.json" in run.output and "does not exist" in run.output
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    run = runner.invoke(main, ["eval", str(broken), "--gt", gt_path])
    assert run.exit_code != 0 and "not valid JSON" in run.output
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([*results, {**results[0], "image_id": 42}]))
    run = runner.invoke(main, ["eval", str(unknown), "--gt", gt_path])
    assert run.exit_code != 0 and "image ids not in the ground truth: [42]" in run.output
    nan_scores = tmp_path / "nan.json"
    nan_scores.write_text(json.dumps([{**results[0], "score": float("nan")}]))
    run = runner.invoke(main, ["eval", str(nan_scores), "--gt", gt_path])
    assert run.exit_code != 0 and "non-finite score" in run.output
    not_coco = tmp_path / "not_coco.json"
    not_coco.write_text(json.dumps({"images": []}))
    run = runner.invoke(main, ["eval", det_path, "--gt", str(not_coco)])
    assert run.exit_code != 0 and "'images', 'annotations' and 'categories'" in run.output
    run = runner.invoke(main, ["eval", det_path, "--gt", gt_path, "--iou", "1.5"])
    assert run.exit_code != 0 and "--iou" in run.output
