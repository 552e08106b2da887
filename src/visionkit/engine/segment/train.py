"""Training a segmenter from a :class:`~visionkit.engine.segment.recipe.SegmentRecipe`: the engine's
:class:`~visionkit.engine.trainer.Trainer` with the run's hooks (one process).

Hooks, in order: warm-up + cosine schedule (ending with the time budget), time limit, EMA, validation every
``eval_every`` epochs (on the EMA weights when there are some), best model (mIoU) + patience, per-step log,
resumable checkpoints, the CSV log, TensorBoard (loss, metrics, prediction overlays) and the progress bar.

The loss is the pixel cross-entropy averaged over the pixels that are not void (255); a batch with none
gives 0, which still back-propagates (the authors' nets sum instead of averaging and use lr 1e-10; with a
mean the usual learning rates apply).
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
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from visionkit.data.segmentation import IGNORE_INDEX, collate_segmentation
from visionkit.engine.config import save_recipe
from visionkit.engine.hooks import CheckpointHook, CSVLogger, EMAHook, EvalHook, ProgressHook
from visionkit.engine.runs import (
    BestModel,
    StepLogger,
    budget_hooks,
    build_optimizer,
    check_amp,
    resolve_device,
    run_folder,
    run_tensorboard,
    train_or_explain,
)
from visionkit.engine.segment.data import SegmentationData, build_datasets
from visionkit.engine.segment.evaluate import evaluate_segmenter, predict
from visionkit.engine.segment.model import build_segmenter, save_segmenter
from visionkit.engine.segment.recipe import RESUME_FREE_KEYS, SegmentRecipe
from visionkit.engine.tensorboard import TensorBoardHook
from visionkit.engine.trainer import HookBase, Trainer
from visionkit.errors import DatasetError

__all__ = ["pixel_cross_entropy", "train_segmenter"]

Log = Callable[[str], None]


def pixel_cross_entropy(logits: Tensor, masks: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Cross-entropy of ``logits`` ``[N, C, H, W]`` against ``masks`` ``[N, H, W]``, averaged over the pixels
    whose label is not ``ignore_index`` (0 when there are none).

    Raises:
        DatasetError: a label outside ``0 .. C−1`` other than ``ignore_index`` (its values are named).

    Example:
        >>> round(pixel_cross_entropy(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 255]]])).item(), 6)  # log 2
        0.693147
    """
    valid = masks != ignore_index
    outside = masks[valid & ((masks < 0) | (masks >= logits.shape[1]))]
    if outside.numel():
        raise DatasetError(
            f"masks hold labels {torch.unique(outside)[:10].tolist()} outside 0..{logits.shape[1] - 1} "
            f"(and {ignore_index} = ignore)"
        )
    total = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp(min=1)


