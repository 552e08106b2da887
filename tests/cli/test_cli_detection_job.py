"""The detection main job end to end at toy size: the report renders and every image it references exists."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from visionkit.cli.detection_job import JobSettings, render_table, run_detection_job
from visionkit.data.shapes import ShapesDataset
from visionkit.models import create_model


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (shared 2-core machine: oversubscribed OpenMP is 10× slower); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")
        self.tables += tag == "table"


@pytest.mark.slow
def test_job_writes_a_report_whose_images_exist(tmp_path: Path) -> None:
    overrides = (("width_multiplier", 0.35), ("fpn_channels", 16), ("head_convs", 1),
                 ("representation_size", 32), ("warmup_steps", 1))  # fmt: skip
    settings = JobSettings(num_train=8, num_val=4, num_crowded=4, image_size=64, epochs=1, batch_size=4,
                           recipe_overrides=overrides)  # fmt: skip
    summary = run_detection_job(tmp_path, settings, progress=False)
    parser = _Images()
    parser.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert parser.tables == 1 and len(parser.sources) == 6
    for source in parser.sources:
        assert (tmp_path / source).is_file() and (tmp_path / source).stat().st_size > 1000
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert set(saved["models"]) == set(settings.models)
    for entry in saved["models"].values():
        assert set(entry["crowded_nms"]) == {"hard", "soft_linear", "soft_gaussian"}
        assert entry["anchors"]["background_per_foreground"] > 1
        assert 0 <= entry["coco"]["AP"] <= 1 and entry["ms_per_image"] > 0
    assert render_table(summary).row_count == 2


def test_anchor_balance_counts_match_the_matcher() -> None:
    from visionkit.cli.detection_job import anchor_balance

    torch.manual_seed(0)
    model = create_model("retinanet_mobilenet_v2_fpn", num_classes=3, width_multiplier=0.35, fpn_channels=16,
                         head_convs=1, anchor_sizes=(16, 32, 64, 128, 256)).eval()  # fmt: skip
    dataset = ShapesDataset(2, seed=0)
    balance = anchor_balance(model, dataset, count=2)
    # 128 px: P3..P7 are 16², 8², 4², 2², 1² cells × 9 anchors
    assert balance["anchors_per_image"] == 9 * (256 + 64 + 16 + 4 + 1)
    assert 0 < balance["foreground_per_image"] < balance["background_per_image"]
