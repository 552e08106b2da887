"""Structured pruning: a pruned model equals the unpruned one when the removed channels had no effect.

Exactness by construction: weights, biases, BatchNorm statistics and inputs are small integers in
float64 (BatchNorm with ``eps = 0`` and ``running_var = 1``, so it computes ``x − mean`` times an
integer plus an integer), average pools divide by powers of two or by one, and every intermediate value
is checked to be a multiple of 2⁻⁸ below 2⁴⁴ in magnitude (the global pools divide by 4 or 1). Every
sum of such numbers is exact in any order (at most 53 significant bits), so the pruned and the unpruned
model give bit-identical outputs exactly when the slicing is right.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import visionkit.models.small  # noqa: F401  (registers resnet_digits)
from visionkit.compress.graph import trace_channels
from visionkit.compress.structured import (
    channel_importance,
    check_same_outputs,
    prune_channels,
    resize_layers,
    select_channels,
)
from visionkit.errors import ConfigError, ExportError
from visionkit.models import create_model

GRID, LIMIT = 2.0**8, 2.0**44


def _integer_model(model: nn.Module, seed: int) -> nn.Module:
    """Small-integer float64 weights, two ±1 entries per filter (every filter has L1 norm ≥ 1)."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                weight = module.weight
                flat = weight.view(weight.shape[0], -1)
                flat.zero_()
                for row in range(flat.shape[0]):
                    picks = torch.randint(0, flat.shape[1], (2,), generator=generator)
                    flat[row, picks] = torch.randint(0, 2, (2,), generator=generator).double() * 2 - 1  # ±1
                if module.bias is not None:
                    module.bias.copy_(torch.randint(-1, 2, module.bias.shape, generator=generator))
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.eps = 0.0
                module.running_var.fill_(1.0)
                module.running_mean.copy_(
                    torch.randint(-1, 2, module.running_mean.shape, generator=generator)
                )
                module.weight.copy_(torch.randint(1, 3, module.weight.shape, generator=generator))
                module.bias.copy_(torch.randint(-1, 2, module.bias.shape, generator=generator))
    return model


def _silence(model: nn.Module, removed: set[int], graph) -> None:
    """Make the channels of the ``removed`` classes exactly zero wherever they are produced."""
    with torch.no_grad():
        for record in graph.layers.values():
            module = model.get_submodule(record.name)
            for index, atom in enumerate(record.outputs):
                if graph.find(atom) not in removed:
                    continue
                if record.kind == "norm":
                    module.running_mean[index] = 0.0
                    module.bias[index] = 0.0
                else:
                    module.weight[index] = 0.0
                    if module.bias is not None:
                        module.bias[index] = 0.0


def _assert_integer_values(model: nn.Module, example: torch.Tensor) -> None:
    """The premise of exactness: every layer output is a multiple of 2⁻⁸ below 2⁴⁴ (checked by hooks)."""
    bad = []

    def check(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            scaled = output * GRID
            if not (torch.equal(scaled, scaled.round()) and float(output.abs().max()) < LIMIT):
                bad.append(type(module).__name__)

    handles = [m.register_forward_hook(check) for m in model.modules()]
    with torch.no_grad():
        model(example)
    for handle in handles:
        handle.remove()
    assert not bad, f"non-integer or huge intermediate values in {bad[:5]}"


CASES = [
    ("resnet_digits", (2, 1, 8, 8)),
    ("resnet18", (2, 3, 32, 32)),
    ("mobilenet_v2", (2, 3, 32, 32)),
    ("googlenet", (2, 3, 32, 32)),
    ("vgg11_bn", (2, 3, 32, 32)),
]


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[c[0] for c in CASES])
def test_pruning_zero_impact_channels_keeps_outputs_exactly(name: str, shape: tuple[int, ...]) -> None:
    model = _integer_model(create_model(name, num_classes=10), seed=1)
    example = torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(2)).double()
    graph = trace_channels(model, example)
    groups = graph.groups()
    # remove a random half of every group, made zero-impact first; L1 ranks exactly those lowest
    generator = torch.Generator().manual_seed(3)
    removed = set()
    for group in groups:
        count = len(group.channels) - max(1, round(0.5 * len(group.channels)))
        order = torch.randperm(len(group.channels), generator=generator)[:count]
        removed.update(group.channels[i] for i in order.tolist())
    _silence(model, removed, graph)
    _assert_integer_values(model, example)
    assert select_channels(groups, channel_importance(model, graph, "l1"), 0.5) == removed
    result = prune_channels(model, example, 0.5, criterion="l1")
    assert result.shapes, "nothing was pruned"
    with torch.no_grad():
        assert torch.equal(result.model(example), model(example))
    pruned_params = sum(p.numel() for p in result.model.parameters())
    assert pruned_params < 0.5 * sum(p.numel() for p in model.parameters())


