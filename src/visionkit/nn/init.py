"""Weight initialization schemes (handbook §5), as in-place tensor functions plus ``init_weights``.

* :func:`zeros_` — kept to demonstrate the *symmetry trap*: with equal weights every unit of a layer
  computes the same output and receives the same gradient, so the units never differ.
* :func:`small_normal_` — ``N(0, 0.01²)`` "small random numbers"; fine for shallow nets, but the signal
  shrinks layer by layer in deep ones.
* :func:`lecun_normal_` — ``N(0, 1/fan_in)`` ("divide by sqrt(n)"), keeps variance for linear units.
* :func:`xavier_uniform_` / :func:`xavier_normal_` — Glorot & Bengio 2010, ``Var = 2 / (fan_in + fan_out)``.
* :func:`kaiming_normal_` / :func:`kaiming_uniform_` — He et al. 2015, ``Var = gain² / fan`` with
  ``gain = sqrt(2)`` for ReLU: keeps activation variance constant through deep ReLU stacks.
* :func:`sparse_` — every unit connected to exactly ``k`` random inputs (default 10) with small
  Gaussian weights, all other weights zero.
* :func:`orthogonal_` — (semi-)orthogonal matrix from a QR decomposition (Saxe et al. 2014).
* Biases: :func:`zeros_`, :func:`constant_`, :func:`prior_probability_bias_` (``-log((1-π)/π)``, Lin et
  al. 2017, RetinaNet: the classifier starts by predicting foreground with probability π).

All functions take an optional ``torch.Generator`` for reproducibility and return the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "SCHEMES",
    "calculate_gain",
    "constant_",
    "fan_in_and_fan_out",
    "init_weights",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "orthogonal_",
    "prior_probability_bias_",
    "small_normal_",
    "sparse_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight ``(out, in, *kernel)``: in/out channels times kernel area.

    Example:
        >>> fan_in_and_fan_out(torch.empty(64, 3, 7, 7))
        (147, 3136)
    """
    if tensor.dim() < 2:
        raise ValueError(f"fan_in_and_fan_out: weight must have >= 2 dims, got shape {tuple(tensor.shape)}")
    receptive = math.prod(tensor.shape[2:]) if tensor.dim() > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def calculate_gain(nonlinearity: str = "relu", negative_slope: float = 0.01) -> float:
    """Recommended gain: 1 (linear/sigmoid), sqrt(2) (ReLU), sqrt(2/(1+a²)) (leaky ReLU), 5/3 (tanh)."""
    gains: dict[str, float] = {
        "linear": 1.0,
        "conv": 1.0,
        "sigmoid": 1.0,
        "tanh": 5.0 / 3.0,
        "relu": math.sqrt(2.0),
        "leaky_relu": math.sqrt(2.0 / (1 + negative_slope**2)),
    }
    if nonlinearity not in gains:
        raise ValueError(f"calculate_gain: nonlinearity must be one of {sorted(gains)}, got {nonlinearity!r}")
    return gains[nonlinearity]


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with 0. As a *weight* init this is the symmetry trap (see module docstring)."""
    with torch.no_grad():
        return tensor.zero_()


def constant_(tensor: Tensor, value: float) -> Tensor:
    """Fill with ``value`` (e.g. a bias of 0.01 to start ReLUs active)."""
    with torch.no_grad():
        return tensor.fill_(value)


def _normal_(tensor: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator | None) -> Tensor:
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def small_normal_(tensor: Tensor, std: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """``N(0, std²)``, the handbook's ``0.01 * randn`` ("small random numbers")."""
    return _normal_(tensor, std, generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``N(0, 1/fan_in)``: the handbook's ``randn(n) / sqrt(n)``."""
    fan_in, _ = fan_in_and_fan_out(tensor)
    return _normal_(tensor, 1.0 / math.sqrt(fan_in), generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot uniform: ``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return _uniform_(tensor, gain * math.sqrt(6.0 / (fan_in + fan_out)), generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot normal: ``N(0, gain² * 2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return _normal_(tensor, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(tensor: Tensor, mode: str, nonlinearity: str, negative_slope: float) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return calculate_gain(nonlinearity, negative_slope) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_normal_(
    tensor: Tensor,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    negative_slope: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He normal: ``N(0, gain² / fan)``; for ReLU and fan_in the handbook's ``randn(n) * sqrt(2/n)``."""
    return _normal_(tensor, _kaiming_std(tensor, mode, nonlinearity, negative_slope), generator)


def kaiming_uniform_(
    tensor: Tensor,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    negative_slope: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He uniform: ``U(-sqrt(3)·std, sqrt(3)·std)`` with the He standard deviation."""
    std = _kaiming_std(tensor, mode, nonlinearity, negative_slope)
    return _uniform_(tensor, math.sqrt(3.0) * std, generator)


def sparse_(
    tensor: Tensor, connections: int = 10, std: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    """Sparse init: each output unit gets exactly ``connections`` non-zero ``N(0, std²)`` input weights.

    A unit is a row of the weight viewed as ``(out, fan_in)``; the ``connections`` inputs are drawn
    without replacement (so a unit with fan_in < connections is rejected).

    Example:
        >>> w = sparse_(torch.empty(4, 50), connections=10)
        >>> (w != 0).sum(dim=1).tolist()
        [10, 10, 10, 10]
    """
    fan_in, _ = fan_in_and_fan_out(tensor)
    if not 0 < connections <= fan_in:
        raise ValueError(f"sparse_: connections must be in [1, fan_in={fan_in}], got {connections}")
    with torch.no_grad():
        rows = tensor.view(tensor.shape[0], -1)
        rows.zero_()
        order = torch.rand(rows.shape, generator=generator).argsort(dim=1)[:, :connections]
        values = torch.randn(rows.shape[0], connections, generator=generator) * std
        # a normal draw is exactly 0 with probability 0; guard anyway so the count is exact
        values = torch.where(values == 0, torch.full_like(values, std), values)
        rows.scatter_(1, order.to(rows.device), values.to(rows.dtype).to(rows.device))
    return tensor


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """(Semi-)orthogonal init: rows (or columns) of the ``(out, fan_in)`` view are orthonormal × gain."""
    rows, cols = tensor.shape[0], tensor.numel() // tensor.shape[0]
    flat = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # make the decomposition unique (uniform on O(n))
    if rows < cols:
        q = q.T
    with torch.no_grad():
        tensor.view(rows, cols).copy_(gain * q)
    return tensor


def prior_probability_bias_(tensor: Tensor, prior: float = 0.01) -> Tensor:
    """Fill with ``-log((1 - π) / π)`` so that ``sigmoid(bias) = π`` (RetinaNet classifier bias).

    Example:
        >>> bias = prior_probability_bias_(torch.empty(3), 0.01)
        >>> round(float(bias[0]), 4), round(float(torch.sigmoid(bias[0])), 6)
        (-4.5951, 0.01)
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior_probability_bias_: prior must be in (0, 1), got {prior}")
    return constant_(tensor, -math.log((1.0 - prior) / prior))


def _he(weight: Tensor, nonlinearity: str, generator: torch.Generator | None) -> Tensor:
    return kaiming_normal_(weight, "fan_in", nonlinearity, generator=generator)


#: scheme name -> function(weight, nonlinearity, generator)
SCHEMES: dict[str, Callable[[Tensor, str, torch.Generator | None], Tensor]] = {
    "zeros": lambda w, nl, g: zeros_(w),
    "small_random": lambda w, nl, g: small_normal_(w, 0.01, g),
    "lecun": lambda w, nl, g: lecun_normal_(w, g),
    "xavier_uniform": lambda w, nl, g: xavier_uniform_(w, 1.0, g),
    "xavier_normal": lambda w, nl, g: xavier_normal_(w, 1.0, g),
    "he": _he,
    "kaiming_normal": _he,
    "kaiming_normal_fan_out": lambda w, nl, g: kaiming_normal_(w, "fan_out", nl, generator=g),
    "kaiming_uniform": lambda w, nl, g: kaiming_uniform_(w, "fan_in", nl, generator=g),
    "sparse": lambda w, nl, g: sparse_(w, min(10, fan_in_and_fan_out(w)[0]), 0.01, g),
    "orthogonal": lambda w, nl, g: orthogonal_(w, calculate_gain(nl), g),
}

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def init_weights(
    model: nn.Module,
    scheme: str,
    *,
    nonlinearity: str = "relu",
    bias: float = 0.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Apply a weight scheme to every conv / linear layer of ``model``; biases set to ``bias``.

    Norm layers (anything with ``running_mean``, or ``GroupNorm``/``LayerNorm``) get weight 1, bias 0.

    Args:
        model: any module.
        scheme: one of :data:`SCHEMES` (``"he"``, ``"xavier_uniform"``, ``"sparse"``, ...).
        nonlinearity: for the gain of He / orthogonal schemes.
        bias: constant for conv/linear biases (0 as the handbook recommends; 0.01 is the ReLU variant).
        generator: for reproducible draws.

    Returns:
        ``model`` (initialized in place).

    Example:
        >>> net = nn.Sequential(nn.Linear(100, 50), nn.ReLU())
        >>> _ = init_weights(net, "he", generator=torch.Generator().manual_seed(0))
        >>> round(float(net[0].weight.detach().std()) * 10, 1)  # sqrt(2/100) = 0.141
        1.4
    """
    if scheme not in SCHEMES:
        raise ValueError(f"init_weights: scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    apply = SCHEMES[scheme]
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            apply(module.weight, nonlinearity, generator)
            if module.bias is not None:
                constant_(module.bias, bias)
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)) or hasattr(module, "running_mean"):
            for name, value in (("weight", 1.0), ("bias", 0.0)):
                parameter = getattr(module, name, None)
                if isinstance(parameter, Tensor):
                    constant_(parameter, value)
    return model
