"""Training a detector from a :class:`~visionkit.engine.detect.recipe.DetectRecipe` (one process or several
under torchrun): the engine's :class:`~visionkit.engine.trainer.Trainer` with the run's hooks.

Hooks, in order: warm-up + cosine schedule (ending with the time budget), time limit, EMA, validation
every ``eval_every`` epochs (on the EMA weights when there are some), best model + patience, then on rank 0
only: resumable checkpoints, the CSV log, TensorBoard and the progress bar.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from visionkit.data.datasets import LabelMap
from visionkit.data.transforms import collate_detection
from visionkit.engine.config import save_recipe
from visionkit.engine.detect.anchors import kmeans_anchor_argument, takes_anchors
from visionkit.engine.detect.data import DetectionData, build_datasets
from visionkit.engine.detect.evaluate import evaluate_detector, predict
from visionkit.engine.detect.model import build_detector, input_scale, save_detector
from visionkit.engine.detect.recipe import RESUME_FREE_KEYS, DetectRecipe
from visionkit.engine.distributed import DistributedContext, unwrap_model, wrap_model
from visionkit.engine.hooks import CheckpointHook, CSVLogger, EMAHook, EvalHook, ProgressHook
from visionkit.engine.runs import (
    BestModel,
    StepLogger,
    budget_hooks,
    build_optimizer,
    check_amp,
    distributed_context,
    run_folder,
    run_tensorboard,
    train_or_explain,
)
from visionkit.engine.runs import check_resume as check_resume_run
from visionkit.engine.tensorboard import TensorBoardHook
from visionkit.engine.trainer import HookBase, Trainer
from visionkit.errors import ConfigError
from visionkit.structures import Target

__all__ = ["check_resume", "train_detector"]

Log = Callable[[str], None]


class TrainStep(nn.Module):
    """The trainer's loss contract for detectors: ``step((images, targets)) -> dict of losses``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: tuple[list[Tensor], list[Target]]) -> dict[str, Tensor]:
        images, targets = batch
        return self.detector(images, targets)


def check_resume(recipe: DetectRecipe) -> Path | None:
    """The run folder to resume, after checking that its recipe equals this one (``RESUME_FREE_KEYS``
    aside); a :class:`ConfigError` lists the differing keys."""
    return check_resume_run(recipe, RESUME_FREE_KEYS)


def train_loader(dataset: Dataset, recipe: DetectRecipe, context: DistributedContext) -> DataLoader:
    """Shuffled batches of ``batch_size / world_size`` images per process (the global batch stays
    ``batch_size``, so N processes take the step one process would)."""
    if recipe.batch_size % context.world_size:
        raise ConfigError(
            f"batch_size={recipe.batch_size}: expected a multiple of the {context.world_size} processes"
        )
    sampler = None
    if context.distributed:
        sampler = DistributedSampler(
            dataset, context.world_size, context.rank, shuffle=True, seed=recipe.seed, drop_last=True
        )
    return DataLoader(
        dataset,
        batch_size=recipe.batch_size // context.world_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate_detection,
        num_workers=recipe.workers,
    )


