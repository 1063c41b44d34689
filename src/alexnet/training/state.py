"""Saving a run's state into ``last.pt`` and restoring it on resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import TrainConfig
from ..distributed import Dist
from ..errors import UserError
from ..weights import check_state_dict, save_checkpoint, unwrap
from .rng import rng_state, set_rng_state
from .schedule import Plateau

if TYPE_CHECKING:
    from .setup import Run


def check_resume(ckpt: dict, path: Path, cfg: TrainConfig, classes: list[str] | None = None) -> None:
    """One line saying how the checkpoint's model differs from this run's: architecture, then classes."""
    if ckpt.get("arch", cfg.arch) != cfg.arch:
        raise UserError(f"--resume {path}: the checkpoint is an {ckpt['arch']}, this run's --arch is {cfg.arch}")
    if classes is not None and list(ckpt.get("classes", classes)) != list(classes):
        theirs, ours = list(ckpt["classes"]), list(classes)
        if len(theirs) != len(ours):
            what = f"{len(theirs)} classes, this data set has {len(ours)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
            what = f"class {i} {theirs[i]!r}, this data set's is {ours[i]!r}"
        raise UserError(f"--resume {path}: the checkpoint has {what}; resume on the data it was trained on")


def restore(ckpt: dict, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, plateau: Plateau, dist_info: Dist) -> dict:  # fmt: skip
    """Load ``ckpt``'s model, optimizer, scaler, schedule and RNG states; return its counters as ``Run`` fields
    (plus ``elapsed``, the seconds trained so far)."""
    check_state_dict(model, ckpt["model"], source=str(path))
    model.load_state_dict(ckpt["model"])
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:  # parameter groups differ: another --freeze, or --init-weights with a frozen body
        raise UserError(
            f"--resume {path}: its optimizer state does not fit this run ({e}); was --freeze changed?"
        ) from None
    scaler.load_state_dict(ckpt["scaler"])
    plateau.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    partial = tuple(ckpt.get("epoch_partial", (0.0, 0)))
    return {
        "start_epoch": ckpt["epoch"],
        "start_batch": ckpt["batch_in_epoch"],
        "step": ckpt["step"],
        "best": ckpt.get("best") or {},
        "total_steps": ckpt.get("total_steps"),
        # the loss of the epoch's first part, summed over all ranks: rank 0 carries it, the others start at zero
        "partial": partial if dist_info.main and ckpt["batch_in_epoch"] else (0.0, 0),
        "elapsed": ckpt.get("elapsed", 0.0),
    }


def save(run: Run, epoch: int, batch_in_epoch: int, name: str = "last.pt", partial: tuple[float, int] = (0.0, 0)):
    """Write ``RUN_DIR/checkpoints/NAME`` (rank 0 only): weights, training state and what loading needs."""
    if not run.dist.main:
        return
    payload = {
        "arch": run.cfg.arch,
        "num_classes": len(run.data.classes),
        "model_kwargs": {"dropout": run.cfg.dropout},
        "model": unwrap(run.model).state_dict(),
        "classes": list(run.data.classes),
        "preprocess": run.data.preprocess.to_dict() if hasattr(run.data.preprocess, "to_dict") else run.data.preprocess,
        "config": run.cfg.to_dict(),
        "epoch": epoch,  # the epoch to run next (or to continue, with batch_in_epoch > 0)
        "batch_in_epoch": batch_in_epoch,
        "step": run.step,
        "total_steps": run.total_steps,  # a time budget's planned steps: a resumed run keeps them
        "best": run.best,
        "best_top1": run.best.get("value") if run.best.get("metric") == "val_top1" else None,
        "epoch_partial": list(partial),  # (loss sum, images) over all ranks of the part of this epoch done
        "elapsed": run.log.elapsed(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.plateau.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng_state(),
        "init_from": run.cfg.init_weights,
    }
    save_checkpoint(payload, run.dir / "checkpoints" / name)
