"""``visionkit info``: versions, threads, devices and the NMS backend, as a table or JSON."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from visionkit import __version__
from visionkit.cli import main
from visionkit.ops._native_nms import backend_name


def test_info_json_reports_this_installation() -> None:
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["visionkit"] == __version__ and data["torch"] == torch.__version__
    assert data["threads"] == torch.get_num_threads()
    assert data["cuda"] == torch.cuda.is_available()
    assert data["default_device"] in ("cpu", "cuda", "mps")
    assert data["nms_backend"] == backend_name()


def test_info_table_names_the_nms_backend() -> None:
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "nms_backend" in result.output and "torch" in result.output
