"""`visionkit demo --nms-only` through click's CliRunner: the §8 table reports what the ops really return
(the full demo is tested in tests/lab/test_lab_demo.py)."""

from __future__ import annotations

import re

from click.testing import CliRunner

from visionkit.cli import main
from visionkit.lab.nms_scene import make_crowded_boxes
from visionkit.ops import nms, soft_nms


def test_demo_prints_table_with_real_counts():
    result = CliRunner().invoke(
        main, ["demo", "--nms-only", "--num-boxes", "1200", "--seed", "3"], terminal_width=120
    )
    assert result.exit_code == 0, result.output
    assert "1200 boxes around 24 objects" in result.output
    boxes, scores, objects = make_crowded_boxes(1200, seed=3)
    assert objects.shape == (24, 4)
    expected = {
        "hard NMS": nms(boxes, scores, 0.5).numel(),
        "soft-NMS linear": soft_nms(boxes, scores, "linear", iou_threshold=0.3)[0].numel(),
        "soft-NMS gaussian": soft_nms(boxes, scores, "gaussian", sigma=0.5)[0].numel(),
    }
    for name, kept in expected.items():
        row = next(line for line in result.output.splitlines() if name in line)
        numbers = re.findall(r"[│|]\s*(\d+)\s*", row)
        assert int(numbers[0]) == kept, row
        assert re.search(r"\d+/24", row)
    # soft-NMS keeps more boxes than hard NMS on a crowded scene: it decays instead of deleting
    assert expected["soft-NMS linear"] > expected["hard NMS"]


def test_demo_rejects_bad_options():
    result = CliRunner().invoke(main, ["demo", "--nms-only", "--iou-threshold", "1.5"])
    assert result.exit_code != 0
    assert "--iou-threshold" in result.output


def test_generator_is_deterministic():
    first, second = make_crowded_boxes(300, seed=1), make_crowded_boxes(300, seed=1)
    assert all(a.equal(b) for a, b in zip(first, second, strict=True))
    assert not make_crowded_boxes(300, seed=2)[0].equal(first[0])
