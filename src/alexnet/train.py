"""Training: ``train(TrainConfig) -> run directory``. One process, or DDP under ``torchrun`` (one node or several).

``train`` reads top to bottom: set up -> for each epoch: ``train_one_epoch`` (lr -> ``train_step`` -> occasional
log) -> ``end_of_epoch`` (validate, schedule, checkpoint, one log line) -> ``finish`` (final evaluation, pictures).
Checkpoints are atomic and resume bit for bit; SIGTERM / SIGINT save ``last.pt`` and raise ``Preempted``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .auto import epochs_for, parse_duration, plan_steps, resolve_auto
from .config import TrainConfig
from .device import autocast, choose_cpu_path, describe, resolve_device, resolve_precision, synchronize
from .distributed import Dist, Preempted, StopSignals, max_over_ranks, on_main, process_group, sum_over_ranks
from .errors import UserError
from .evaluate import evaluate, format_report
from .model import create_model
from .progress import progress
from .runlog import RunLog
from .weights import check_state_dict, load_checkpoint, read_file, save_checkpoint, unwrap

# ----------------------------------------------------------------------------------------------------------------
# small pure pieces (unit-tested)


def lr_factor(
    cfg: TrainConfig, step: int, steps_per_epoch: int, plateau_decays: int = 0, total_steps: int | None = None
) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based): linear warm-up from 1%, then the schedule.

    Cosine and linear decay to zero at ``total_steps`` (default ``cfg.epochs`` epochs). Under a time budget the
    total is unknown until the first steps are timed (``None`` and no ``cfg.epochs``): the peak lr until then."""
    warmup = (cfg.warmup_epochs or 0.0) * steps_per_epoch
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    if cfg.schedule in ("cosine", "linear"):
        total = total_steps if total_steps is not None else (cfg.epochs or 0) * steps_per_epoch
        if total <= 0:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
    if cfg.schedule == "step":
        return cfg.lr_decay ** ((step // steps_per_epoch) // cfg.step_epochs)
    if cfg.schedule == "plateau":
        return cfg.lr_decay**plateau_decays
    raise UserError(f"unknown schedule {cfg.schedule!r}; choose from cosine, step, plateau")


@dataclass
class Plateau:
    """paper §5: "divide the learning rate by 10 when the validation error rate stopped improving"."""

    patience: int
    max_decays: int
    best: float = -1.0
    bad_epochs: int = 0
    decays: int = 0

    def update(self, val_top1: float) -> None:
        if val_top1 > self.best + 1e-6:
            self.best, self.bad_epochs = val_top1, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.decays < self.max_decays:
            self.decays, self.bad_epochs = self.decays + 1, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "decays": self.decays}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs, self.decays = state["best"], state["bad_epochs"], state["decays"]


def rng_state() -> dict:
    """Python, numpy, torch and CUDA RNG states as plain tensors/ints (readable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One optimizer step on the batch ``x`` (B, 3, S, S), ``y`` (B,): forward (autocast to ``dtype``), backward,
    step. Returns the batch's mean loss, detached and still on the device (reading it syncs)."""
    with autocast(device, dtype):
        loss = criterion(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # a no-op scale unless fp16
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


# time budgets: the first steps of an epoch are timed, then the step count is fixed (auto.plan_steps)
CALIBRATION_SKIP = 5  # steps not timed (allocation, autotuning, compilation)
CALIBRATION_STEPS = 20  # steps timed (10 after 3 skipped measured 0.47 s per step where the run then took 0.36-0.41)
EVAL_COST = 0.3  # seconds of validation per image, in units of a training step's seconds per image (measured ~0.2)
SAVE_BYTES_PER_PARAM, SAVE_RATE = 8, 150e6  # a checkpoint holds weights + momentum (fp32); bytes/s measured here
BUDGET_SAVE_SECONDS = 60  # under a time budget, last.pt at an epoch end only if the last save is this old
BUDGET_MARGIN = 0.02  # of the budget, kept free (process exit, timing noise)


@dataclass
class Budget:
    """A time budget of ``seconds`` from ``started`` (``time.time()``), and the timing of an epoch's first steps."""

    seconds: float
    started: float
    first: int = 0  # batch indices [first, last) of this epoch are timed
    last: int = 0
    t0: float | None = None
    step_time: float | None = None

    def elapsed(self) -> float:
        return time.time() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def begin_epoch(self, start_batch: int, end: int) -> None:
        """Time steps of this epoch (from ``start_batch`` to ``end``): skip a few, then up to ``CALIBRATION_STEPS``."""
        skip = min(CALIBRATION_SKIP, max(0, end - start_batch - 2))
        self.first, self.last = start_batch + skip, min(end, start_batch + skip + CALIBRATION_STEPS)
        self.t0 = time.perf_counter() if skip == 0 else None

    def timed(self, batch_idx: int, device: torch.device) -> bool:
        """Call after step ``batch_idx``: True once the timed steps are done (``step_seconds`` is then known)."""
        if batch_idx + 1 == self.first:
            synchronize(device)
            self.t0 = time.perf_counter()
        elif batch_idx + 1 == self.last and self.t0 is not None:
            synchronize(device)
            self.step_time = (time.perf_counter() - self.t0) / (self.last - self.first)
            return True
        return False

    def step_seconds(self) -> float:
        assert self.step_time is not None
        return self.step_time


def best_improved(metric: str, value: float, best: float | None) -> bool:
    """Higher val top-1 or lower train loss than the best so far (None: no best yet)."""
    if best is None:
        return True
    return value > best if metric == "val_top1" else value < best


# ----------------------------------------------------------------------------------------------------------------
# setup


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}-{cfg.recipe}-{datetime.now():%Y%m%d-%H%M%S}"


RUN_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "metrics.csv")
OVERWRITTEN = (*RUN_FILES, "eval.json", "config.json", "tensorboard", "plots")


