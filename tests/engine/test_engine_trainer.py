"""Trainer loop and hooks: loss contract, NaN/Inf handling, clipping, accumulation, seeding, exact
resume after an interruption (also past a truncated checkpoint), early stopping, EMA, CSV log."""

from __future__ import annotations

import copy
import csv
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionkit.engine import checkpoint as C
from visionkit.engine.hooks import (
    CheckpointHook,
    CSVLogger,
    EarlyStopping,
    EMAHook,
    EvalHook,
    LRScheduleHook,
    ProgressHook,
)
from visionkit.engine.schedules import CosineLR, LinearWarmup
from visionkit.engine.trainer import HookBase, NonFiniteGradientError, NonFiniteLossError, Trainer


def _data(n: int = 48, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 5, generator=generator)
    targets = (inputs[:, 0] + inputs[:, 1] > 0).long()
    return TensorDataset(inputs, targets)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def _loader(batch_size: int = 8, shuffle: bool = True) -> DataLoader:
    return DataLoader(_data(), batch_size=batch_size, shuffle=shuffle)


def test_training_reduces_the_loss_with_loss_fn() -> None:
    model = _model()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.2),
        _loader(),
        loss_fn=nn.functional.cross_entropy,
        max_epochs=8,
    )
    trainer.train()
    # behaviour check: the loss falls to 0.30-0.35 of the first epoch's (model/data seeds 0-2, the same
    # under ATEN_CPU_CAPABILITY=default/avx2/native): 0.6 leaves a wide margin
    assert trainer.history[-1]["train_loss"] < 0.6 * trainer.history[0]["train_loss"]
    assert trainer.step == 8 * 6 and trainer.epoch == 8