class DetectionRun:
    """One run of :func:`train_detector` (kept as an object so its steps stay small)."""

    def __init__(self, recipe: DetectRecipe, run_dir: Path, resumed: bool, log: Log = print) -> None:
        self.recipe, self.run_dir, self.resumed = recipe, run_dir, resumed
        self.context = distributed_context(recipe.device)
        self.log: Log = log if self.context.is_main else (lambda _: None)

    # ---------------------------------------------------------------- set-up
    def prepare(self) -> DetectionData:
        recipe = self.recipe
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        torch.manual_seed(recipe.seed)
        data = build_datasets(recipe)
        self.log(f"data: {data.summary()}")
        return data

    def write_run_folder(self, data: DetectionData) -> None:
        """The run's recipe, label map and skipped files — written once the detector is built, so a
        recipe the model refuses (a bad option value) leaves no half-made run folder behind."""
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(self.recipe, self.run_dir / "config.json")
            data.label_map.save(self.run_dir / "label_map.json")
            if data.skipped:
                (self.run_dir / "skipped.txt").write_text("\n".join(data.skipped) + "\n", encoding="utf-8")

    def save(self, name: str, detector: nn.Module) -> None:
        if self.context.is_main:
            save_detector(
                self.run_dir / name,
                detector,
                model=self.recipe.model,
                arguments=self.arguments,
                label_map=self.label_map,
                scale=input_scale(self.recipe),
            )

    def eval_detector(self) -> nn.Module:
        """The weights to evaluate and save: the EMA's when there is one, else the trained model's."""
        if self.ema is not None and self.ema.ema_model is not None:
            return self.ema.ema_model.detector  # type: ignore[return-value]
        inner = unwrap_model(self.trainer.model)
        return inner.detector if isinstance(inner, TrainStep) else inner

    def evaluate(self) -> dict[str, float]:
        evaluation = evaluate_detector(
            self.eval_detector(),
            self.data.val,
            self.label_map.num_classes,
            batch_size=self.recipe.batch_size,
            context=self.context,
        )
        return evaluation.metrics

    def preview_images(self) -> dict[str, np.ndarray]:
        """A few validation images with the current predictions drawn (TensorBoard)."""
        from visionkit.viz import draw_boxes, to_pil

        count = min(4, len(self.data.val))  # type: ignore[arg-type]
        images = [self.data.val[i][0] for i in range(count)]
        drawn = {}
        for index, (image, found) in enumerate(
            zip(images, predict(self.eval_detector(), images), strict=True)
        ):
            picture = draw_boxes(
                to_pil(image),
                found["boxes"],
                found["labels"],
                found["scores"],
                class_names=self.label_map.names,
                score_threshold=0.3,
            )
            drawn[f"val/{index}"] = np.asarray(picture)
        return drawn

    def hooks(self, loader: DataLoader) -> list[HookBase]:
        recipe, main = self.recipe, self.context.is_main
        hooks, self.time_limit = budget_hooks(recipe, recipe.epochs * len(loader))
        if self.ema is not None:
            hooks.append(self.ema)
        hooks += [EvalHook(lambda _: self.evaluate(), every_epochs=recipe.eval_every), self.best, self.steps]
        if main:
            writer = run_tensorboard(recipe.tensorboard, self.run_dir / "tensorboard", self.log)
            hooks += [
                CheckpointHook(self.run_dir / "checkpoints", every_epochs=1, keep=2),
                CSVLogger(self.run_dir / "log.csv"),
                TensorBoardHook(writer, images=self.preview_images),
                ProgressHook(recipe.progress),
            ]
        return hooks

    # ---------------------------------------------------------------- the run
    def execute(self) -> dict[str, Any]:
        recipe = self.recipe
        self.data = data = self.prepare()
        self.label_map: LabelMap = data.label_map
        anchors = None
        if recipe.anchor_kmeans and not recipe.anchors and takes_anchors(recipe.model):
            anchors = kmeans_anchor_argument(recipe, data.train, self.log)
        detector, self.arguments = build_detector(recipe, data.label_map.num_classes, anchors)
        self.write_run_folder(data)
        detector = detector.to(self.context.device)
        if recipe.channels_last:
            detector = detector.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        check_amp(recipe.amp, self.context.device)
        model = wrap_model(TrainStep(detector), self.context)
        loader = train_loader(data.train, recipe, self.context)
        self.ema = EMAHook(recipe.ema_decay, ramp=2000.0) if recipe.ema_decay else None
        self.best = BestModel(lambda name: self.save(name, self.eval_detector()), recipe.patience)
        self.steps = StepLogger(self.run_dir / "steps.csv" if self.context.is_main else None)
        self.trainer = Trainer(
            model,
            build_optimizer(recipe, model),
            loader,
            hooks=self.hooks(loader),
            max_epochs=recipe.epochs,
            device=self.context.device,
            amp=recipe.amp,
            clip_norm=recipe.clip_norm,
            seed=recipe.seed,
        )
        if self.resumed:
            loaded = self.trainer.resume(self.run_dir / "checkpoints")
            self.log(f"resumed from {loaded}")
        start = time.perf_counter()
        train_or_explain(self.trainer, self.run_dir)
        return self.finish(time.perf_counter() - start)

    def finish(self, seconds: float) -> dict[str, Any]:
        """Evaluate the final weights if the last epoch was not evaluated, save, write metrics.json."""
        trainer, history = self.trainer, self.trainer.history
        final = dict(history[-1]) if history else {}
        if "AP" not in final or (self.time_limit is not None and self.time_limit.stopped):
            final = {"epoch": float(trainer.epoch), "step": float(trainer.step), **self.evaluate()}
            self.best.update(final["AP"], trainer.epoch)
        self.save("last.pt", self.eval_detector())
        if self.context.is_main:
            shutil.copyfile(self.run_dir / "best.pt", self.run_dir / "model.pt")
        metrics = {
            "model": self.recipe.model,
            "parameters": sum(p.numel() for p in self.eval_detector().parameters()),
            "processes": self.context.world_size,
            "epochs": trainer.epoch,
            "steps": trainer.step,
            "train_seconds": round(seconds, 2),
            "stopped_by_time_limit": bool(self.time_limit and self.time_limit.stopped),
            "final": {k: v for k, v in final.items() if k not in ("epoch", "step")},
            "best_AP": self.best.best,
            "best_epoch": self.best.best_epoch,
            **{k: final[k] for k in ("AP", "AP50", "AP75", "VOC07_mAP", "VOC12_mAP") if k in final},
        }
        if self.context.is_main:
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        return metrics


def train_detector(
    recipe: DetectRecipe, run_dir: str | Path | None = None, *, log: Log = print
) -> dict[str, Any]:
    """Train per ``recipe`` and write the run folder (see :mod:`visionkit.engine.detect`); returns the final
    metrics (also in ``metrics.json``).

    With ``recipe.resume`` the run continues in that folder exactly where its last good checkpoint left it
    (``run_dir`` must then be ``None`` or that folder). ``log`` receives one-line progress notes (rank 0).
    """
    folder, resumed = run_folder(recipe, run_dir, RESUME_FREE_KEYS, "detect")
    return DetectionRun(recipe, folder, resumed, log).execute()