def find_run_dir(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume or None). Refuses the directory of another run (it has checkpoints or
    metrics) unless resuming or ``overwrite``. Reads only: ``clear_run_dir`` deletes, once the data is open too."""
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    resume = None
    if cfg.resume == "auto":
        resume = run_dir / "checkpoints" / "last.pt" if (run_dir / "checkpoints" / "last.pt").exists() else None
    elif cfg.resume:
        resume = Path(cfg.resume)
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not cfg.resume and not cfg.overwrite:
        raise UserError(
            f"--out {run_dir} holds another run ({', '.join(found)}); continue it with --resume auto, "
            "start it afresh with --overwrite, or choose another --out"
        )
    return run_dir, resume


def probe_writable(run_dir: Path) -> None:
    """``UserError`` unless ``run_dir`` can be created and written (a temp file in its nearest existing folder,
    deleted at once: nothing is left behind when a later check refuses the run)."""
    import tempfile

    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == Path("."))
    if not existing.is_dir():
        raise UserError(f"--out {run_dir}: cannot write there, {existing} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".alexnet-probe-"):
            pass
    except OSError as e:
        raise UserError(f"--out {run_dir}: cannot write in {existing} ({e.strerror or e})") from None


def clear_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """With ``overwrite``, delete the previous run's files; always, the temp files of a save that was killed."""
    if overwrite:
        for name in OVERWRITTEN:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for tmp in (run_dir / "checkpoints").glob(".*.tmp"):  # see weights.save_checkpoint
        tmp.unlink(missing_ok=True)


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    kwargs = {} if cfg.dropout is None else {"dropout": cfg.dropout}  # None (not resolved): the model's default
    if cfg.init is not None:
        kwargs["init"] = cfg.init
    model = create_model(cfg.arch, num_classes=num_classes, **kwargs)
    if cfg.init_weights:  # fine-tuning: everything but the last layer from the file, a new head for our classes
        sd = read_file(cfg.init_weights)["model"]
        head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.6.")}
        sd = {**{k: v for k, v in sd.items() if not k.startswith("classifier.6.")}, **head}
        check_state_dict(model, sd, source=cfg.init_weights)
        model.load_state_dict(sd)
    for name, p in model.named_parameters():
        if cfg.freeze == "features" and name.startswith("features."):
            p.requires_grad_(False)
        if cfg.freeze == "all-but-head" and not name.startswith("classifier.6."):
            p.requires_grad_(False)
    return model


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.SGD:
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.6.") and p.requires_grad]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.6.") and p.requires_grad]
    groups = [{"params": body, "lr_mult": 1.0}, {"params": head, "lr_mult": cfg.head_lr_mult}]
    groups = [g for g in groups if g["params"]]
    return sgd(
        groups,
        device,
        lr=cfg.lr or 0.0,  # set before every step (train_one_epoch); None: not yet chosen from the data
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def sgd(params, device: torch.device, **hyper) -> torch.optim.SGD:
    """``torch.optim.SGD`` with its fused kernel (one pass over all parameters) where this torch has one for
    ``device``, else the foreach one. On 2 CPU cores the update of AlexNet's 61M parameters took 34 ms fused against
    153 ms foreach, a third of a batch-32 step at 64 px: training steps ran 1.1-1.5x faster (batch 256-32; README,
    "Your own data")."""
    fused = fused_sgd_works(str(torch.device(device)))
    return torch.optim.SGD(params, **hyper, fused=fused or None, foreach=None if fused else True)


@functools.cache
def fused_sgd_works(device: str) -> bool:
    """Whether ``SGD(fused=True)`` steps on ``device`` (``"cpu"``, ``"cuda:1"``...) with this torch (CPU: torch >= 2.4);
    tried once per device, on that device (a DDP rank never touches another rank's GPU)."""
    p = torch.zeros(2, device=device, requires_grad=True)
    p.grad = torch.ones_like(p)
    try:
        torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True).step()
    except (RuntimeError, ValueError, TypeError):
        return False
    return bool(torch.allclose(p.detach(), torch.full_like(p, -0.1)))


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
    from .data.pipeline import build_data, open_training_data

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

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    dataset = open_training_data(cfg)
    cfg, choices = resolve_auto(cfg, dataset, dist_info.world_size)
    say = print if dist_info.main else (lambda line: None)
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
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
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
        log.print(describe(device, dtype) + (f", {dist_info.world_size} processes" if dist_info.enabled else ""))
        log.print(f"data: {data.description}; run: {run_dir}")
        if ckpt is not None:
            log.print(f"resumed from {resume_path} at epoch {run.start_epoch + 1}, batch {run.start_batch}, "
                      f"step {run.step}")  # fmt: skip
    return run


