"""int8 kernels chosen by measurement (visionkit.deploy.kernels): the rewritten weights dequantize to the
same values bit for bit, the tuned graph computes the same numbers as the symmetric one, the choice is the
fastest accepted candidate, and a graph our quantizer did not write is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from visionkit.deploy.fuse import fuse_model
from visionkit.deploy.kernels import (
    CANDIDATES,
    MARGIN,
    choose_candidate,
    offset_conv_weights,
    tune_int8_kernels,
)
from visionkit.deploy.onnx import export_onnx, ort_session
from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx
from visionkit.errors import ExportError


class KernelNet(nn.Module):
    """Layers that reach both of ONNX Runtime's integer convolution paths: dense convolutions with input
    channels divisible by 4 and at least 16 outputs (the symmetric kernel's conditions), a depthwise one
    (grouped: ``gemm_dense`` leaves it symmetric), and a stem with 3 input channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pointwise = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(self.stem(x)))
        y = torch.relu(self.pointwise(torch.relu(self.depthwise(y))) + y)
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def int8_graph(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("kernels")
    export_onnx(fuse_model(KernelNet().eval()), folder / "float", example_size=(16, 16))
    batches = [(torch.rand(4, 3, 16, 16),) for _ in range(2)]
    ranges = calibrate_onnx(folder / "float" / "model.onnx", batches, "minmax")
    return quantize_onnx(folder / "float" / "model.onnx", ranges, folder / "int8.onnx")


def _dequantized_conv_weights(model) -> dict[str, np.ndarray]:
    """``(q − z)·s`` of every Conv weight, computed in float64 (exact for int8 codes and float32 scales)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    weights = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            q, s, z = (inits[name] for name in dq[node.input[1]].input)
            shape = (-1,) + (1,) * (q.ndim - 1)
            weights[node.name] = (q.astype(np.float64) - z.reshape(shape)) * s.astype(np.float64).reshape(
                shape
            )
    return weights


def test_offset_weights_dequantize_to_the_same_values(int8_graph) -> None:
    import onnx
    from onnx import numpy_helper

    reference = _dequantized_conv_weights(onnx.load(str(int8_graph)))
    assert len(reference) == 4
    for select, expected in ((lambda n: not any(a.name == "group" and a.i > 1 for a in n.attribute), 3),
                             (lambda n: True, 4)):  # fmt: skip
        model = onnx.load(str(int8_graph))
        assert offset_conv_weights(model, select) == expected
        got = _dequantized_conv_weights(model)
        for name, values in reference.items():
            assert np.array_equal(got[name], values), name  # bit for bit
        shifted = [
            numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("__zero_point")
        ]
        assert sum(bool(np.all(z == -1)) for z in shifted) == expected
    # the Gemm (fc) weight is never touched: only convolutions have the two paths
    model = onnx.load(str(int8_graph))
    offset_conv_weights(model, lambda n: True)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    zero = next(i for i in model.graph.initializer if i.name == gemm.input[1].replace("__dq", "__zero_point"))
    assert np.all(numpy_helper.to_array(zero) == 0)


def test_a_weight_shared_by_selected_and_unselected_convs_is_left_alone(int8_graph) -> None:
    import onnx

    model = onnx.load(str(int8_graph))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    convs[2].input[1] = convs[1].input[1]  # the depthwise conv now reads conv's weight (shapes do not matter)
    first = convs[1].name
    assert offset_conv_weights(model, lambda n: n.name == first) == 0
    assert offset_conv_weights(model, lambda n: n.name in (first, convs[2].name)) == 1


def test_a_graph_not_written_by_our_quantizer_is_refused(int8_graph) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_graph))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    q = next(i for i in model.graph.initializer if i.name == dq.input[0])
    values = numpy_helper.to_array(q).copy()
    values.flat[0] = -128
    q.CopyFrom(numpy_helper.from_array(values, q.name))
    with pytest.raises(ExportError, match=rf"{dq.input[0]}.*\[-127, 127\]"):
        offset_conv_weights(model, lambda n: True)


def test_tuned_graph_computes_the_same_numbers_and_takes_the_fastest(int8_graph, tmp_path) -> None:
    batches = [(torch.rand(4, 3, 16, 16),)]
    report = tune_int8_kernels(int8_graph, batches, tmp_path / "tuned.onnx", repeats=3)
    assert {"symmetric", "gemm_dense", "gemm_all"} <= set(report["ms"]) <= set(CANDIDATES)
    assert all(ms > 0 for ms in report["ms"].values())
    rewritten = report["rewritten"]
    assert (rewritten["symmetric"], rewritten["gemm_dense"], rewritten["gemm_all"]) == (0, 3, 4)
    assert 1 <= rewritten.get("per_layer", 1) <= 4  # timed only when it is a new, non-empty selection
    accepted = {name: ms for name, ms in report["ms"].items() if name not in report["rejected"]}
    fast_enough = {name: ms for name, ms in accepted.items() if ms <= (1 - MARGIN) * accepted["symmetric"]}
    fastest = min(fast_enough, key=fast_enough.get) if fast_enough else "symmetric"
    assert report["choice"] == fastest
    # whatever was chosen (it depends on the CPU), the numbers are the symmetric graph's, bit for bit
    x = torch.rand(3, 3, 20, 24).numpy()  # another batch and size than the tuning inputs
    expected = ort_session(int8_graph).run(None, {"input_0": x})[0]
    got = ort_session(tmp_path / "tuned.onnx").run(None, {"input_0": x})[0]
    assert np.array_equal(got, expected)
    with pytest.raises(ExportError, match="no inputs"):
        tune_int8_kernels(int8_graph, [], tmp_path / "none.onnx")


def test_choice_skips_candidates_whose_numbers_differ() -> None:
    ms = {"symmetric": 60.0, "gemm_dense": 40.0, "gemm_all": 35.0}
    assert choose_candidate(ms, {"gemm_dense": True, "gemm_all": True}) == "gemm_all"
    assert choose_candidate(ms, {"gemm_dense": True, "gemm_all": False}) == "gemm_dense"
    assert choose_candidate(ms, {"gemm_dense": False, "gemm_all": False}) == "symmetric"
    assert choose_candidate({"symmetric": 30.0, "gemm_dense": 40.0}, {"gemm_dense": True}) == "symmetric"
    assert choose_candidate({"symmetric": 30.0, "gemm_dense": 30.0}, {"gemm_dense": True}) == "symmetric"
    # within the margin the symmetric graph stays; at the margin the faster one is taken
    assert choose_candidate({"symmetric": 100.0, "gemm_dense": 96.0}, {"gemm_dense": True}) == "symmetric"
    assert choose_candidate({"symmetric": 100.0, "gemm_dense": 95.0}, {"gemm_dense": True}) == "gemm_dense"


def test_profile_names_are_matched_to_our_conv_nodes_exactly() -> None:
    """ONNX Runtime names a fused node after the Conv it replaces plus ``_token_N``; ``node_Conv_7`` must not
    take ``node_Conv_78``'s time, and an ambiguous or missing name gives no time (the layer stays
    symmetric)."""
    from visionkit.deploy.kernels import _per_conv

    profile = {"node_Conv_78_token_10": 5.0, "node_Conv_7_token_3": 2.0, "stem": 1.0, "a_token_1": 3.0}
    assert _per_conv(profile, "node_Conv_7") == 2.0
    assert _per_conv(profile, "node_Conv_78") == 5.0
    assert _per_conv(profile, "stem") == 1.0
    assert _per_conv(profile, "node_Conv_8") is None
    assert _per_conv({"a_token_1": 1.0, "a_token_2": 2.0}, "a") is None
