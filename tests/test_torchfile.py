"""visionkit.torchfile: every model loader, and the training checkpoint reader, reads a file the same way,
and a corrupt or foreign file — short junk (torch's unpickler then raises ``struct.error``), an empty file,
a truncated zip, a pickle of a class — ends in one CheckpointError naming the file, on one line, never a
traceback of torch's internals."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from visionkit.errors import CheckpointError
from visionkit.torchfile import UnreadableFileError, load_weights_only


class _Foreign:  # a class the weights-only unpickler refuses
    pass


def _files(folder: Path) -> list[Path]:
    torch.save({"w": torch.ones(300)}, folder / "whole.pt")
    data = (folder / "whole.pt").read_bytes()
    contents = {
        "junk.pt": b"junk",
        "empty.pt": b"",
        "truncated.pt": data[: len(data) // 2],
        "foreign.pt": pickle.dumps(_Foreign()),
    }
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in contents]


def test_every_failure_of_the_load_is_one_unreadable_file_error(tmp_path: Path) -> None:
    for path in _files(tmp_path):
        with pytest.raises(UnreadableFileError) as caught:
            load_weights_only(path)
        assert str(caught.value) and "\n" not in str(caught.value), path.name
    assert torch.equal(load_weights_only(tmp_path / "whole.pt")["w"], torch.ones(300))


def _loaders() -> list[tuple[str, Callable[[Path], object]]]:
    from visionkit.deploy.export import load_run_model
    from visionkit.engine.checkpoint import load_checkpoint
    from visionkit.engine.classify import load_classifier
    from visionkit.engine.detect.model import load_detector
    from visionkit.engine.segment.model import load_segmenter
    from visionkit.models import create_model
    from visionkit.models.backbones.weights import load_backbone_weights

    return [
        ("detector", load_detector),
        ("segmenter", load_segmenter),
        ("classifier", load_classifier),
        ("export", load_run_model),
        ("training checkpoint", load_checkpoint),
        ("backbone", lambda path: load_backbone_weights(create_model("resnet18", num_classes=10), path)),
    ]


@pytest.mark.parametrize("loader", _loaders(), ids=lambda item: item[0])
def test_loaders_name_the_corrupt_file(loader, tmp_path: Path) -> None:
    _, load = loader
    for path in _files(tmp_path):
        with pytest.raises(CheckpointError, match=path.name) as caught:
            load(path)
        assert "\n" not in str(caught.value), (path.name, str(caught.value))
