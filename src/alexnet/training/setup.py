"""Setting a run up: device, run folder, data, settings from the data, model, optimizer, and the state of a resumed
run. Everything is checked before the run folder is written."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..auto import epochs_for
from ..config import PATH_SETTINGS, TrainConfig, parse_duration
from ..data.channels import choose_in_channels
from ..data.holdout import is_held_out, read_split, run_dir_of, write_split
from ..data.wide_gray import sampled_advice
from ..device import describe, keep_freed_memory, resolve_device, resolve_precision
from ..distributed import Dist, on_main
from ..errors import UserError
from ..imbalance import balanced_weights, class_counts, describe_weights
from ..runlog import RunLog
from ..text import plural
from .budget import Budget, cpu_threads
from .cpu_path import choose_precision
from .finetune import check_pretrained, resolve_settings
from .resume import resumed_config
from .rng import seed_everything
from .run import Run
from .run_dir import RunLock, check_finished, clear_run_dir, find_run_dir, probe_writable
from .schedule import Plateau, lr_factor
from .state import check_resume, restore
from .step import build_model, build_optimizer


def setup(
    cfg: TrainConfig,
    dist_info: Dist,
    started: float | None = None,
    given: Collection[str] | None = None,
    lock: RunLock | None = None,
) -> Run:
    """Device and precision, run directory (locked with ``lock`` on rank 0, then refused before anything is read if
    it holds another run), checkpoint to
    resume (its own settings restored: ``resume.resumed_config``), data, settings chosen from the data
    (``alexnet.auto``), model, optimizer; restores the training state when resuming. ``started``: when the run began
    (``time.time()``), for ``cfg.time_budget``; ``given``: the settings the user gave (see ``train``)."""
    say = print if dist_info.main else (lambda line: None)
    cfg = absolute_data_paths(cfg)  # stored in the checkpoint: evaluate and resume find the data from anywhere
    device = _device(cfg, dist_info)
    run_dir, resume_path = _run_dir(cfg, dist_info, say, lock)
    ckpt = checkpoint.load(resume_path) if resume_path else None
    if ckpt is not None:
        cfg = resumed_config(cfg, ckpt, resume_path, given, say)
        check_resume(ckpt, resume_path, cfg)
    if cfg.init_weights:
        check_pretrained(cfg.init_weights)  # present and weights, or one line saying what is wrong
    seed_everything(cfg.seed)
    stored_split = read_split(run_dir_of(resume_path)) if ckpt is not None else None  # a held-out split's files
    cfg, data = _data(cfg, dist_info, device, say, stored_split)
    if ckpt is not None:
        check_resume(ckpt, resume_path, cfg, data.classes)
    dtype = resolve_precision(cfg.precision, device)
    model = build_model(cfg, len(data.classes), log=say if ckpt is None else None).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    plateau = Plateau(cfg.plateau_patience, cfg.plateau_max_decays)
    state = restore(ckpt, resume_path, model, optimizer, scaler, plateau, dist_info) if ckpt else {}
    train_model = _wrap(model, cfg, device, dist_info)
    steps_per_epoch = min(len(data.train), cfg.max_steps_per_epoch or len(data.train))
    # Under DDP the ranks agree (a collective) on stopping and on non-finite losses. On a GPU that read waits for
    # the device, so it happens at log steps only; on CPUs, where every op is synchronous anyway, it is cheap: a
    # gloo all-reduce of three numbers between two ranks took 0.3 ms (median; 3.5 ms p90 on a loaded 2-core VM)
    # against 0.3-1 s per AlexNet step at 64 px there, so the ranks agree every step and stop within one.
    check_every = 1 if device.type == "cpu" and dist_info.enabled else cfg.log_every
    epochs, finished = _epochs(cfg, state, steps_per_epoch, run_dir, resume_path)
    if dist_info.main:  # everything is checked: from here on the run directory is written
        clear_run_dir(run_dir, overwrite=cfg.overwrite, finished=finished)
    elapsed = state.pop("elapsed", 0.0)  # seconds trained before this session: a resumed budget has the rest
    log = RunLog(run_dir, enabled=dist_info.main, resume_step=state.get("step"), elapsed=elapsed)
    criterion = _criterion(cfg, data, device, say)
    run = Run(cfg, dist_info, run_dir, device, dtype, data, model, train_model, optimizer, scaler, plateau, criterion,
              log, steps_per_epoch, check_every, **state)  # fmt: skip
    if cfg.time_budget:
        whole = parse_duration(cfg.time_budget)
        run.budget = Budget(whole - elapsed, started if started is not None else time.time(), whole)
        run.threads = cpu_threads(device, dist_info.enabled, run.log.print)
    run.epochs = epochs  # under a time budget, planned once the first steps are timed (plan_budget)
    run.lr = cfg.lr * lr_factor(cfg, run.step, steps_per_epoch, plateau.decays, run.total_steps, run.plan)
    if dist_info.main:
        _announce(run, resume_path if ckpt is not None else None)
    return run


def _epochs(
    cfg: TrainConfig, state: dict, steps_per_epoch: int, run_dir: Path, resume_path: Path | None
) -> tuple[int, Path | None]:
    """The epochs to run: those of a time budget's plan when resumed after one, else ``cfg.epochs`` (under a time
    budget not yet planned: "until the first steps are timed"); and the checkpoint of a finished run resumed into
    another folder, or None. A finished run resumed in its own folder stops here: ``check_finished``."""
    total = state.get("total_steps")
    epochs = epochs_for(total, steps_per_epoch) if total is not None else cfg.epochs or 10**9
    if not state:
        return epochs, None
    return epochs, check_finished(run_dir, resume_path, state["start_epoch"], state["start_batch"], epochs)


def _run_dir(cfg: TrainConfig, dist_info: Dist, say, lock: RunLock | None) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume or None): ``find_run_dir``, writable (before minutes of data loading, not
    after); ``--resume auto`` where there is no checkpoint says that it starts a new run (a mistyped ``--out`` looked
    like a resumed run)."""
    run_dir, resume_path = on_main(lambda: find_run_dir(cfg, lock), dist_info)
    on_main(lambda: probe_writable(run_dir), dist_info)
    if cfg.resume == "auto" and resume_path is None:
        builtin = "" if cfg.data or cfg.train_dir else " on the built-in data (no DATA given)"
        say(f"--resume auto: no checkpoint in {run_dir / 'checkpoints'}: starting a new run{builtin}")
    return run_dir, resume_path


