"""Data-parallel training: 2 CPU processes (gloo) take the same steps as 1 process with the same global
batch — bit for bit, on a problem whose arithmetic is exact; a failing rank stops every rank and its
traceback is shown; single-process helpers."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from visionkit.engine import distributed as D
from visionkit.engine.trainer import Trainer


def _store() -> torch.distributed.TCPStore:
    """The rendezvous store, hosted by the test process on a port the OS assigns while binding it (as
    torchrun's agent does). Picking a free port first and letting rank 0 bind it later left a window in
    which another process (xdist's other worker) could take it; rank 1 then aborted in gloo's set-up."""
    return torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


# Exact by construction: small-integer inputs and targets, weights on a 1/8 grid, a mean-squared error over
# 16·4 = 64 (one process) or 8·4 = 32 values per rank (then DDP's average over 2 ranks), lr 1/2 and momentum
# 1/2: every product, sum, scaling and update in two SGD steps is a dyadic rational of at most ~20
# significant bits, so float32 represents it exactly and the summation order (one GEMM over 16 samples,
# or two over 8 plus gloo's all-reduce) cannot matter. A wrong reduction (sum instead of mean, a missing
# all-reduce, a wrong shard) changes the weights by whole grid steps.
def _dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(-3, 4, (16, 6), generator=generator).float()
    return TensorDataset(inputs, torch.randint(-3, 4, (16, 4), generator=generator).float())


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_((parameter * 8).round() / 8)
    return model


def _rank_worker(rank: int, world_size: int, port: int, output: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "TORCHELASTIC_USE_AGENT_STORE": "True",
        }
    )  # fmt: skip  (the agent store: every rank connects to the test process's store as a client)
    torch.set_num_threads(1)
    context = D.init_distributed(timeout_s=60)
    try:
        _train_and_save(context, world_size, rank, output)  # returns: the DDP model is freed here
        D.barrier(context)
    finally:
        D.cleanup()


def _train_and_save(context: D.DistributedContext, world_size: int, rank: int, output: str) -> None:
    dataset = _dataset()
    sampler = DistributedSampler(dataset, world_size, rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=16 // world_size, sampler=sampler)
    model = D.wrap_model(_model(), context)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    Trainer(model, optimizer, loader, loss_fn=nn.functional.mse_loss, max_steps=2).train()
    total = D.all_reduce_sum([float(len(D.shard_indices(7, context)))], context)
    if context.is_main:
        torch.save({"weights": D.unwrap_model(model).state_dict(), "total": total}, output)


@pytest.mark.xdist_group("ddp")  # one multi-process run at a time: they share ports and cores
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    output = tmp_path / "two.pt"
    store = _store()
    torch.multiprocessing.spawn(_rank_worker, args=(2, store.port, str(output)), nprocs=2, join=True)
    two = torch.load(output, weights_only=True)
    assert two["total"] == [7.0]  # evaluation shards cover each sample once

    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    Trainer(
        model, optimizer, DataLoader(_dataset(), batch_size=16), loss_fn=nn.functional.mse_loss, max_steps=2
    ).train()
    initial = _model().state_dict()
    for name, value in model.state_dict().items():
        assert not torch.equal(value, initial[name])  # the steps happened
        assert torch.equal(two["weights"][name], value), name  # exact arithmetic: bit for bit


FAILING_SCRIPT = """
import torch
from torch.distributed.elastic.multiprocessing.errors import record
from visionkit.engine import distributed as D

@record
def main():
    context = D.init_distributed(timeout_s=600)
    if context.rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    D.all_reduce_sum([1.0], context)  # rank 0 would wait here for ten minutes without the agent

main()
"""


@pytest.mark.xdist_group("ddp")  # one multi-process run at a time: they share ports and cores
@pytest.mark.slow
def test_a_failing_rank_stops_all_ranks_and_shows_its_traceback(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAILING_SCRIPT))
    start = time.perf_counter()
    result = D.launch(str(script), [], nproc=2, timeout_s=240, capture_output=True)
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    assert elapsed < 200  # far below the 600 s collective timeout: the agent stopped rank 0
    output = result.stdout + result.stderr
    assert "rank 1 failed on purpose" in output and "Traceback" in output


def test_single_process_context_and_helpers() -> None:
    context = D.init_distributed()
    assert (context.rank, context.world_size, context.distributed, context.is_main) == (0, 1, False, True)
    model = nn.Linear(2, 2)
    assert D.wrap_model(model, context) is model and D.unwrap_model(model) is model
    assert D.all_reduce_sum([1, 2.5], context) == [1.0, 2.5]
    assert D.shard_indices(5, D.DistributedContext(rank=1, world_size=2)) == [1, 3]
    D.barrier(context)
    with pytest.raises(ValueError, match="nproc"):
        D.launch(sys.executable, [], nproc=0)