def _residual_net() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(2, 8, 3, padding=1)
            self.a = nn.Conv2d(8, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 1)
            self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.head = nn.Linear(16 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            y = x + self.b(torch.relu(self.a(x)))  # ties stem and b
            z = torch.cat([y, self.a(x)], 1)  # a applied twice, concatenated after y
            return self.head(torch.flatten(self.depthwise(z), 1))

    return Net()


def test_graph_ties_residual_concat_depthwise_and_flatten() -> None:
    net = _residual_net()
    graph = trace_channels(net, torch.randn(2, 2, 4, 4))
    groups = {group.layers: len(group.channels) for group in graph.groups()}
    assert groups == {("stem", "b", "depthwise"): 8, ("a", "depthwise"): 8}  # depthwise filters go along
    assert graph.tied_layers("stem") == ["b"]
    head = graph.layers["head"]
    assert len(head.inputs) == 16 * 16  # flatten fans each channel out to 4·4 features
    assert graph.find(head.inputs[0]) == graph.find(head.inputs[15])
    assert graph.find(head.inputs[16]) != graph.find(head.inputs[0])


def test_pruned_custom_net_matches_on_kept_channels_and_reloads() -> None:
    net = _integer_model(_residual_net(), seed=4)
    example = torch.randint(-2, 3, (2, 2, 4, 4), generator=torch.Generator().manual_seed(5)).double()
    graph = trace_channels(net, example)
    removed = {group.channels[0] for group in graph.groups()}
    _silence(net, removed, graph)
    result = prune_channels(net, example, 1 / 8)
    assert result.model.a.out_channels == 7 and result.model.depthwise.groups == 14
    with torch.no_grad():
        assert torch.equal(result.model(example), net(example))
    buffer = io.BytesIO()
    torch.save(result.model.state_dict(), buffer)
    rebuilt = resize_layers(_residual_net().double(), result.shapes)
    buffer.seek(0)
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(example), result.model(example))


def test_select_channels_local_global_and_rounding() -> None:
    from visionkit.compress.graph import PruneGroup

    groups = [PruneGroup(("a",), list(range(16))), PruneGroup(("b",), [100, 101])]
    scores = {i: float(i) for i in range(16)} | {100: 0.5, 101: 0.25}
    assert select_channels(groups, scores, 0.5) == set(range(8)) | {101}
    assert len(select_channels(groups, scores, 0.3, round_to=8)) == 8 + 1  # 16·0.7 = 11.2 → kept 8
    assert select_channels(groups, scores, 0.5, scope="global") == {0, 1, 2, 3, 4, 5, 6, 7, 101}


def test_bn_criterion_uses_gamma() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.1, -5.0, 0.2, 3.0]))
    result = prune_channels(net.eval(), torch.randn(2, 1, 3, 3), 0.5, criterion="bn")
    assert result.model[1].weight.tolist() == pytest.approx([-5.0, 3.0])


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_open_interval_is_an_error(ratio: float) -> None:
    with pytest.raises(ConfigError, match="ratio"):
        prune_channels(nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 1, 1)), torch.randn(2, 1, 2, 2), ratio)


def test_unknown_and_tied_layer_names_are_errors_naming_the_layer() -> None:
    net, example = _residual_net(), torch.randn(2, 2, 4, 4)
    with pytest.raises(ConfigError, match="'nope'"):
        prune_channels(net, example, 0.5, layers=["nope"])
    with pytest.raises(ExportError, match=r"layer 'stem'.*\['b'\]"):
        prune_channels(net, example, 0.5, layers=["stem"])
    with pytest.raises(ConfigError, match="'depthwise' is a depthwise layer"):
        prune_channels(net, example, 0.5, layers=["depthwise"])
    result = prune_channels(net, example, 0.5, layers=["stem", "b"])
    assert result.shapes["stem"]["out"] == 4 and result.shapes["depthwise"]["out"] == 12
    assert result.model.a.out_channels == 8  # a's own group was not named


def test_output_channels_are_protected_and_shape_change_is_caught() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    result = prune_channels(net, torch.randn(2, 1, 2, 2), 0.5)
    assert result.model[2].out_channels == 3
    broken = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ExportError, match="output shapes changed"):
        check_same_outputs(net, broken, torch.randn(2, 1, 2, 2))


def test_unknown_ops_keep_their_channels() -> None:
    class Shuffle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.roll(self.a(x), 1, dims=1))  # channel order changes: not understood

    graph = trace_channels(Shuffle(), torch.randn(2, 1, 2, 2))
    assert graph.groups() == []


def test_layer_not_reached_by_the_trace_is_an_error() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(ExportError, match="spare"):
        trace_channels(Unused(), torch.randn(2, 1, 2, 2))
