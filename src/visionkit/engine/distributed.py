"""Data-parallel training through ``torchrun`` (gloo on CPU, nccl on CUDA).

``torchrun`` (``python -m torch.distributed.run``) starts one process per rank with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Each process calls
:func:`init_distributed`, wraps its model with :func:`wrap_model` (``DistributedDataParallel``: the
gradients are averaged across ranks during ``backward``), reads its shard of each batch through a
``DistributedSampler``, reduces metrics with :func:`all_reduce_sum`, and only rank 0 writes files.
With the same *global* batch, N ranks take exactly the step one process would take.

If a rank fails, torchrun's agent stops the other ranks and re-raises the failure with the original
traceback (``@record`` writes it); collectives also time out after ``timeout_s`` instead of hanging.
:func:`launch` runs a script under torchrun from Python (what ``visionkit train ... --nproc N`` does).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes logs and checkpoints."""
        return self.rank == 0


def init_distributed(
    backend: str | None = None, timeout_s: float = 120.0, use_cuda: bool | None = None
) -> DistributedContext:
    """Join the process group described by torchrun's environment; a single process when it is absent.

    Args:
        backend: ``"gloo"`` or ``"nccl"`` (default: nccl on CUDA, else gloo).
        timeout_s: collective timeout, so that a lost rank stops the others instead of hanging them.
        use_cuda: run on ``cuda:LOCAL_RANK`` (default: when CUDA is available).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend or ("nccl" if cuda else "gloo"),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistributedContext(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` (moved to the device)."""
    model = model.to(context.device)
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: Sequence[float], context: DistributedContext) -> list[float]:
    """Sum a few numbers over all ranks (float64); identity in a single process.

    Example:
        >>> all_reduce_sum([1.0, 2.0], DistributedContext())
        [1.0, 2.0]
    """
    if not context.distributed:
        return [float(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_objects(value: object, context: DistributedContext) -> list[object]:
    """Every rank's ``value`` (picklable), in rank order, on every rank; ``[value]`` in a single process.

    Example:
        >>> all_gather_objects({"images": 3}, DistributedContext())
        [{'images': 3}]
    """
    if not context.distributed:
        return [value]
    gathered: list[object] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: object, context: DistributedContext) -> object:
    """Rank 0's ``value`` on every rank (identity in a single process)."""
    if not context.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shard_indices(length: int, context: DistributedContext) -> list[int]:
    """This rank's indices of ``range(length)`` for evaluation: every ``world_size``-th, no padding, so
    summed metrics count each sample exactly once."""
    return list(range(context.rank, length, context.world_size))


def barrier(context: DistributedContext) -> None:
    """Wait for all ranks (no-op in a single process)."""
    if context.distributed:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(
    script: str,
    arguments: Sequence[str],
    nproc: int,
    *,
    timeout_s: float | None = None,
    capture_output: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python script arguments...`` on ``nproc`` local ranks under torchrun.

    torchrun stops all ranks when one fails and prints the failing rank's traceback; the returned
    process's ``returncode`` is non-zero then.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "--max-restarts=0", script, *arguments,
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        command, env=environment, timeout=timeout_s, check=False, capture_output=capture_output, text=True
    )


__all__ = [
    "DistributedContext",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "init_distributed",
    "launch",
    "shard_indices",
    "unwrap_model",
    "wrap_model",
]
