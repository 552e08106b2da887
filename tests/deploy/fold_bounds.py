"""Bounds on the parameters of a fused model (visionkit.deploy.fuse) against the exact fold, for the
first-order network bounds of tests/models/network_error.py.

A folded layer's exact parameters are ``W·s`` and ``b·s + t`` (``s = γ/√(σ² + ε)``, ``t = β − μ·s``) of the
float32 numbers of the unfused model. ``fuse_model`` computes them in float64 (four roundings for ``W·s``:
``σ² + ε``, ``√``, ``/``, ``×``; six for the bias) and rounds once to float32, so
``|P₃₂ − P_exact| <= |P₃₂ − P₆₄| + γ₆₄(8)·magnitude``; an engine that folds in float32 instead (ONNX
Runtime's Conv+BN fusion) is within ``γ₃₂(8)·magnitude`` of the exact fold.
"""

from __future__ import annotations

import torch
from torch import nn

from tolerances import gamma
from visionkit.deploy.epilogue import FusedConv2d
from visionkit.deploy.fuse import ConvAct

FOLD_ERROR = gamma(8, torch.float64)


def fold_errors(
    original: nn.Module, fused: nn.Module, relative: float = FOLD_ERROR
) -> dict[str, torch.Tensor]:
    """``|P_fused − P_exact|`` bounds by parameter name of ``fused``: the float32 parameter against the
    float64 fold, plus ``relative`` times the magnitudes the fold combines (``γ₆₄(8)`` for our float64
    fold; pass ``γ₃₂(8)`` for a fold that another engine computes in float32 from the same numbers)."""
    report = fused.fusion_report
    errors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer name -> (ΔW, Δb)
    slices = {}  # a merged convolution's rows of the wide one
    for wide, members in report.merged:
        offset = 0
        for member in members:
            n = original.get_submodule(member).out_channels
            slices[member] = (wide, slice(offset, offset + n))
            offset += n
    for names in report.folded:
        layer, norm = (original.get_submodule(n).requires_grad_(False) for n in names[:2])
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        if names[0] in slices:
            wide, rows = slices[names[0]]
            new_weight, new_bias = _layer(fused, wide).weight[rows], _layer(fused, wide).bias[rows]
        else:
            new_weight, new_bias = _layer(fused, names[0]).weight, _layer(fused, names[0]).bias
        new_weight, new_bias = new_weight.detach(), new_bias.detach()
        exact_w = layer.weight.double() * _output_channel_of_weights(layer, scale)
        b = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        exact_b = b * scale + norm.bias.double() - norm.running_mean.double() * scale
        magnitude_b = (
            (b * scale).abs() + norm.bias.double().abs() + (norm.running_mean.double() * scale).abs()
        )
        errors[names[0]] = (
            (new_weight.double() - exact_w).abs() + relative * exact_w.abs(),
            (new_bias.double() - exact_b).abs() + relative * magnitude_b,
        )
    by_parameter = {}
    merged_away = {member for _, members in report.merged for member in members}
    for name, (dw, db) in errors.items():
        if name in merged_away:
            continue
        prefix = name + _layer_suffix(fused.get_submodule(name))
        by_parameter[prefix + ".weight"], by_parameter[prefix + ".bias"] = dw, db
    for wide, members in report.merged:
        convs = [_original_or_folded(original, fused, errors, m) for m in members]
        prefix = wide + _layer_suffix(fused.get_submodule(wide))
        by_parameter[prefix + ".weight"] = torch.cat([c[0] for c in convs])
        by_parameter[prefix + ".bias"] = torch.cat([c[1] for c in convs])
    return by_parameter


def _output_channel_of_weights(layer: nn.Module, per_channel: torch.Tensor) -> torch.Tensor:
    """``per_channel`` spread over ``layer.weight``: entry ``[i, j, ...]`` of a transposed convolution's
    ``[C_in, C_out/g, kh, kw]`` weight belongs to output channel ``(i // (C_in/g))·(C_out/g) + j``."""
    if isinstance(layer, nn.ConvTranspose2d):
        c_in, per_group = layer.weight.shape[:2]
        group = torch.arange(c_in) // (c_in // layer.groups)
        index = group[:, None] * per_group + torch.arange(per_group)[None, :]
        return per_channel[index][..., None, None]
    return per_channel.view(-1, *([1] * (layer.weight.dim() - 1)))


def _layer_suffix(module: nn.Module) -> str:
    """Where the layer's parameters are inside a fused module (``ConvAct``: ``.0``, ``FusedConv2d``:
    ``.conv``)."""
    return ".0" if isinstance(module, ConvAct) else ".conv" if isinstance(module, FusedConv2d) else ""


def _layer(fused: nn.Module, name: str) -> nn.Module:
    return fused.get_submodule(name + _layer_suffix(fused.get_submodule(name)))


def _original_or_folded(original, fused, errors, member):
    if member in errors:
        return errors[member]
    conv = original.get_submodule(member)  # merged unfolded: copied exactly
    return torch.zeros_like(conv.weight, dtype=torch.float64), torch.zeros(
        conv.out_channels, dtype=torch.float64
    )


def randomize_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Statistics and affine parameters away from their identity initialisation, so the fold matters."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