class DictLossModel(nn.Module):
    """A model that returns named losses in training, like a detector."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 2)

    def forward(self, batch):
        inputs, targets = batch
        logits = self.linear(inputs)
        return {
            "loss_cls": nn.functional.cross_entropy(logits, targets),
            "loss_l2": 1e-3 * logits.pow(2).mean(),
        }


def test_dict_of_losses_and_loss_terms_recorded() -> None:
    model = DictLossModel()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(), max_epochs=1)
    trainer.train()
    assert set(trainer.last_losses) == {"loss_cls", "loss_l2"}


@pytest.mark.parametrize(
    ("output", "error"), [(torch.ones(3), ValueError), ("loss", TypeError), ({}, TypeError)]
)
def test_loss_contract_violations(output, error) -> None:
    model = nn.Linear(5, 2)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(), loss_fn=lambda o, t: output
    )
    with pytest.raises(error):
        trainer.train()


class NaNAt(nn.Module):
    """Loss becomes NaN at a given iteration."""

    def __init__(self, iteration: int) -> None:
        super().__init__()
        self.linear, self.iteration, self.calls = nn.Linear(5, 2), iteration, 0

    def forward(self, batch):
        inputs, targets = batch
        self.calls += 1
        loss = nn.functional.cross_entropy(self.linear(inputs), targets)
        scale = float("nan") if self.calls - 1 == self.iteration else 1.0
        return {"loss_cls": loss * scale, "loss_box": loss.detach() * 0 + 0.5}


def test_nan_loss_stops_naming_iteration_and_terms_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    model = NaNAt(iteration=4)
    hook = CheckpointHook(tmp_path, every_steps=1, every_epochs=None, keep=10)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(), hooks=[hook], max_epochs=3
    )
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*loss_cls=nan, loss_box=0\.5"):
        trainer.train()
    saved = C.list_checkpoints(tmp_path)
    assert int(saved[0].stem.split("_")[1]) == 4  # steps 1..4 written, nothing after
    state = C.load_checkpoint(saved[0])
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state["model"].items())


def _inf_gradient_at(model: nn.Module, steps: set[int], counter: list[int]) -> None:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return grad * float("inf") if counter[0] in steps else grad

    model[0].weight.register_hook(hook)


@pytest.mark.parametrize("clip_norm", [1.0, None])
def test_non_finite_gradient_skip_counts_and_leaves_weights(clip_norm: float | None) -> None:
    model = _model()
    counter = [0]
    _inf_gradient_at(model, {3, 5}, counter)
    seen = []

    class Watch(HookBase):
        def after_step(self) -> None:
            seen.append((self.trainer.step, self.trainer.stepped, copy.deepcopy(model.state_dict())))

    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(shuffle=False),
        loss_fn=nn.functional.cross_entropy, clip_norm=clip_norm, hooks=[Watch()], max_epochs=1,
    )  # fmt: skip
    trainer.train()
    assert trainer.skipped_steps == 2
    assert [stepped for _, stepped, _ in seen] == [True, True, False, True, False, True]
    for index in (2, 4):  # a skipped step leaves every weight as it was
        before, after = seen[index - 1][2], seen[index][2]
        assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_gradient_stop_raises() -> None:
    model = _model()
    _inf_gradient_at(model, {2}, [0])
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(),
        loss_fn=nn.functional.cross_entropy, clip_norm=1.0, on_nonfinite_grad="stop",
    )  # fmt: skip
    with pytest.raises(NonFiniteGradientError, match="step 2"):
        trainer.train()


@pytest.mark.parametrize(("clip_norm", "clip_value"), [(0.05, None), (None, 0.01)])
def test_clipping_matches_manual(clip_norm, clip_value) -> None:
    inputs, targets = _data(8)[:]
    model, reference = _model(), _model()
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=1.0), [(inputs, targets)],
        loss_fn=nn.functional.cross_entropy, clip_norm=clip_norm, clip_value=clip_value,
    )  # fmt: skip
    torch.manual_seed(5)
    trainer.train()
    torch.manual_seed(5)
    nn.functional.cross_entropy(reference(inputs), targets).backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    if clip_value is not None:
        grads = [g.clamp(-clip_value, clip_value) for g in grads]
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        assert norm > clip_norm  # clipping really happens
        grads = [g * (clip_norm / (norm + 1e-6)) for g in grads]
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads, strict=True):
            p -= g
    # the same operations as clip_grad_norm_ / clip_grad_value_ on CPU (per-tensor norms, their norm,
    # max_norm / (total + 1e-6), a product) and SGD with lr 1 (p + (−1)·g): bit for bit
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gradient_accumulation_equals_large_batch() -> None:
    # Exact by construction: float64, inputs in {−1, 0, 1}, integer targets, weights on a 1/8 grid, a mean
    # squared error over 16·2 values (or 4·2 per micro-batch, each divided by 4 accumulation steps) and lr
    # 1/4: every value in the 3 steps is a dyadic rational of at most ~40 significant bits, so the order
    # of the sums (one 16-sample GEMM or four 4-sample ones) cannot change a bit. Forgetting to divide by
    # the accumulation steps, or stepping after every micro-batch, changes the weights by grid steps.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(-1, 2, (48, 5), generator=generator).double()
    data = TensorDataset(inputs, torch.randint(-2, 3, (48, 2), generator=generator).double())
    big = nn.Linear(5, 2).double()
    with torch.no_grad():
        for parameter in big.parameters():
            parameter.copy_((parameter * 8).round() / 8)
    small = copy.deepcopy(big)
    loss = nn.functional.mse_loss
    Trainer(
        big, torch.optim.SGD(big.parameters(), lr=0.25), DataLoader(data, batch_size=16), loss_fn=loss
    ).train()
    trainer = Trainer(
        small,
        torch.optim.SGD(small.parameters(), lr=0.25),
        DataLoader(data, batch_size=4),
        loss_fn=loss,
        accumulation_steps=4,
    )
    trainer.train()
    assert trainer.step == 3
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        assert torch.equal(a, b)


def test_seed_makes_runs_identical() -> None:
    weights = []
    for _ in range(2):
        model = _model()
        Trainer(
            model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(),
            loss_fn=nn.functional.cross_entropy, max_epochs=2, seed=7,
        ).train()  # fmt: skip
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


class Interrupt(HookBase):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def after_step(self) -> None:
        if self.trainer.step == self.at_step:
            raise KeyboardInterrupt(f"interrupted at step {self.at_step}")


def _full_run(directory: Path, interrupt_at: int | None = None, resume: bool = False):
    model = _model(seed=11 if resume else 0)  # a resumed run starts from different weights: the file wins
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = LinearWarmup(optimizer, CosineLR(optimizer, total_steps=20), warmup_steps=4)
    ema = EMAHook(decay=0.9)
    early = EarlyStopping(monitor="train_loss", patience=100)
    hooks = [
        LRScheduleHook(schedule),
        ema,
        early,
        CheckpointHook(directory, every_steps=5, every_epochs=1, keep=3),
    ]
    if interrupt_at is not None:
        hooks.append(Interrupt(interrupt_at))
    trainer = Trainer(
        model, optimizer, _loader(), loss_fn=nn.functional.cross_entropy, hooks=hooks, max_epochs=4, seed=3
    )
    if resume:
        trainer.resume(directory)
    trainer.train()
    return trainer, model, ema


@pytest.mark.parametrize("damage_newest", [False, True])
def test_interrupted_then_resumed_run_is_bit_exact(tmp_path: Path, damage_newest: bool) -> None:
    reference, reference_model, reference_ema = _full_run(tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        _full_run(tmp_path / "run", interrupt_at=17)  # mid-epoch 3 (6 steps per epoch)
    if damage_newest:  # newest file (step 15) truncated -> resume falls back to step 12
        newest = C.list_checkpoints(tmp_path / "run")[0]
        newest.write_bytes(newest.read_bytes()[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed, model, ema = _full_run(tmp_path / "run", resume=True)
    assert any("truncated" in str(w.message) for w in caught) == damage_newest
    assert resumed.step == reference.step == 24
    for key, value in reference_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    for key, value in reference_ema.ema_model.state_dict().items():
        assert torch.equal(value, ema.ema_model.state_dict()[key]), key
    timing = ("epoch_seconds", "samples_per_second")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in reference.history]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in resumed.history]


def test_early_stopping_stops_and_restores_best(tmp_path: Path) -> None:
    values = iter([1.0, 0.5, 0.52, 0.49, 0.6, 0.7, 0.8, 0.9])
    snapshots = {}

    def evaluate(model: nn.Module) -> dict[str, float]:
        snapshots[len(snapshots) + 1] = copy.deepcopy(model.state_dict())
        return {"val_loss": next(values)}

    model = _model()
    early = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02)
    hooks = [EvalHook(evaluate), early, CSVLogger(tmp_path / "log.csv"), ProgressHook(enabled=False)]
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(), loss_fn=nn.functional.cross_entropy,
        hooks=hooks, max_epochs=8,
    )  # fmt: skip
    trainer.train()
    # 0.52 and 0.49 are not better than 0.5 by min_delta 0.02; the third bad epoch (0.6) stops the run
    assert early.best_epoch == 2 and trainer.epoch == 5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snapshots[2].items())
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [float(r["val_loss"]) for r in rows] == [1.0, 0.5, 0.52, 0.49, 0.6]
    assert {"epoch", "step", "train_loss", "lr"} <= set(rows[0])


def test_early_stopping_names_missing_metric() -> None:
    model = _model()
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(), loss_fn=nn.functional.cross_entropy,
        hooks=[EarlyStopping(monitor="val_accuracy")],
    )  # fmt: skip
    with pytest.raises(KeyError, match="val_accuracy"):
        trainer.train()


def test_ema_is_moving_average_of_weights() -> None:
    model = nn.Linear(5, 2)
    ema = EMAHook(decay=0.5)
    history = []

    class Record(HookBase):
        def after_step(self) -> None:
            history.append(copy.deepcopy(model.weight.detach()))

    initial = model.weight.detach().clone()
    Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.5), _loader(), loss_fn=nn.functional.cross_entropy,
        hooks=[ema, Record()],
    ).train()  # fmt: skip
    expected = initial
    for weight in history:
        expected = 0.5 * expected + 0.5 * weight
    # ema.mul_(0.5).add_(w, alpha=0.5): both halvings are exact, the one addition rounds as here
    assert torch.equal(ema.ema_model.weight, expected)


def test_progress_and_amp_on_cpu_run() -> None:
    model = _model()
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.2), _loader(), loss_fn=nn.functional.cross_entropy,
        hooks=[ProgressHook(enabled=True)], amp=True, max_epochs=3,
    )  # fmt: skip
    trainer.train()
    assert trainer.amp and trainer.amp_dtype == torch.bfloat16
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"]


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"max_epochs": 0}, "max_epochs"),
        ({"accumulation_steps": 0}, "accumulation_steps"),
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"on_nonfinite_grad": "ignore"}, "on_nonfinite_grad"),
    ],
)
def test_bad_trainer_arguments(options: dict, argument: str) -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=argument):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), [], **options)


def test_csv_logger_with_tensorboard_dir_when_optional_package_missing_or_present(tmp_path: Path) -> None:
    model = _model()
    logger = CSVLogger(tmp_path / "log.csv", tensorboard_dir=tmp_path / "tb")
    Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(), loss_fn=nn.functional.cross_entropy,
        hooks=[logger], max_epochs=2,
    ).train()  # fmt: skip
    assert len((tmp_path / "log.csv").read_text().strip().splitlines()) == 3
    if importlib.util.find_spec("tensorboard") is None:  # optional: CSV only, no error
        assert logger.writer is None
    else:
        assert any((tmp_path / "tb").iterdir())
