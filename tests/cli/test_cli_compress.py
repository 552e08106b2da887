"""`visionkit compress METHOD weights=...`: run folder, report, reload, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.compress.run import load_compressed_classifier
from visionkit.engine.classify import load_classifier


@pytest.fixture(scope="module")
def weights(untrained_classifier: Path) -> Path:
    return untrained_classifier


FAST = ["finetune_epochs=0", "latency_repeats=1", "threads=1"]


@pytest.mark.parametrize(
    ("method", "keys"),
    [
        ("prune", ["ratio=0.5"]),
        ("prune", ["structured=false", "ratio=0.8"]),
        ("share", ["bits=4"]),
        ("lowrank", ["factorization=tucker2", "energy=0.8"]),
    ],
)
def test_compress_writes_model_and_report(
    weights: Path, tmp_path: Path, method: str, keys: list[str]
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["compress", method, f"weights={weights}", *keys, *FAST, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert rows["compressed"]["bytes_on_disk"] < rows["original"]["bytes_on_disk"]
    if method != "share" and keys[0] != "structured=false":
        assert rows["compressed"]["macs"] < rows["original"]["macs"]
    model = load_compressed_classifier(out / "model.pt")
    original, _ = load_classifier(weights)
    assert model(torch.zeros(2, 1, 8, 8)).shape == original(torch.zeros(2, 1, 8, 8)).shape
    assert f"{report['rows']['compressed']['test_accuracy']:.4g}" in result.output.replace(",", "")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["ratio=1.5"], "ratio=1.5"),
        (["ratio=0"], "ratio=0.0"),
        (["bits=12"], "bits=12"),
        (["colour=red"], "unknown key 'colour'"),
        ([], "weights"),
    ],
)
def test_bad_keys_are_usage_errors(weights: Path, keys: list[str], message: str, tmp_path: Path) -> None:
    given = keys if keys == [] else [f"weights={weights}", *keys]
    result = CliRunner().invoke(main, ["compress", "prune", *given, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_missing_weights_file_and_unknown_layer(weights: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", "share", f"weights={tmp_path / 'none.pt'}"])
    assert result.exit_code == 2 and "no such file" in result.output
    result = CliRunner().invoke(main, ["compress", "prune", f"weights={weights}", "layers=1.stem.9", *FAST,
                                       "--out", str(tmp_path / "y")])  # fmt: skip
    assert result.exit_code == 2 and "'1.stem.9'" in result.output


def test_tied_layer_without_its_partners_is_an_error_naming_it(weights: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", "prune", f"weights={weights}", "layers=1.stem.0", *FAST,
                                       "--out", str(tmp_path / "z")])  # fmt: skip
    assert result.exit_code == 1 and "layer '1.stem.0'" in result.output and "tied" in result.output


def test_truncated_compressed_file_is_a_clear_error(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    CliRunner().invoke(main, ["compress", "share", f"weights={weights}", *FAST, "--out", str(out)])
    data = (out / "model.pt").read_bytes()
    (out / "model.pt").write_bytes(data[: len(data) // 2])
    from visionkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"model\.pt"):
        load_compressed_classifier(out / "model.pt")


def test_train_classify_with_missing_teacher_names_the_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "classify", f"teacher={tmp_path / 't.pt'}", "epochs=1",
                                       "progress=false", "--out", str(tmp_path / "s")])  # fmt: skip
    assert result.exit_code == 1 and "t.pt" in result.output


def test_a_pruning_that_changes_the_output_shape_is_caught_before_saving(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (simulated) graph bug that also shrinks the classifier: the output check refuses it; no file."""
    import visionkit.compress.structured as structured

    rebuild = structured.rebuild_layers

    def buggy(model, graph, removed):
        shapes = rebuild(model, graph, removed)
        model[1].fc = torch.nn.Linear(model[1].fc.in_features, 9)
        return shapes

    monkeypatch.setattr(structured, "rebuild_layers", buggy)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["compress", "prune", f"weights={weights}", *FAST, "--out", str(out)])
    assert result.exit_code == 1 and "output shapes changed" in result.output, result.output
    assert not (out / "model.pt").exists()
