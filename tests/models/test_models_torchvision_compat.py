"""torchvision compatibility: identical state-dict keys and shapes (so a torchvision checkpoint loads
with ``strict=True``) and identical outputs with the same weights (goldens made by
tests/data/make_torchvision_state_dict_golden.py in the reference environment)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from visionkit.models import create_model

DATA = Path(__file__).resolve().parents[1] / "data"
STATE_DICTS = json.loads((DATA / "torchvision_state_dict_golden.json").read_text())
FORWARD = json.loads((DATA / "torchvision_forward_golden.json").read_text())

_spec = importlib.util.spec_from_file_location("make_golden", DATA / "make_torchvision_state_dict_golden.py")
assert _spec is not None and _spec.loader is not None
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)


def _build(name: str) -> torch.nn.Module:
    if name == "googlenet_aux":
        return create_model("googlenet", aux_logits=True)
    return create_model(name)


@pytest.mark.parametrize("name", sorted(STATE_DICTS))
def test_state_dict_keys_and_shapes_equal_torchvision(name: str) -> None:
    with torch.device("meta"):
        ours = [[key, list(value.shape)] for key, value in _build(name).state_dict().items()]
    assert ours == STATE_DICTS[name]  # same names, same order, same shapes (parameters and buffers)


def test_checkpoint_loads_strict() -> None:
    """Exactly torchvision's keys/shapes load with strict=True; a missing key is named."""
    model = create_model("resnet18")
    checkpoint = {key: torch.zeros(shape) for key, shape in STATE_DICTS["resnet18"]}
    checkpoint["bn1.num_batches_tracked"] = torch.tensor(0)
    model.load_state_dict(checkpoint, strict=True)
    del checkpoint["fc.bias"]
    with pytest.raises(RuntimeError, match=r"fc\.bias"):
        model.load_state_dict(checkpoint, strict=True)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_forward_equals_torchvision_with_same_weights(name: str) -> None:
    model = create_model(name).double().eval()
    model.load_state_dict(make_golden.deterministic_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        logits = model(make_golden.fixed_input())
    expected = torch.tensor(FORWARD[name], dtype=torch.float64)
    assert logits.shape == expected.shape == (2, 1000)
    assert float(expected.std()) > 1e-3  # the golden is not a constant: the comparison can fail
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
