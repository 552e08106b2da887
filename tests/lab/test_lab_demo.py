"""`visionkit demo --quick` end to end: the run folder, metrics.json and the report's images."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from visionkit.cli import main
from visionkit.lab.report import referenced_images


def test_quick_demo_writes_a_complete_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        main,
        ["demo", "--quick", "--no-progress", "--num-boxes", "300", "--out", str(out)],
        terminal_width=160,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"retinanet", "faster_rcnn"}
    for model in metrics["models"].values():
        assert (
            set(model["coco"]) >= {"AP", "AP50", "AP75"}
            and 0 <= model["voc07"] <= 1
            and 0 <= model["voc12"] <= 1
        )
        # quick: 4 + 2 training images, batch 2, one epoch
        assert len(model["history"]) == model["steps"] == 3 and model["ms_per_image"] > 0
        assert [row["class"] for row in model["per_class"]] == ["circle", "square", "triangle"]
    assert [row["suppression"] for row in metrics["nms"]] == [
        "hard",
        "soft_linear",
        "soft_gaussian",
        "hard",
        "soft_gaussian",
    ]
    assert [row["setting"] for row in metrics["nms"][:3]] == ["IoU 0.5", "IoU 0.5", "σ 1"]
    for kind in ("linear", "gaussian"):
        gain = metrics["soft_nms_gain"][kind]
        assert gain["low"] <= gain["high"] and 0 <= gain["below_zero"] <= 1
    soft_verdicts = [v for v in metrics["verdicts"] if v["claim"].startswith("Soft-NMS")]
    assert len(soft_verdicts) == 2 and all("95% CI" in v["measured"] for v in soft_verdicts)
    two_stage = metrics["two_stage_gain"]  # §16 with its paired interval over the validation images
    retina_ap, faster_ap = (metrics["models"][k]["coco"]["AP"] for k in ("retinanet", "faster_rcnn"))
    assert two_stage["AP"] == faster_ap - retina_ap and two_stage["low"] <= two_stage["high"]
    (verdict,) = [v for v in metrics["verdicts"] if "(§16)" in v["claim"]]
    assert "95% CI" in verdict["measured"] and verdict["passed"] == (
        two_stage["AP"] >= -0.03 and two_stage["low"] >= -0.03
    )
    retina_all = metrics["anchors"][0]
    assert retina_all["anchors / image"] == 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)  # P3..P7 at 128 px
    assert retina_all["foreground"] + retina_all["background"] + retina_all["ignored"] == 3069
    sampled = metrics["anchors"][2]
    assert sampled["foreground"] + sampled["background"] <= 256
    page = (out / "report.html").read_text(encoding="utf-8")
    sources = referenced_images(page)
    assert len(sources) == 8 and all(
        (out / src).is_file() and (out / src).stat().st_size > 0 for src in sources
    )
    for key in ("retinanet", "faster_rcnn"):  # one run folder per detector, as train detect writes it
        for name in ("config.json", "label_map.json", "log.csv", "steps.csv", "model.pt", "metrics.json"):
            assert (out / key / name).is_file(), (key, name)
    for title in ("Validation accuracy", "One-stage vs two-stage", "NMS vs Soft-NMS", "Targets", "report:"):
        assert title in result.output
    # the run folders work with predict and eval detect right away
    weights = out / "retinanet" / "model.pt"
    result = CliRunner().invoke(
        main, ["eval", "detect", f"weights={weights}", "--json", str(tmp_path / "e.json")]
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["AP"] == metrics["models"]["retinanet"]["coco"]["AP"]  # same weights, images, code