def choose_precision(cfg: TrainConfig, device: torch.device, num_classes: int, log) -> TrainConfig:
    """``cfg`` with ``precision`` and ``channels_last`` decided: bf16/fp16 + channels-last on GPUs; on a CPU what a
    short, cached measurement finds fastest (``device.choose_cpu_path``) for what is left ``auto``."""
    precision, channels_last = cfg.precision, cfg.channels_last
    if device.type == "cpu" and (precision == "auto" or channels_last is None):
        size, batch = cfg.image_size, cfg.batch_size
        fast_precision, fast_cl = choose_cpu_path(cfg.arch, num_classes, size, batch, precision=precision,
                                                  channels_last=channels_last, log=log)  # fmt: skip
        precision = fast_precision if precision == "auto" else precision
        channels_last = fast_cl if channels_last is None else channels_last
    if precision == "auto":
        dtype = resolve_precision("auto", device)
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    if channels_last is None:
        channels_last = device.type == "cuda"
    return dataclasses.replace(cfg, precision=precision, channels_last=channels_last)


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


# ----------------------------------------------------------------------------------------------------------------
# the run


def train(cfg: TrainConfig, *, stop_after_epoch: int | None = None, started: float | None = None) -> Path:
    """Train as ``cfg`` says; returns the run directory. Under torchrun, every rank calls this.

    Set up (``UserError`` for any mistake, before anything is written), then for each epoch: its steps, then
    validation, schedule, ``last.pt`` / ``best.pt`` and a log line; at the end the final evaluation and pictures.
    SIGTERM / SIGINT: the ranks finish their step, save ``last.pt`` and raise ``Preempted`` (the CLI exits 143 /
    130); a second signal stops at once. Signal handlers and the process group are as before when this returns.
    ``stop_after_epoch``: return after that many epochs, as if killed after the checkpoint (tests of resuming).
    ``started``: when the run began (``time.time()``; default: now), the start of ``cfg.time_budget``.
    """
    started = time.time() if started is None else started
    cfg.validate()
    with process_group(cfg.device) as dist_info:
        run = setup(cfg, dist_info, started)  # a signal here stops at once, as usual: there is nothing to save yet
        with run.log, StopSignals() as stop:
            epoch = run.start_epoch
            while epoch < run.epochs:  # run.epochs is fixed once a time budget's steps are planned
                loss, images, seconds, data_wait = train_one_epoch(run, epoch, stop)
                saved = end_of_epoch(run, epoch, loss, images, seconds, data_wait)
                check_stop(run, stop, epoch + 1, 0, saved=saved)  # a signal during validation
                epoch += 1
                if stop_after_epoch is not None and epoch >= stop_after_epoch:
                    return run.dir
            finish(run)
    return run.dir


