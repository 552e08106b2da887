"""Smoke test over every registered model: forward on a small input, every parameter gets a finite
gradient, output shapes as documented (logits ``(N, num_classes)``; GoogLeNet with auxiliary heads
returns a 3-tuple of logits in training)."""

from __future__ import annotations

import pytest
import torch

from visionkit.models import create_model, list_models
from visionkit.models.backbones import Backbone, GoogLeNetOutputs

#: smallest convenient input side per model (default 32); AlexNet's 11×11/4 stem needs 63+
SMOKE_SIZE = {"alexnet": 64}


def _is_backbone(name: str) -> bool:
    with torch.device("meta"):
        return isinstance(create_model(name), Backbone)


def run_smoke_test(name: str) -> None:
    """Documented output: logits (N, num_classes) (GoogLeNet with aux heads: a 3-tuple in training)."""
    if not _is_backbone(name):
        pytest.skip(f"{name} is not a classification backbone; its own test file runs its smoke test")
    torch.manual_seed(0)
    kwargs = {"aux_logits": True} if name == "googlenet" else {}
    model = create_model(name, num_classes=7, **kwargs).train()
    size = SMOKE_SIZE.get(name, 32)
    output = model(torch.randn(2, 3, size, size))
    outputs = list(output) if isinstance(output, GoogLeNetOutputs) else [output]
    assert len(outputs) == (3 if name == "googlenet" else 1)
    loss = torch.zeros(())
    for logits in outputs:
        assert logits.shape == (2, 7) and bool(torch.isfinite(logits).all())
        loss = loss + logits.logsumexp(dim=1).sum()
    loss.backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name}: {parameter_name} got no gradient"
        # a sum is finite only if every term is (NaN/Inf propagate); cheaper than isfinite().all()
        finite = bool(torch.isfinite(parameter.grad.sum(dtype=torch.float64)))
        assert finite, f"{name}: {parameter_name} has a non-finite gradient"


#: the VGG variants (large fully connected layers) run in test_models_smoke_vgg.py to keep files short
@pytest.mark.parametrize("name", [name for name in list_models() if not name.startswith("vgg")])
def test_smoke_every_registered_model(name: str) -> None:
    run_smoke_test(name)
