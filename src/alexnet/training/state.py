"""Saving a run's state into ``last.pt`` and restoring it on resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..checkpoint import Checkpoint
from ..config import TrainConfig
from ..distributed import Dist
from ..errors import UserError
from ..weights import check_state_dict, unwrap
from .rng import rng_state, set_rng_state
from .schedule import Plateau

if TYPE_CHECKING:
    from .run import Run


def check_resume(ckpt: Checkpoint, path: Path, cfg: TrainConfig, classes: list[str] | None = None) -> None:
    """One line saying how the checkpoint's model differs from this run's: architecture, then classes."""
    if ckpt.arch is not None and ckpt.arch != cfg.arch:
        raise UserError(f"--resume {path}: the checkpoint is an {ckpt.arch}, this run's --arch is {cfg.arch}")
    if classes is not None and ckpt.classes is not None and list(ckpt.classes) != list(classes):
        theirs, ours = list(ckpt.classes), list(classes)
        if len(theirs) != len(ours):
            what = f"{len(theirs)} classes, this data set has {len(ours)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
            what = f"class {i} {theirs[i]!r}, this data set's is {ours[i]!r}"
        raise UserError(f"--resume {path}: the checkpoint has {what}; resume on the data it was trained on")


def restore(ckpt: Checkpoint, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, plateau: Plateau, dist_info: Dist) -> dict:  # fmt: skip
    """Load ``ckpt``'s model, optimizer, scaler, schedule and RNG states; return its counters as ``Run`` fields
    (plus ``elapsed``, the seconds trained so far)."""
    if not ckpt.resumable:
        raise UserError(f"--resume {path}: a weights file without a training state; start a run from it with "
                        "--init-weights instead")  # fmt: skip
    check_state_dict(model, ckpt.model, source=str(path))
    model.load_state_dict(ckpt.model)
    try:
        optimizer.load_state_dict(ckpt.optimizer)
    except (
        ValueError,
        KeyError,
    ) as e:  # parameter groups differ: another --freeze, or --init-weights with a frozen body
        raise UserError(
            f"--resume {path}: its optimizer state does not fit this run's parameter groups ({e}): saved with "
            "another --freeze, or by an older alexnet (a 1-channel model's conv1 and, at crops of 63-94 px, fc6 "
            "now have groups of their own); start afresh from its weights with --init-weights"
        ) from None
    scaler.load_state_dict(ckpt.scaler or {})
    plateau.load_state_dict(ckpt.scheduler)
    set_rng_state(ckpt.rng)
    return {
        "start_epoch": ckpt.epoch,
        "start_batch": ckpt.batch_in_epoch,
        "step": ckpt.step,
        **_best(ckpt.best),
        "total_steps": ckpt.total_steps,
        "plan": list(ckpt.plan),
        # the loss of the epoch's first part, summed over all ranks: rank 0 carries it, the others start at zero
        "partial": ckpt.epoch_partial if dist_info.main and ckpt.batch_in_epoch else (0.0, 0),
        "elapsed": ckpt.elapsed,
    }


def save(run: Run, epoch: int, batch_in_epoch: int, name: str = "last.pt", partial: tuple[float, int] = (0.0, 0)):
    """Write ``RUN_DIR/checkpoints/NAME`` (rank 0 only): weights, training state and what loading needs."""
    if not run.dist.main:
        return
    ckpt = Checkpoint(
        model=unwrap(run.model).state_dict(),
        arch=run.cfg.arch,
        classes=list(run.data.classes),
        preprocess=run.data.preprocess,
        model_kwargs={"dropout": run.cfg.dropout},
        config=run.cfg.to_dict(),
        init_from=run.cfg.init_weights,
        epoch=epoch,
        batch_in_epoch=batch_in_epoch,
        step=run.step,
        total_steps=run.total_steps,
        plan=list(run.plan),
        best=stored_best(run.best, run.best_seen),
        epoch_partial=partial,
        elapsed=run.log.elapsed(),
        optimizer=run.optimizer.state_dict(),
        scheduler=run.plateau.state_dict(),
        scaler=run.scaler.state_dict(),
        rng=rng_state(),
    )
    ckpt.save(run.dir / "checkpoints" / name)


def stored_best(best: dict, seen: float | None) -> dict:
    """A checkpoint's ``best``: what chose best.pt, and ``seen``, the best epoch's value, only where that epoch was
    not saved (under a time budget, last.pt waits a minute)."""
    return best if seen is None or seen == best.get("value") else {**best, "seen": seen}


def _best(stored: dict) -> dict:
    """``best`` (what chose best.pt) and ``best_seen`` (the best epoch's value, saved or not: under a time budget not
    every epoch is) from a checkpoint's ``best``, so "best so far" means the same after a resume."""
    best = {k: v for k, v in stored.items() if k != "seen"}
    seen = stored.get("seen")
    return {"best": best, "best_seen": float(seen) if type(seen) in (int, float) else None}
