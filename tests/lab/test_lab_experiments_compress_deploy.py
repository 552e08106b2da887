"""The §27 compression and §37 deployment experiments: their verdict logic on fixed numbers, both ways, and
the float64 fusion check against an independent fold written here."""

from __future__ import annotations

import torch
from torch import nn

from visionkit.lab.experiments import s27_compression, s37_deploy


def test_compression_verdicts_follow_the_numbers() -> None:
    holds = s27_compression.judge_compression({"dense": 10.0, "structured": 4.0, "unstructured": 7.9}, 7.9)
    assert [v.holds for v in holds] == [True, True, True]
    fails = s27_compression.judge_compression({"dense": 10.0, "structured": 8.1, "unstructured": 10.2}, 7.4)
    assert [v.holds for v in fails] == [False, False, False]
    assert not any(v.is_erratum for v in fails)  # empirical claims: a finding, not an erratum


def test_deploy_verdicts_follow_the_numbers() -> None:
    holds = s37_deploy.judge_deploy(1e-15, {"onnx_fp32": 2.0, "onnx_int8": 1.5})
    assert [v.holds for v in holds] == [True, True]
    fails = s37_deploy.judge_deploy(1e-6, {"onnx_fp32": 2.0, "onnx_int8": 2.5})
    assert [v.holds for v in fails] == [False, False]
    assert fails[0].is_erratum and fails[0].correction
    assert [v.holds for v in s37_deploy.judge_deploy(0.0, None)] == [True]  # no ONNX Runtime: one verdict


def test_fusion_error_is_rounding_against_a_manual_fold() -> None:
    """conv → BN folded by hand (w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β) in float64 matches the
    unfused pair to rounding, and the experiment's measure agrees that fuse_model does the same."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU()).eval()
    s37_deploy.randomize_batch_norms(model, torch.Generator().manual_seed(1))
    model = model.double()
    conv, bn = model[0], model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(3, 8, 3).double()
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
        x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
        manual = float((torch.relu(folded(x)) - model(x)).abs().max())
    assert manual < 1e-12  # 27 products per output: γ₂₈ · max|term| ≈ 28 · 1.1e-16 · O(10)
    errors = s37_deploy.fusion_errors(model.float(), x.float())
    assert errors["float64"] <= s37_deploy.FUSED_EQUAL and errors["float32"] > errors["float64"]


def test_deploy_without_onnxruntime_skips_int8_with_a_reason(tmp_path, monkeypatch) -> None:
    from visionkit.lab.registry import experiment
    from visionkit.lab.runner import run_experiment

    monkeypatch.setattr(s37_deploy, "onnxruntime_available", lambda: False)
    result = run_experiment(experiment("deploy-fusion-int8"), tmp_path, quick=True, use_cache=False)
    assert [v.claim for v in result.verdicts] == [s37_deploy.FUSION] and result.verdicts[0].holds
    assert any("skipped: onnxruntime" in note for note in result.notes)
    assert not any(key.startswith("ms_") for key in result.numbers)
