"""Batch normalization written out (handbook §4), equal to ``torch.nn.BatchNorm2d``.

Training mode normalizes each channel with the statistics of the current batch (biased variance)
and updates the running buffers with the *unbiased* batch variance; evaluation mode uses the running
buffers. The backward pass is the closed-form one from Ioffe & Szegedy (2015), "Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift", implemented explicitly in a
``torch.autograd.Function`` and verified with float64 ``gradcheck`` in the tests.

The models use ``torch.nn.BatchNorm2d`` (its fused kernel is faster); this module is the readable,
proven reference: tests show forward, backward and buffers match torch's to rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BatchNorm2d", "FrozenBatchNorm2d", "batch_norm_2d", "freeze_batch_norm"]


def _two_pass_statistics(x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Per-channel mean ``[1, C, 1, 1]``, the centred input, ``Σ (x − mean)²`` ``[1, C, 1, 1]`` and the count.

    The two-pass algorithm (mean first, then the squared deviations from it), as torch's CPU batch norm
    computes its statistics: accurate, and with a simple error bound (Higham, *Accuracy and Stability of
    Numerical Algorithms*, §1.9), which the tests use to compare the two.
    """
    dims = (0, 2, 3)
    mean = x.mean(dim=dims, keepdim=True)
    centered = x - mean
    return mean, centered, centered.square().sum(dim=dims, keepdim=True), x.numel() // x.shape[1]


class _BatchNormTrainFunction(torch.autograd.Function):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta with batch statistics and a closed-form backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        _, centered, sum_of_squares, count = _two_pass_statistics(x)
        inverse_std = torch.rsqrt(sum_of_squares / count + eps)  # the biased batch variance
        x_hat = centered * inverse_std
        ctx.save_for_backward(x_hat, inverse_std, weight)
        return x_hat * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        x_hat, inverse_std, weight = ctx.saved_tensors
        dims = (0, 2, 3)
        grad_bias = grad_output.sum(dim=dims)
        grad_weight = (grad_output * x_hat).sum(dim=dims)
        # dL/dx = gamma/sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat))   (per channel means)
        count = grad_output.numel() / grad_output.shape[1]
        grad_input = (weight.view(1, -1, 1, 1) * inverse_std) * (
            grad_output - grad_bias.view(1, -1, 1, 1) / count - x_hat * grad_weight.view(1, -1, 1, 1) / count
        )
        return grad_input, grad_weight, grad_bias, None


def batch_norm_2d(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch-normalize a ``(N, C, H, W)`` tensor per channel.

    Args:
        x: input ``(N, C, H, W)``, floating point.
        running_mean: ``(C,)`` buffer updated in place in training (``None``: not tracked).
        running_var: ``(C,)`` buffer updated in place in training with the unbiased batch variance.
        weight: ``(C,)`` scale gamma (``None``: 1).
        bias: ``(C,)`` shift beta (``None``: 0).
        training: use batch statistics (and update the buffers) if True, else the running buffers.
        momentum: ``running = (1 - momentum) * running + momentum * batch``.
        eps: added to the variance for stability.

    Returns:
        ``(N, C, H, W)`` normalized tensor.

    Raises:
        ValueError: ``x`` is not 4-D, or has a single value per channel in training.

    Example:
        >>> x = torch.randn(4, 3, 5, 5)
        >>> y = batch_norm_2d(x, torch.zeros(3), torch.ones(3))
        >>> bool(y.mean(dim=(0, 2, 3)).abs().max() < 1e-5)
        True
    """
    if x.dim() != 4:
        raise ValueError(f"batch_norm_2d: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    weight = torch.ones(channels, dtype=x.dtype, device=x.device) if weight is None else weight
    bias = torch.zeros(channels, dtype=x.dtype, device=x.device) if bias is None else bias
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm_2d: evaluation mode needs running_mean and running_var")
        scale = weight * torch.rsqrt(running_var + eps)
        shift = bias - running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    count = x.numel() // channels
    if count <= 1:
        raise ValueError(
            "batch_norm_2d: expected more than 1 value per channel in training, "
            f"got input shape {tuple(x.shape)}"
        )
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            mean, _, sum_of_squares, _ = _two_pass_statistics(x)
            unbiased_var = sum_of_squares / (count - 1)
            mean, unbiased_var = mean.flatten(), unbiased_var.flatten()
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_(unbiased_var.to(running_var.dtype), alpha=momentum)
    return _BatchNormTrainFunction.apply(x, weight, bias, eps)


class BatchNorm2d(nn.Module):
    """Thin module over :func:`batch_norm_2d` with torch's parameter/buffer names and semantics.

    Same state dict as ``torch.nn.BatchNorm2d`` (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``), same ``momentum=None`` (cumulative average) behaviour.

    Args:
        num_features: channels C.
        eps: variance epsilon.
        momentum: running-average factor, or ``None`` for a cumulative average.
        affine: learn gamma and beta.
        track_running_stats: keep running buffers (if False, batch statistics are used in eval too).

    Shape:
        ``(N, C, H, W) -> (N, C, H, W)``.

    Example:
        >>> bn = BatchNorm2d(8)
        >>> bn(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"BatchNorm2d: num_features must be positive, got {num_features}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm2d: expected input (N, {self.num_features}, H, W), got shape {tuple(x.shape)}"
            )
        use_batch_statistics = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return batch_norm_2d(
            x,
            self.running_mean if (self.training or not use_batch_statistics) else None,
            self.running_var if (self.training or not use_batch_statistics) else None,
            self.weight,
            self.bias,
            training=use_batch_statistics,
            momentum=momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: ``y = x · scale + shift`` with
    ``scale = weight / sqrt(running_var + eps)``, ``shift = bias − running_mean · scale`` (detectron2's
    ``FrozenBatchNorm2d``). For fine-tuning a pretrained backbone with small batches, whose batch statistics
    would be too noisy to train on. Same state-dict keys as ``torch.nn.BatchNorm2d``, all buffers.

    Example:
        >>> frozen = FrozenBatchNorm2d(4)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> bool(torch.equal(frozen(x), x * (1 / torch.sqrt(torch.tensor(1 + 1e-5)))))
        True
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @classmethod
    def from_batch_norm(cls, module: nn.BatchNorm2d | BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of ``module``'s current parameters and running statistics."""
        frozen = cls(module.num_features, module.eps).to(module.running_mean.device)  # type: ignore[union-attr]
        with torch.no_grad():
            if module.weight is not None:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())  # type: ignore[union-attr]
            frozen.running_mean.copy_(module.running_mean)  # type: ignore[arg-type]
            frozen.running_var.copy_(module.running_var)  # type: ignore[arg-type]
        return frozen

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None].to(x.dtype) + shift[None, :, None, None].to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` (in place) by a :class:`FrozenBatchNorm2d` copy.

    Returns ``module`` (or the frozen copy when ``module`` is itself a batch norm)."""
    if isinstance(module, nn.BatchNorm2d | BatchNorm2d):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        replaced = freeze_batch_norm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
