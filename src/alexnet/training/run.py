"""``Run``: what the training functions share: the settings, the hardware, the data, the model and the state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import TrainConfig
from ..distributed import Dist
from ..runlog import RunLog
from .budget import Budget, CpuThreads
from .schedule import Plateau

if TYPE_CHECKING:
    from ..data.pipeline import DataBundle


@dataclass
class Run:
    """What the training functions share: the settings, the hardware, the data, the model and optimisation state."""

    cfg: TrainConfig
    dist: Dist
    dir: Path
    device: torch.device
    dtype: torch.dtype
    data: DataBundle  # .train, .val, .classes, .preprocess, .description, .val_ten_crop()
    model: nn.Module  # the plain module (checkpoints, evaluation under DDP)
    train_model: nn.Module  # the same, compiled and/or DDP-wrapped
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler
    plateau: Plateau
    criterion: nn.Module
    log: RunLog
    steps_per_epoch: int
    check_every: int  # steps between the ranks' checks for stop signals and non-finite losses (see setup)
    epochs: int = 0  # epochs to run: cfg.epochs, or under a time budget what the planned steps need
    total_steps: int | None = None  # the planned optimizer steps of a time budget (None: not planned / no budget)
    plan: list[tuple[int, int, int]] = field(default_factory=list)  # a budget's plans: (step, total, µs per step)
    budget: Budget | None = None
    threads: CpuThreads | None = None  # under a time budget on a CPU: the thread count that runs fastest now
    start_epoch: int = 0
    start_batch: int = 0
    step: int = 0
    lr: float = 0.0
    best: dict = field(default_factory=dict)  # {"metric", "value", "epoch"}: what chose best.pt
    best_seen: float | None = None  # the best value of any epoch (under a budget, not every epoch is saved)
    report: dict | None = None  # the last validation report
    final_report: dict | None = None  # the last epoch's validation on the whole val split (mirrored with flip_eval)
    final_step: int = -1  # the step it was made at: the final report reuses it only for those weights
    partial: tuple[float, int] = (0.0, 0)  # (loss sum, images) of an epoch stopped part-way, over all ranks
    last_save: float = field(default_factory=time.time)
