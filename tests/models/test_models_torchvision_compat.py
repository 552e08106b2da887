"""torchvision compatibility: identical state-dict keys and shapes (so a torchvision checkpoint loads
with ``strict=True``) and identical outputs with the same weights (goldens made by
tests/data/make_torchvision_state_dict_golden.py in the reference environment)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from network_error import first_order_output_bound

from running_error import Bounded, assert_bounded
from tolerances import LIBM_ULPS, eps, unit_roundoff
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
    """The golden: torchvision 0.29 / torch 2.14.1 on another CPU, float64, the same closed-formula
    weights (``sin``, computed by each machine's libm: within 1 ulp) and input (``cos``), logits stored
    with 13 significant digits. Both evaluations are within the first-order bound of
    tests/models/network_error.py (local rounding of every operation, weight and input perturbations,
    through the network's Jacobian) of the exact network; checked on 16 logits (one backward pass each;
    an architecture difference moves every logit)."""
    model = create_model(name).double().eval()
    model.load_state_dict(make_golden.deterministic_state_dict(model.state_dict()), strict=True)
    x = make_golden.fixed_input()
    checked = [(sample, k) for sample in range(2) for k in range(0, 1000, 125)]
    logits, bounds = first_order_output_bound(
        model,
        x,
        checked,
        torch.float64,
        golden_parameter_errors(model),
        LIBM_ULPS * eps(torch.float64) * x.abs(),
    )
    expected = torch.tensor(FORWARD[name], dtype=torch.float64)
    assert logits.shape == expected.shape == (2, 1000)
    assert float(expected.std()) > 1e-3  # the golden is not a constant: the comparison can fail
    got, want = (torch.stack([t[index] for index in checked]) for t in (logits, expected))
    stored = (0.5e-12 + unit_roundoff(torch.float64)) * want.abs()  # "{:.12e}": 13 significant digits
    assert_bounded(got, want, 2 * bounds + stored)


def golden_parameter_errors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """|computed − exact| of every tensor of ``deterministic_state_dict``: a ``sin`` within LIBM_ULPS ulp
    (its argument is the same IEEE computation everywhere) scaled by the formula's constants, as a
    running error bound (tests/running_error.py)."""
    errors = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        sine = make_golden._wave(tensor.numel(), name).view(tensor.shape)
        wave = Bounded(sine, LIBM_ULPS * eps(torch.float64) * sine.abs(), torch.float64)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight" and tensor.dim() > 1:
            value = wave * math.sqrt(2.0) * math.sqrt(2.0 / tensor[0].numel())
        elif leaf == "weight":
            value = 1.0 + 0.1 * wave
        elif leaf == "running_var":
            value = 1.0 + 0.25 * (wave + 1.0)
        else:
            value = 0.05 * wave
        errors[name] = value.error
    return errors
