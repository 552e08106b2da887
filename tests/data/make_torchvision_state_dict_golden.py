"""Write the torchvision golden files used by tests/models/test_models_torchvision_compat.py.

Run with the reference environment (torchvision installed), from the repository root::

    .venv-bench/bin/python tests/data/make_torchvision_state_dict_golden.py

Outputs (small, committed):

* ``tests/data/torchvision_state_dict_golden.json``: for each model, the ordered state-dict keys with
  their shapes (parameters and buffers).
* ``tests/data/torchvision_forward_golden.json``: float64 eval-mode logits of resnet18 and
  mobilenet_v2 on a fixed input, with weights filled by :func:`deterministic_state_dict` — a closed
  formula of each tensor's name and index, so only the outputs need storing and any environment can
  rebuild the same weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STATE_DICT_FILE = HERE / "torchvision_state_dict_golden.json"
FORWARD_FILE = HERE / "torchvision_forward_golden.json"

#: our registry name -> (torchvision builder name, keyword arguments)
STATE_DICT_MODELS: dict[str, tuple[str, dict]] = {
    **{
        name: (name, {})
        for name in ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn"]
    },
    **{name: (name, {}) for name in ["vgg19", "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101"]},
    "resnet152": ("resnet152", {}),
    "mobilenet_v2": ("mobilenet_v2", {}),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": True}),
    "googlenet_aux": ("googlenet", {"aux_logits": True, "init_weights": True}),
}
FORWARD_MODELS = ("resnet18", "mobilenet_v2")
INPUT_SHAPE = (2, 3, 64, 64)


def _wave(numel: int, name: str) -> torch.Tensor:
    phase = sum(ord(character) for character in name) * 0.0137
    index = torch.arange(numel, dtype=torch.float64)
    return torch.sin(index * 0.7071067811865476 + phase)


def deterministic_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill every floating tensor from a closed formula of its name (He-like scale for weights)."""
    filled: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point():
            filled[name] = tensor.clone()
            continue
        wave = _wave(tensor.numel(), name).view(tensor.shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight" and tensor.dim() > 1:
            fan_in = tensor[0].numel()
            value = wave * math.sqrt(2.0) * math.sqrt(2.0 / fan_in)
        elif leaf == "weight":  # norm scale
            value = 1.0 + 0.1 * wave
        elif leaf == "running_var":
            value = 1.0 + 0.25 * (wave + 1.0)
        else:  # biases, running means
            value = 0.05 * wave
        filled[name] = value.to(tensor.dtype)
    return filled


def fixed_input() -> torch.Tensor:
    """The float64 input batch of the forward goldens."""
    numel = math.prod(INPUT_SHAPE)
    return torch.cos(torch.arange(numel, dtype=torch.float64) * 0.01).view(INPUT_SHAPE)


def main() -> None:
    import torchvision

    golden: dict[str, list] = {}
    for name, (builder, kwargs) in STATE_DICT_MODELS.items():
        with torch.device("meta"):
            model = getattr(torchvision.models, builder)(**kwargs)
        golden[name] = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    STATE_DICT_FILE.write_text(json.dumps(golden, separators=(",", ":")) + "\n")

    forward: dict[str, object] = {"input_shape": list(INPUT_SHAPE), "torchvision": torchvision.__version__}
    for name in FORWARD_MODELS:
        model = getattr(torchvision.models, name)().double().eval()
        model.load_state_dict(deterministic_state_dict(model.state_dict()), strict=True)
        with torch.no_grad():
            logits = model(fixed_input())
        forward[name] = [[float(f"{v:.12e}") for v in row] for row in logits.tolist()]
    FORWARD_FILE.write_text(json.dumps(forward, separators=(",", ":")) + "\n")
    print(f"wrote {STATE_DICT_FILE.name} ({STATE_DICT_FILE.stat().st_size} B), {FORWARD_FILE.name}")


if __name__ == "__main__":
    main()