def train_one_epoch(run: Run, epoch: int, stop: StopSignals) -> tuple[float, int, float, float]:
    """The epoch's steps from ``run.start_batch``: (mean train loss of the epoch and images of this session, both
    over all ranks; seconds; seconds spent waiting for data). The loss sum stays on the device until the end."""
    cfg, data = run.cfg, run.data
    run.train_model.train()
    data.train.set_epoch(epoch, run.start_batch)
    loss_dtype = torch.float32 if run.device.type == "mps" else torch.float64
    loss_sum = torch.tensor(run.partial[0], dtype=loss_dtype, device=run.device)  # sum of loss x batch size
    images, wait = run.partial[1], 0.0
    images_log = images
    t_epoch = t_log = time.perf_counter()
    end = epoch_end(run, epoch)
    bar = progress(end, f"epoch {epoch + 1}/{epochs_text(run)}", unit="step", initial=run.start_batch,
                   enabled=run.dist.main)  # fmt: skip
    batches = iter(data.train)
    if run.budget is not None and run.total_steps is None:
        run.budget.begin_epoch(run.start_batch, end)
    batch_idx = run.start_batch
    while batch_idx < end:
        t0 = time.perf_counter()
        x, y = next(batches)  # (B, 3, S, S) normalised on the device, (B,)
        wait += time.perf_counter() - t0
        run.lr = cfg.lr * lr_factor(cfg, run.step, run.steps_per_epoch, run.plateau.decays, run.total_steps)
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr * group["lr_mult"]
        loss = train_step(run.train_model, x, y, run.criterion, run.optimizer, run.scaler, run.device, run.dtype)
        loss_sum += loss * y.shape[0]
        run.step, images = run.step + 1, images + y.shape[0]
        bar.update(1)
        if run.budget is not None and run.total_steps is None and run.budget.timed(batch_idx, run.device):
            plan_budget(run, epoch)  # fixes run.total_steps; the epoch may now end sooner
            end = epoch_end(run, epoch)
            bar.set_total(end, f"epoch {epoch + 1}/{epochs_text(run)}")
        last = batch_idx == end - 1
        if run.step % cfg.log_every == 0 or last:
            now = time.perf_counter()
            rate = (images - images_log) * run.dist.world_size / max(now - t_log, 1e-9)
            t_log, images_log = now, images
            value = loss.item()  # .item() waits for the device: only at log steps
            run.log.step(epoch=epoch + 1, step=run.step, train_loss=value, lr=run.lr, img_per_s=rate,
                         data_wait=wait / max(now - t_epoch, 1e-9))  # fmt: skip
            bar.set_postfix_str(f"loss {value:.3f} lr {run.lr:.2e} {rate:.0f} img/s")
        if last or run.step % run.check_every == 0 or (not run.dist.enabled and (stop.signum or save_due(run))):
            check_stop(run, stop, epoch, batch_idx + 1, saved=False, loss_sum=loss_sum, images=images)
        batch_idx += 1
    bar.close()
    session = images - run.partial[1]  # images of this session (a resumed epoch's first part is in run.partial)
    run.start_batch, run.partial = 0, (0.0, 0)
    totals = torch.tensor([images, session], dtype=loss_dtype, device=run.device)
    loss_total, images, session = sum_over_ranks(torch.cat([loss_sum[None], totals]), run.dist).tolist()
    return loss_total / max(images, 1), int(session), time.perf_counter() - t_epoch, wait


def epoch_end(run: Run, epoch: int) -> int:
    """The batch index this epoch stops at: the whole epoch, or where a time budget's planned steps end."""
    if run.total_steps is None:
        return run.steps_per_epoch
    return max(0, min(run.steps_per_epoch, run.total_steps - epoch * run.steps_per_epoch))


