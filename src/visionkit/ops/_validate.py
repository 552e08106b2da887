"""Argument checks shared by the ops: every error names the argument and says what was expected."""

from __future__ import annotations

from torch import Tensor


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise ``ValueError`` unless ``boxes`` is a floating or integer ``Tensor[N, 4]``."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, 4], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {list(boxes.shape)}")
    if boxes.is_complex() or boxes.dtype == __import__("torch").bool:
        raise ValueError(f"{name} must be a real floating or integer tensor, got {boxes.dtype}")


def check_same_device(*named: tuple[str, Tensor]) -> None:
    """Raise ``ValueError`` naming both tensors when they live on different devices."""
    first_name, first = named[0]
    for name, tensor in named[1:]:
        if tensor.device != first.device:
            raise ValueError(
                f"{first_name} is on {first.device} but {name} is on {tensor.device}; move both to one device"
            )
