"""Checkpoint files: atomic writes, clear errors naming the file, fallback to the previous good file,
RNG capture/restore, and the refusal to write non-finite weights."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from visionkit.engine import checkpoint as C
from visionkit.engine.hooks import CheckpointHook
from visionkit.engine.trainer import Trainer


def test_round_trip(tmp_path: Path) -> None:
    state = {"model": nn.Linear(3, 2).state_dict(), "step": 7, "rng": C.capture_rng_state()}
    path = C.save_checkpoint(state, tmp_path / "sub" / "checkpoint_00000007.pt")
    loaded = C.load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["format_version"] == C.FORMAT_VERSION
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())


def test_rng_state_restores_python_numpy_torch() -> None:
    state = C.capture_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    C.restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint_00000001.pt"
    C.save_checkpoint({"step": 1}, path)
    original = path.read_bytes()

    def crash(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(C.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "version", "not_dict", "missing"])
def test_bad_file_error_names_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "checkpoint_00000003.pt"
    C.save_checkpoint({"model": nn.Linear(8, 8).state_dict()}, path)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "version":
        torch.save({"format_version": 999}, path)
    elif damage == "not_dict":
        torch.save([1, 2, 3], path)
    else:
        path.unlink()
    with pytest.raises(C.CheckpointError, match=str(path)):
        C.load_checkpoint(path)


def test_latest_falls_back_to_previous_good_file(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        C.save_checkpoint({"step": step}, C.checkpoint_path(tmp_path, step))
    newest = C.checkpoint_path(tmp_path, 3)
    newest.write_bytes(newest.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match=newest.name):
        path, state = C.load_latest_checkpoint(tmp_path)
    assert path == C.checkpoint_path(tmp_path, 2) and state["step"] == 2


def test_latest_with_nothing_usable_lists_failures(tmp_path: Path) -> None:
    with pytest.raises(C.CheckpointError, match="no checkpoint_"):
        C.load_latest_checkpoint(tmp_path)
    bad = C.checkpoint_path(tmp_path, 5)
    bad.write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(C.CheckpointError, match=bad.name):
            C.load_latest_checkpoint(tmp_path)


def test_prune_keeps_newest(tmp_path: Path) -> None:
    for step in (3, 10, 7, 1):
        C.save_checkpoint({"step": step}, C.checkpoint_path(tmp_path, step))
    C.prune_checkpoints(tmp_path, keep=2)
    assert [int(p.stem.split("_")[1]) for p in C.list_checkpoints(tmp_path)] == [10, 7]


def test_hook_refuses_non_finite_weights(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    hook = CheckpointHook(tmp_path)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), [], hooks=[hook])
    hook.save()
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="bias"):
        hook.save()
    assert len(C.list_checkpoints(tmp_path)) == 1


def test_seed_everything_is_reproducible() -> None:
    C.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(2))
    C.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