def absolute_data_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``data``, ``train_dir`` and ``val_dir`` absolute (a relative one stored in a checkpoint only
    worked from the folder the run was started in)."""
    paths = {name: os.path.abspath(getattr(cfg, name)) for name in PATH_SETTINGS if getattr(cfg, name)}
    return dataclasses.replace(cfg, **paths) if paths else cfg


def _device(cfg: TrainConfig, dist_info: Dist) -> torch.device:
    """The run's device (this rank's GPU under DDP), with cuDNN autotuning and TF32 on for CUDA; on a CPU in one
    process, the memory a step frees kept for the next (``keep_freed_memory``)."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif not dist_info.enabled:  # under DDP on CPUs a SIGTERM to one rank then ended it in std::terminate, 1 in 7
        keep_freed_memory()  # 1.4-2x the steps per second of AlexNet on a CPU (alexnet.device)
    return device


def _data(cfg: TrainConfig, dist_info: Dist, device: torch.device, say, stored_split) -> tuple[TrainConfig, Any]:
    """Open the data (a resumed run's held-out split as stored), choose what is left ``auto`` from it (printed),
    decide the precision, build the loaders."""
    from ..data.pipeline import build_data, data_geometry, open_training_data

    dataset = open_training_data(cfg, stored_split=stored_split, log=say)
    cfg, choices = resolve_settings(cfg, dataset, dist_info.world_size, say)  # resolve_auto, and fine-tuning's
    cfg, gray = choose_in_channels(cfg, dataset)  # --in-channels auto: 1 for a grayscale set
    choices = [*choices, gray] if gray else choices
    if choices:
        say("chosen from the data: " + "; ".join(choices) + " (flags override)")
    if cfg.window == "auto":  # a window given is the user's answer to the warning
        for line in sampled_advice(dataset.train):  # data check's, from a sample: e.g. 12-bit values in 16-bit files
            say(f"warning: {line}")
    data_geometry(cfg, dataset)  # a pack that cannot give the crop: said before the CPU-path measurement
    cfg = on_main(lambda: choose_precision(cfg, device, say), dist_info)
    data = build_data(cfg, dataset, device=device, rank=dist_info.rank, world_size=dist_info.world_size,
                      channels_last=cfg.channels_last, log=say)  # fmt: skip
    if len(data.train) == 0:
        n = getattr(data.train, "num_samples", None)
        fits = n - n % dist_info.world_size if n else None
        raise UserError(
            f"the training set has {n if n is not None else 'fewer'} images, fewer than one batch "
            f"(--batch-size {cfg.batch_size}); lower --batch-size" + (f" to {fits} or less" if fits else "")
        )
    return cfg, data


def _criterion(cfg: TrainConfig, data: Any, device: torch.device, say) -> nn.Module:
    """Cross-entropy with label smoothing; with ``--balance``, each class weighted by its inverse frequency."""
    weight = balanced_weights(class_counts(data.dataset.train.labels, len(data.classes))) if cfg.balance else None
    if weight is not None:
        say(describe_weights(weight, data.classes))
    return nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device),
                               label_smoothing=cfg.label_smoothing)  # fmt: skip


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device, dist_info: Dist) -> nn.Module:
    """The module the steps run: compiled (default on CUDA) and/or DDP-wrapped."""
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    train_model = torch.compile(model) if use_compile else model
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
    return train_model


def _announce(run: Run, resumed_from: Path | None) -> None:
    """Write ``config.json`` and print the device, the data and where a resumed run continues."""
    (run.dir / "config.json").write_text(json.dumps(run.cfg.to_dict(), indent=2) + "\n")
    if is_held_out(run.data.dataset):  # its file lists, for evaluate, plot and resume
        write_split(run.dir, run.data.dataset, run.cfg.val_fraction, run.cfg.seed)
    run.log.print(describe(run.device, run.dtype) + (f", {run.dist.world_size} processes" if run.dist.enabled else ""))
    run.log.print(f"data: {run.data.description}; run: {run.dir}")
    if resumed_from is not None and run.start_epoch >= run.epochs and not run.start_batch:  # see check_finished
        run.log.print(f"{resumed_from} finished its {plural(run.epochs, 'epoch')}: nothing to train; it is "
                      f"{run.dir / 'checkpoints' / 'last.pt'} now, and the final report is made again")  # fmt: skip
    elif resumed_from is not None:
        run.log.print(f"resumed from {resumed_from} at epoch {run.start_epoch + 1}, batch {run.start_batch}, "
                      f"step {run.step}")  # fmt: skip