class TrainStep(nn.Module):
    """The trainer's loss contract for segmenters: ``step((images, masks)) -> {"loss": ...}``."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        images, masks = batch
        return {"loss": pixel_cross_entropy(self.segmenter(images), masks)}


def train_loader(dataset: Dataset, recipe: SegmentRecipe) -> DataLoader:
    """Shuffled batches, images padded to a common size with void masks (:func:`collate_segmentation`)."""
    return DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        shuffle=True,
        collate_fn=collate_segmentation,
        num_workers=recipe.workers,
    )


class SegmentationRun:
    """One run of :func:`train_segmenter` (kept as an object so its steps stay small)."""

    def __init__(self, recipe: SegmentRecipe, run_dir: Path, resumed: bool, log: Log = print) -> None:
        self.recipe, self.run_dir, self.resumed, self.log = recipe, run_dir, resumed, log
        self.device = resolve_device(recipe.device)

    def prepare(self) -> SegmentationData:
        recipe = self.recipe
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        torch.manual_seed(recipe.seed)
        data = build_datasets(recipe)
        self.log(f"data: {data.summary()}")
        return data

    def write_run_folder(self, data: SegmentationData) -> None:
        """The run's recipe, label map and skipped files — written once the model is built, so a recipe
        the model refuses leaves no half-made run folder behind."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(self.recipe, self.run_dir / "config.json")
        data.label_map.save(self.run_dir / "label_map.json")
        if data.skipped:
            (self.run_dir / "skipped.txt").write_text("\n".join(data.skipped) + "\n", encoding="utf-8")

    def eval_model(self) -> nn.Module:
        """The weights to evaluate and save: the EMA's when there is one, else the trained model's."""
        if self.ema is not None and self.ema.ema_model is not None:
            return self.ema.ema_model.segmenter  # type: ignore[return-value]
        return self.trainer.model.segmenter  # type: ignore[return-value]

    def save(self, name: str) -> None:
        save_segmenter(
            self.run_dir / name,
            self.eval_model(),
            name=self.recipe.model,
            arguments=self.arguments,
            label_map=self.data.label_map,
        )

    def evaluate(self) -> dict[str, float]:
        evaluation = evaluate_segmenter(
            self.eval_model(),
            self.data.val,
            self.data.label_map.names,
            batch_size=self.recipe.batch_size,
            boundary_width=self.recipe.boundary_width,
        )
        return evaluation.metrics

    def preview_images(self) -> dict[str, np.ndarray]:
        """A few validation images with the current predictions drawn over them (TensorBoard)."""
        from visionkit.viz.masks import overlay_mask

        count = min(4, len(self.data.val))  # type: ignore[arg-type]
        images = [self.data.val[i][0] for i in range(count)]
        found = predict(self.eval_model(), images)
        return {
            f"val/{i}": np.asarray(overlay_mask(image, m))
            for i, (image, m) in enumerate(zip(images, found, strict=True))
        }

    def hooks(self, loader: DataLoader) -> list[HookBase]:
        recipe = self.recipe
        budget, self.time_limit = budget_hooks(recipe, recipe.epochs * len(loader))
        writer = run_tensorboard(recipe.tensorboard, self.run_dir / "tensorboard", self.log)
        return [
            *budget,
            *([self.ema] if self.ema is not None else []),
            EvalHook(lambda _: self.evaluate(), every_epochs=recipe.eval_every),
            self.best,
            self.steps,
            CheckpointHook(self.run_dir / "checkpoints", every_epochs=1, keep=2),
            CSVLogger(self.run_dir / "log.csv"),
            TensorBoardHook(writer, images=self.preview_images, image_key="mIoU"),
            ProgressHook(recipe.progress),
        ]

    def execute(self) -> dict[str, Any]:
        recipe = self.recipe
        self.data = self.prepare()
        segmenter, self.arguments = build_segmenter(recipe, self.data.label_map.num_classes)
        self.write_run_folder(self.data)
        segmenter = segmenter.to(self.device)
        if recipe.channels_last:
            segmenter = segmenter.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        check_amp(recipe.amp, self.device)
        model = TrainStep(segmenter)
        loader = train_loader(self.data.train, recipe)
        self.ema = EMAHook(recipe.ema_decay, ramp=2000.0) if recipe.ema_decay else None
        self.best = BestModel(self.save, recipe.patience, monitor="mIoU")
        self.steps = StepLogger(self.run_dir / "steps.csv")
        self.trainer = Trainer(
            model,
            build_optimizer(recipe, model),
            loader,
            hooks=self.hooks(loader),
            max_epochs=recipe.epochs,
            device=self.device,
            amp=recipe.amp,
            clip_norm=recipe.clip_norm,
            seed=recipe.seed,
        )
        if self.resumed:
            self.log(f"resumed from {self.trainer.resume(self.run_dir / 'checkpoints')}")
        start = time.perf_counter()
        train_or_explain(self.trainer, self.run_dir)
        return self.finish(time.perf_counter() - start)

    def finish(self, seconds: float) -> dict[str, Any]:
        """Evaluate the final weights if the last epoch was not evaluated, save, write metrics.json."""
        trainer, history = self.trainer, self.trainer.history
        final = dict(history[-1]) if history else {}
        if "mIoU" not in final or (self.time_limit is not None and self.time_limit.stopped):
            final = {"epoch": float(trainer.epoch), "step": float(trainer.step), **self.evaluate()}
            self.best.update(final["mIoU"], trainer.epoch)
        self.save("last.pt")
        shutil.copyfile(self.run_dir / "best.pt", self.run_dir / "model.pt")
        keys = ("mIoU", "pixel_accuracy", "mean_accuracy", "fw_IoU", "boundary_mIoU", "boundary_accuracy")
        metrics = {
            "model": self.recipe.model,
            "parameters": sum(p.numel() for p in self.eval_model().parameters()),
            "epochs": trainer.epoch,
            "steps": trainer.step,
            "train_seconds": round(seconds, 2),
            "stopped_by_time_limit": bool(self.time_limit and self.time_limit.stopped),
            "final": {k: v for k, v in final.items() if k not in ("epoch", "step")},
            "best_mIoU": self.best.best,
            "best_epoch": self.best.best_epoch,
            **{key: final[key] for key in keys if key in final},
        }
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        return metrics


def train_segmenter(
    recipe: SegmentRecipe, run_dir: str | Path | None = None, *, log: Log = print
) -> dict[str, Any]:
    """Train per ``recipe`` and write the run folder (see :mod:`visionkit.engine.segment`); returns the final
    metrics (also in ``metrics.json``).

    With ``recipe.resume`` the run continues in that folder where its last good checkpoint left it
    (``run_dir`` must then be ``None`` or that folder).
    """
    folder, resumed = run_folder(recipe, run_dir, RESUME_FREE_KEYS, "segment")
    return SegmentationRun(recipe, folder, resumed, log).execute()
