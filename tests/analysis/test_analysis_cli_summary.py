"""``visionkit summary``: table and JSON output, bad arguments."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.cli.summary import parse_input_size


def test_json_reproduces_resnet50_macs() -> None:
    result = CliRunner().invoke(main, ["summary", "resnet50", "--input", "1x3x224x224", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"] == "resnet50" and data["input_size"] == [1, 3, 224, 224]
    assert data["total_params"] == 25_557_032 and data["total_macs"] == 4_089_184_256
    assert data["total_flops"] == 2 * data["total_macs"] and data["uncounted"] == []
    assert data["layers"][0]["name"] == "conv1" and data["layers"][0]["output_shape"] == [1, 64, 112, 112]


def test_table_output() -> None:
    result = CliRunner().invoke(
        main, ["summary", "mobilenet_v2", "--input", "1x3x224x224", "--max-rows", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "features.0.0" in result.output and "3,504,872" in result.output and "300,774,272" in result.output
    assert "more rows" in result.output and "uncounted modules/ops: none" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["nosuchnet"], "unknown model 'nosuchnet'"), (["resnet18", "--input", "1x3xax4"], "1x3x224x224")],
)
def test_bad_arguments(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["summary", *arguments])
    assert result.exit_code != 0 and message in result.output


def test_parse_input_size() -> None:
    assert parse_input_size("2x3x64x48") == (2, 3, 64, 48)
    with pytest.raises(Exception, match="positive"):
        parse_input_size("1x0x4x4")