def epochs_text(run: Run) -> str:
    return "?" if run.epochs >= 10**9 else str(run.epochs)


def plan_budget(run: Run, epoch: int) -> None:
    """Fix the time budget's step count from the timed steps (the slowest rank's), so that the steps, the epoch ends'
    validation and the checkpoints fit in what is left of ``cfg.time_budget``; print the plan."""
    budget, cfg, data = run.budget, run.cfg, run.data
    step_seconds = float(max_over_ranks(torch.tensor([budget.step_seconds()], device=run.device), run.dist)[0])
    per_image = step_seconds / (cfg.batch_size // run.dist.world_size)
    val_images = data.val.num_samples / run.dist.world_size if data.val is not None else 0
    eval_seconds = EVAL_COST * per_image * val_images  # a forward pass costs about a third of a training step
    params = sum(p.numel() for p in run.model.parameters())
    save_seconds = SAVE_BYTES_PER_PARAM * params / SAVE_RATE
    remaining = budget.remaining() - BUDGET_MARGIN * budget.seconds
    # last.pt at an epoch end at most once a minute (end_of_epoch), and at the last one
    final = save_seconds * (1 + remaining / max(BUDGET_SAVE_SECONDS, run.steps_per_epoch * step_seconds))
    if cfg.ten_crop_eval:
        final += 10 * eval_seconds
    max_steps = cfg.epochs * run.steps_per_epoch if cfg.epochs else None
    run.total_steps = plan_steps(remaining=remaining, step_seconds=step_seconds, steps_done=run.step,
                                 steps_per_epoch=run.steps_per_epoch, epoch_seconds=eval_seconds, final_seconds=final,
                                 max_steps=max_steps)  # fmt: skip
    run.epochs = max(epoch + 1, epochs_for(run.total_steps, run.steps_per_epoch))
    run.log.print(
        f"time budget {cfg.time_budget}: {budget.elapsed():.1f} s used by set-up and {run.step} steps; "
        f"{step_seconds:.3f} s per step (batch {cfg.batch_size}) -> {run.total_steps} steps in all "
        f"({run.total_steps / run.steps_per_epoch:.2f} epochs), lr decaying {cfg.schedule} to zero by then; "
        f"{run.epochs * eval_seconds + final:.0f} s kept for validation and checkpoints"
    )


def save_due(run: Run) -> bool:
    minutes = run.cfg.checkpoint_minutes
    return bool(minutes) and run.dist.main and time.time() - run.last_save > 60 * minutes


def check_stop(run: Run, stop: StopSignals, epoch: int, batch: int, *, saved: bool, loss_sum=None, images=0) -> None:
    """At a step every rank reaches: agree on a stop signal, a non-finite loss and a timed save (``--checkpoint-
    minutes``) of any rank, then act on them: fail without saving, or save ``last.pt`` (unless ``saved``), and on a
    signal raise ``Preempted``."""
    nonfinite = torch.zeros((), device=run.device) if loss_sum is None else (~torch.isfinite(loss_sum)).float()
    flags = torch.stack([torch.tensor(float(stop.signum or 0), device=run.device), nonfinite,
                         torch.tensor(float(save_due(run)), device=run.device)])  # fmt: skip
    signum, bad, due = (int(v) for v in max_over_ranks(flags, run.dist).tolist())  # waits for the device
    if bad:
        good = run.dir / "checkpoints" / "last.pt"
        where = f"the last good checkpoint is {good}" if good.exists() else "no checkpoint was written yet"
        raise UserError(
            f"training loss became non-finite by step {run.step}; stopped without saving these weights; {where}. "
            "Lower --lr, add --warmup-epochs, or use --precision fp32."
        )
    if (signum or due) and not saved:
        partial = (0.0, 0)
        if loss_sum is not None:  # the epoch's loss so far, over all ranks, so the resumed epoch's mean is whole
            totals = torch.stack([loss_sum, torch.tensor(images, dtype=loss_sum.dtype, device=run.device)])
            s, n = sum_over_ranks(totals, run.dist).tolist()
            partial = (s, int(n))
        save(run, epoch, batch, partial=partial)
        run.last_save = time.time()
    if signum:
        name = {15: "SIGTERM", 2: "SIGINT"}.get(signum, f"signal {signum}")
        path = run.dir / "checkpoints" / "last.pt"
        message = (f"stopped by {name} at step {run.step} (epoch {epoch + (batch > 0)}); saved {path}; resume with: "
                   f"alexnet train --out {run.dir} --resume auto (same data and flags)")  # fmt: skip
        raise Preempted(signum, str(path), message)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link (no second 0.5 GB write), else a copy."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def end_of_epoch(run: Run, epoch: int, loss: float, images: int, seconds: float, data_wait: float) -> bool:
    """Validate, step the plateau schedule, write ``last.pt`` (and ``best.pt`` when the chosen metric improved:
    val top-1, or the epoch's train loss without a val split), one metrics record and one console line. Returns
    whether ``last.pt`` was written."""
    data, report = run.data, None
    if data.val is not None:
        data.val.set_epoch(epoch)
        report = evaluate(run.train_model if not run.dist.enabled else run.model, data.val,
                          num_classes=len(data.classes), classes=data.classes, device=run.device, dtype=run.dtype,
                          distributed=run.dist.enabled)  # fmt: skip
        run.plateau.update(report["top1"])
    run.report = report
    metric, value = ("val_top1", report["top1"]) if report else ("train_loss", loss)
    # Under a time budget a 61M-parameter checkpoint (0.5 GB, ~3 s here) at every end of a seconds-long epoch would
    # eat the budget: last.pt then waits BUDGET_SAVE_SECONDS (a signal still saves at once), and best.pt is the best
    # of the saved epochs.
    final = epoch + 1 >= run.epochs
    saving = run.budget is None or final or time.time() - run.last_save >= BUDGET_SAVE_SECONDS
    previous = run.best.get("value") if run.best.get("metric") == metric else None
    is_best = saving and best_improved(metric, value, previous)
    if is_best:
        run.best = {"metric": metric, "value": value, "epoch": epoch + 1}
    if saving:
        save(run, epoch + 1, 0)
        run.last_save = time.time()
    if is_best and run.dist.main:
        copy_checkpoint(run.dir / "checkpoints" / "last.pt", run.dir / "checkpoints" / "best.pt")
    rate = images / max(seconds, 1e-9)
    val = {f"val_{k}": report[k] if report else None for k in ("loss", "top1", "top5")}
    run.log.epoch(epoch=epoch + 1, step=run.step, train_loss=loss, **val, lr=run.lr, img_per_s=rate,
                  data_wait=data_wait / max(seconds, 1e-9), best_metric=metric, is_best=is_best)  # fmt: skip
    summary = f"epoch {epoch + 1}/{epochs_text(run)}: train loss {loss:.4f}"
    if report:
        summary += f", val loss {report['loss']:.4f}, top-1 {100 * report['top1']:.2f}%"
        summary += f", top-5 {100 * report['top5']:.2f}%"
    run.log.print(summary + f", {rate:.0f} img/s, {seconds:.1f} s" + (", best so far" if is_best else ""))
    return saving


def finish(run: Run) -> None:
    """The final report on the whole val split (ten crops with ``--ten-crop-eval``; all ranks evaluate their shard
    and the sums are all-reduced), written by rank 0 to ``eval.json``; then the pictures."""
    data, cfg = run.data, run.cfg
    if data.val is not None:
        kw = dict(num_classes=len(data.classes), classes=data.classes, device=run.device, dtype=run.dtype,
                  distributed=run.dist.enabled)  # fmt: skip
        report = run.report
        if cfg.ten_crop_eval:
            report = {**evaluate(run.model, data.val_ten_crop(), **kw), "ten_crop": True}
        elif report is None:  # resumed after the last epoch: no validation ran in this session
            data.val.set_epoch(run.epochs)
            report = evaluate(run.model, data.val, **kw)
        if run.dist.main:
            (run.dir / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
            run.log.print("final evaluation: " + format_report(report, max_classes=5))
    if cfg.plots and run.dist.main:
        from .plots import make_plots

        for path in make_plots(run.dir):
            run.log.print(f"wrote {path}")
    ckpt_dir = run.dir / "checkpoints"
    run.log.print(f"run: {run.dir}  checkpoints: {ckpt_dir}/{{last,best}}.pt  metrics: {run.dir / 'metrics.jsonl'}")
