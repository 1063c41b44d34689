"""Setting a run up: device, run folder, data, settings from the data, model, optimizer, and the state of a resumed
run. Everything is checked before the run folder is written."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..auto import epochs_for, parse_duration, resolve_auto
from ..config import TrainConfig
from ..device import describe, resolve_device, resolve_precision
from ..distributed import Dist, on_main
from ..errors import UserError
from ..imbalance import balanced_weights, class_counts, describe_weights
from ..runlog import RunLog
from ..weights import load_checkpoint
from .budget import Budget
from .cpu_path import choose_precision
from .rng import seed_everything
from .run_dir import clear_run_dir, find_run_dir, probe_writable
from .schedule import Plateau, lr_factor
from .state import check_resume, restore
from .step import build_model, build_optimizer


@dataclass
class Run:
    """What the training functions share: the settings, the hardware, the data, the model and optimisation state."""

    cfg: TrainConfig
    dist: Dist
    dir: Path
    device: torch.device
    dtype: torch.dtype
    data: Any  # a DataBundle: .train, .val, .classes, .preprocess, .description, .val_ten_crop()
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
    budget: Budget | None = None
    start_epoch: int = 0
    start_batch: int = 0
    step: int = 0
    lr: float = 0.0
    best: dict = field(default_factory=dict)  # {"metric", "value", "epoch"}: what chose best.pt
    report: dict | None = None  # the last validation report
    partial: tuple[float, int] = (0.0, 0)  # (loss sum, images) of an epoch stopped part-way, over all ranks
    last_save: float = field(default_factory=time.time)


def setup(cfg: TrainConfig, dist_info: Dist, started: float | None = None) -> Run:
    """Device and precision, run directory (refused before anything is read if it holds another run), checkpoint to
    resume, data, settings chosen from the data (``alexnet.auto``), model, optimizer; restores the training state
    when resuming. ``started``: when the run began (``time.time()``), for ``cfg.time_budget``."""
    from ..data.pipeline import build_data, open_training_data

    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.init_weights and not Path(cfg.init_weights).is_file():
        raise UserError(f"--init-weights {cfg.init_weights}: no such file")
    run_dir, resume_path = on_main(lambda: find_run_dir(cfg), dist_info)
    on_main(lambda: probe_writable(run_dir), dist_info)  # before minutes of data loading, not after
    ckpt = load_checkpoint(resume_path) if resume_path else None
    if ckpt is not None:
        check_resume(ckpt, resume_path, cfg)

    seed_everything(cfg.seed)
    from ..data.holdout import is_held_out, read_split, run_dir_of, write_split

    say = print if dist_info.main else (lambda line: None)
    dataset = open_training_data(cfg, stored_split=read_split(run_dir_of(resume_path)) if ckpt else None, log=say)
    cfg, choices = resolve_auto(cfg, dataset, dist_info.world_size)
    if choices:
        say("chosen from the data: " + "; ".join(choices) + " (flags override)")
    cfg = on_main(lambda: choose_precision(cfg, device, len(dataset.classes), say), dist_info)
    dtype = resolve_precision(cfg.precision, device)
    channels_last = cfg.channels_last
    data = build_data(cfg, dataset, device=device, rank=dist_info.rank, world_size=dist_info.world_size,
                      channels_last=channels_last, log=say)  # fmt: skip
    if len(data.train) == 0:
        n = getattr(data.train, "num_samples", None)
        fits = n - n % dist_info.world_size if n else None
        raise UserError(
            f"the training set has {n if n is not None else 'fewer'} images, fewer than one batch "
            f"(--batch-size {cfg.batch_size}); lower --batch-size" + (f" to {fits} or less" if fits else "")
        )
    if ckpt is not None:
        check_resume(ckpt, resume_path, cfg, data.classes)
    model = build_model(cfg, len(data.classes)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    plateau = Plateau(cfg.plateau_patience, cfg.plateau_max_decays)
    state = restore(ckpt, resume_path, model, optimizer, scaler, plateau, dist_info) if ckpt else {}
    train_model = torch.compile(model) if use_compile else model
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
    steps_per_epoch = min(len(data.train), cfg.max_steps_per_epoch or len(data.train))
    # Under DDP the ranks agree (a collective) on stopping and on non-finite losses. On a GPU that read waits for
    # the device, so it happens at log steps only; on CPUs, where every op is synchronous anyway, it is cheap: a
    # gloo all-reduce of three numbers between two ranks took 0.3 ms (median; 3.5 ms p90 on a loaded 2-core VM)
    # against 0.3-1 s per AlexNet step at 64 px there, so the ranks agree every step and stop within one.
    check_every = 1 if device.type == "cpu" and dist_info.enabled else cfg.log_every
    if dist_info.main:  # everything is checked: from here on the run directory is written
        clear_run_dir(run_dir, overwrite=cfg.overwrite)
    log = RunLog(run_dir, enabled=dist_info.main, resume_step=state.get("step"), elapsed=state.pop("elapsed", 0.0))
    weight = balanced_weights(class_counts(data.dataset.train.labels, len(data.classes))) if cfg.balance else None
    if weight is not None:
        say(describe_weights(weight, data.classes))
    criterion = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device),
                                    label_smoothing=cfg.label_smoothing)  # fmt: skip
    run = Run(cfg, dist_info, run_dir, device, dtype, data, model, train_model, optimizer, scaler, plateau, criterion,
              log, steps_per_epoch, check_every, **state)  # fmt: skip
    if cfg.time_budget:
        run.budget = Budget(parse_duration(cfg.time_budget), started if started is not None else time.time())
    if run.total_steps is not None:  # resumed after a time budget's plan
        run.epochs = epochs_for(run.total_steps, steps_per_epoch)
    else:  # under a time budget not yet planned: until the first steps are timed (plan_budget)
        run.epochs = cfg.epochs or 10**9
    run.lr = cfg.lr * lr_factor(cfg, run.step, steps_per_epoch, plateau.decays, run.total_steps)
    if dist_info.main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if is_held_out(dataset):  # its file lists, for evaluate, plot and resume
            write_split(run_dir, dataset, cfg.val_fraction, cfg.seed)
        log.print(describe(device, dtype) + (f", {dist_info.world_size} processes" if dist_info.enabled else ""))
        log.print(f"data: {data.description}; run: {run_dir}")
        if ckpt is not None:
            log.print(f"resumed from {resume_path} at epoch {run.start_epoch + 1}, batch {run.start_batch}, "
                      f"step {run.step}")  # fmt: skip
    return run
