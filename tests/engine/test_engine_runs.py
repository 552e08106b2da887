"""The pieces every task run shares (visionkit.engine.runs), on a minimal task recipe."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

from visionkit.engine.checkpoint import checkpoint_path, save_checkpoint
from visionkit.engine.config import check_types, save_recipe
from visionkit.engine.runs import (
    BestModel,
    StepLogger,
    build_optimizer,
    check_resume,
    check_run_fields,
    check_training_fields,
    recipe_with_resume,
    resolve_device,
)
from visionkit.engine.trainer import Trainer
from visionkit.errors import ConfigError


@dataclass(frozen=True)
class TaskRecipe:
    epochs: int = 2
    batch_size: int = 4
    eval_every: int = 1
    warmup_steps: int = 0
    patience: int = 0
    workers: int = 0
    threads: int = 0
    time_limit: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_norm: float = 10.0
    ema_decay: float = 0.0
    device: str = "cpu"
    seed: int = 0
    resume: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        check_training_fields(self)
        check_run_fields(self)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("epochs", 0, "an integer >= 1"), ("patience", -1, "an integer >= 0"), ("lr", float("inf"), "(0, 10]"),
     ("momentum", 1.0, "[0, 1)"), ("clip_norm", 0.0, "> 0"), ("ema_decay", 1.0, "decay in (0, 1)"),
     ("device", "gpu", "auto, cpu, cuda"), ("time_limit", -1.0, "seconds >= 0")],
)  # fmt: skip
def test_fields_are_checked_naming_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"{key}={value!r}.*{message}".replace("(", r"\(").replace(")", r"\)").replace("[", r"\["),
    ):
        TaskRecipe(**{key: value})


def test_device_and_optimizer() -> None:
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"cuda:3.*available: cpu"):
            resolve_device("cuda:3")
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    optimizer = build_optimizer(TaskRecipe(optimizer="sgd"), model)
    assert type(optimizer).__name__ == "SGD"
    assert [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [(1, 1e-4), (2, 0.0)]


def test_resume_base_and_checks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_recipe(TaskRecipe(epochs=5), run / "config.json")
    resumed = recipe_with_resume(TaskRecipe, [f"resume={run}", "progress=false"])
    assert resumed.epochs == 5 and not resumed.progress
    with pytest.raises(ConfigError, match="no checkpoint"):
        check_resume(resumed, {"resume", "progress"})
    save_checkpoint({"step": 1}, checkpoint_path(run / "checkpoints", 1))
    assert check_resume(resumed, {"resume", "progress"}) == run
    with pytest.raises(ConfigError, match=r"differs .* lr \(run: 0.1, now: 0.2\)"):
        check_resume(TaskRecipe(epochs=5, lr=0.2, resume=str(run)), {"resume"})
    with pytest.raises(ConfigError, match="not a run folder"):
        recipe_with_resume(TaskRecipe, [f"resume={tmp_path / 'nothing'}"])
    assert check_resume(TaskRecipe(), {"resume"}) is None


def test_step_logger_and_best_model(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 3
    saved: list[str] = []
    best = BestModel(saved.append, patience=1, monitor="score")
    steps = StepLogger(tmp_path / "steps.csv")

    class Score(BestModel):  # puts a falling score into each epoch record before BestModel reads it
        def __init__(self) -> None:
            self.values = iter([0.5, 0.4, 0.3])

        def after_epoch(self) -> None:
            self.trainer.history[-1]["score"] = next(self.values)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    hooks = [Score(), best, steps]
    trainer = Trainer(model, optimizer, data, loss_fn=nn.functional.mse_loss, max_epochs=3, hooks=hooks)
    trainer.train()
    assert saved == ["best.pt"] and (best.best, best.best_epoch) == (0.5, 1) and trainer.epoch == 2
    with (tmp_path / "steps.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(float(r["step"])) for r in rows] == list(range(1, 7)) and "lr" in rows[0]


def test_budget_folder_and_amp_helpers(tmp_path: Path) -> None:
    from visionkit.engine.budget import TimeLimit, WarmupCosine
    from visionkit.engine.runs import budget_hooks, check_amp, run_folder, run_tensorboard

    hooks, limit = budget_hooks(TaskRecipe(), 0)
    assert limit is None and len(hooks) == 1 and hooks[0].total_steps == 1  # at least one step
    hooks, limit = budget_hooks(TaskRecipe(time_limit=5.0), 10)
    assert isinstance(hooks[0], WarmupCosine) and hooks[0].time_limit == 5.0 and isinstance(limit, TimeLimit)
    folder, resumed = run_folder(TaskRecipe(), tmp_path / "a", {"resume"}, "task")
    assert (folder, resumed) == (tmp_path / "a", False)
    run = tmp_path / "run"
    save_recipe(TaskRecipe(), run / "config.json")
    save_checkpoint({"step": 1}, checkpoint_path(run / "checkpoints", 1))
    assert run_folder(TaskRecipe(resume=str(run)), None, {"resume"}, "task") == (run, True)
    with pytest.raises(ConfigError, match="continues in its own folder"):
        run_folder(TaskRecipe(resume=str(run)), tmp_path / "elsewhere", {"resume"}, "task")
    check_amp(True, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"amp=true: .* not meta"):
        check_amp(True, torch.device("meta"))
    messages: list[str] = []
    assert run_tensorboard(False, tmp_path / "tb", messages.append) is None and not messages
