"""Training: ``train(TrainConfig) -> run directory``. Single process or DDP under ``torchrun``.

The seed tutorial's script, done right: data on the device in the right form, eval mode for evaluation, exact
resume from crash-safe checkpoints, one log line per epoch. The loop in ``train`` reads top to bottom:
set up -> for each epoch: steps (lr -> forward -> backward -> step -> occasional log) -> validate -> checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .config import TrainConfig
from .device import autocast, describe, resolve_device, resolve_precision
from .errors import UserError
from .evaluate import evaluate, format_report
from .model import create_model
from .runlog import RunLog
from .weights import load_checkpoint, read_file, save_checkpoint, unwrap

# ----------------------------------------------------------------------------------------------------------------
# small pure pieces (unit-tested)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int, plateau_decays: int = 0) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based): linear warm-up from 1%, then the schedule."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
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


# ----------------------------------------------------------------------------------------------------------------
# setup


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    info = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}-{cfg.recipe}-{datetime.now():%Y%m%d-%H%M%S}"


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    kwargs = {"dropout": cfg.dropout}
    if cfg.init is not None:
        kwargs["init"] = cfg.init
    model = create_model(cfg.arch, num_classes=num_classes, **kwargs)
    if cfg.init_weights:  # fine-tuning: everything but the last layer from the file, a new head for our classes
        sd = read_file(cfg.init_weights)["model"]
        head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.6.")}
        sd = {**{k: v for k, v in sd.items() if not k.startswith("classifier.6.")}, **head}
        from .weights import check_state_dict

        check_state_dict(model, sd, source=cfg.init_weights)
        model.load_state_dict(sd)
    if cfg.freeze not in ("none", "features", "all-but-head"):
        raise UserError(f"--freeze {cfg.freeze!r}: choose none, features or all-but-head")
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
    fused = device.type == "cuda"  # one kernel for all parameters; foreach elsewhere
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
        foreach=None if fused else True,
    )


def _install_stop_handler() -> dict:
    """SIGTERM / Ctrl-C set a flag; the loop finishes its step, saves last.pt and returns."""
    state = {"stop": False}

    def handler(signum, frame):
        if state["stop"]:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        state["stop"] = True
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step and saving", file=sys.stderr)

    try:
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. called from a worker thread): no handler
        pass
    return state


# ----------------------------------------------------------------------------------------------------------------
# the run


def train(cfg: TrainConfig, *, stop_after_epoch: int | None = None) -> Path:
    """Train according to ``cfg``; returns the run directory. ``stop_after_epoch`` ends this call after that many
    epochs (as if killed after the checkpoint), which tests use to check that resuming is exact."""
    from .data.pipeline import build_data

    dist_info = setup_distributed(cfg.device)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    dtype = resolve_precision(cfg.precision, device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    resume_path = None
    if cfg.resume:
        resume_path = ckpt_dir / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
        if cfg.resume == "auto" and not resume_path.exists():
            resume_path = None  # nothing to resume yet: start fresh
    ckpt = load_checkpoint(resume_path) if resume_path else None

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    data = build_data(cfg, device=device, rank=dist_info.rank, world_size=dist_info.world_size,
                      channels_last=channels_last)  # fmt: skip
    model = build_model(cfg, len(data.classes)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    plateau = Plateau(cfg.plateau_patience, cfg.plateau_max_decays)
    start_epoch, start_batch, step, best_top1 = 0, 0, 0, -1.0
    if ckpt is not None:
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        plateau.load_state_dict(ckpt["scheduler"])
        start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        best_top1 = ckpt["best_top1"]
        set_rng_state(ckpt["rng"])
    train_model = model
    if use_compile:
        train_model = torch.compile(model)
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)

    log = RunLog(run_dir, enabled=dist_info.main)
    if dist_info.main:
        import json

        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        log.print(describe(device, dtype) + (f", {dist_info.world_size} processes" if dist_info.enabled else ""))
        log.print(f"data: {data.description}; {len(data.classes)} classes; run: {run_dir}")
        if ckpt is not None:
            log.print(f"resumed from {resume_path} at epoch {start_epoch + 1}, batch {start_batch}, step {step}")

    def checkpoint(epoch: int, batch_in_epoch: int, name: str = "last.pt") -> None:
        if not dist_info.main:
            return
        payload = {
            "arch": cfg.arch,
            "num_classes": len(data.classes),
            "model_kwargs": {"dropout": cfg.dropout},
            "model": unwrap(model).state_dict(),
            "classes": list(data.classes),
            "preprocess": data.preprocess,
            "config": cfg.to_dict(),
            "epoch": epoch,  # the epoch to run next (or to continue, with batch_in_epoch > 0)
            "batch_in_epoch": batch_in_epoch,
            "step": step,
            "best_top1": best_top1,
            "optimizer": optimizer.state_dict(),
            "scheduler": plateau.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "init_from": cfg.init_weights,
        }
        save_checkpoint(payload, ckpt_dir / name)

    stop = _install_stop_handler()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # set on the device, read at log steps
    steps_per_epoch = len(data.train)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    last_save = time.time()
    report = None

    for epoch in range(start_epoch, cfg.epochs):
        # ---- train one epoch
        train_model.train()
        data.train.set_epoch(epoch, start_batch)
        bar = _progress(steps_per_epoch, start_batch, epoch, cfg.epochs, enabled=dist_info.main)
        t_epoch = t_log = time.perf_counter()
        wait, seen, seen_log, loss_sum, loss_count = 0.0, 0, 0, 0.0, 0
        batches = iter(data.train)
        for batch_idx in range(start_batch, steps_per_epoch):
            t0 = time.perf_counter()
            try:
                x, y = next(batches)  # (B, 3, S, S) normalised on the device, (B,)
            except StopIteration:
                break
            wait += time.perf_counter() - t0
            lr = cfg.lr * lr_factor(cfg, step, steps_per_epoch, plateau.decays)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            with autocast(device, dtype):
                loss = criterion(train_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            nonfinite |= ~torch.isfinite(loss.detach())
            step += 1
            seen += y.shape[0]
            bar.update(1)
            if step % cfg.log_every == 0 or batch_idx == steps_per_epoch - 1:
                loss_value = loss.item()  # .item() syncs with the device: only at log steps
                if nonfinite.item():
                    _fail_nonfinite(step, ckpt_dir, loss_value)
                loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
                now = time.perf_counter()
                rate = (seen - seen_log) * dist_info.world_size / max(now - t_log, 1e-9)
                t_log, seen_log = now, seen
                data_wait = wait / max(now - t_epoch, 1e-9)
                log.step(epoch=epoch + 1, step=step, train_loss=loss_value, lr=lr, img_per_s=rate, data_wait=data_wait)
                bar.set_postfix_str(f"loss {loss_value:.3f} lr {lr:.2e} {rate:.0f} img/s data {100 * data_wait:.0f}%")
                if not bar.is_tty:
                    log.print(
                        f"epoch {epoch + 1}/{cfg.epochs} step {batch_idx + 1}/{steps_per_epoch} " + bar.postfix_str
                    )
            stop_now = stop["stop"]
            if dist_info.enabled and (step % cfg.log_every == 0 or stop_now):  # all ranks agree to stop
                flag = torch.tensor([float(stop_now)], device=device)
                dist.all_reduce(flag)
                stop_now = flag.item() > 0
            if stop_now:
                if nonfinite.item():
                    _fail_nonfinite(step, ckpt_dir, float("nan"))
                checkpoint(epoch, batch_idx + 1)
                bar.close()
                log.print(f"saved {ckpt_dir / 'last.pt'} at epoch {epoch + 1}, step {step}.")
                log.print(f"resume with: alexnet train --out {run_dir} --resume auto (same data and flags)")
                log.close()
                return run_dir
            if cfg.checkpoint_minutes and time.time() - last_save > 60 * cfg.checkpoint_minutes:
                if not nonfinite.item():
                    checkpoint(epoch, batch_idx + 1)
                last_save = time.time()
        bar.close()
        start_batch = 0
        epoch_time = time.perf_counter() - t_epoch
        if nonfinite.item():
            _fail_nonfinite(step, ckpt_dir, float("nan"))
        if data.train.bad_files and dist_info.main:
            log.print(f"epoch {epoch + 1}: skipped {len(data.train.bad_files)} unreadable images (listed above)")

        # ---- validate, schedule, checkpoint, one summary line
        report = None
        if data.val is not None:
            data.val.set_epoch(epoch)
            report = evaluate(train_model if not dist_info.enabled else model, data.val,
                              num_classes=len(data.classes), classes=data.classes, device=device, dtype=dtype,
                              distributed=dist_info.enabled)  # fmt: skip
            plateau.update(report["top1"])
        val_top1 = report["top1"] if report else -loss_sum / max(loss_count, 1)
        improved = val_top1 > best_top1
        best_top1 = max(best_top1, val_top1)
        checkpoint(epoch + 1, 0)
        if improved:
            checkpoint(epoch + 1, 0, "best.pt")
        last_save = time.time()
        train_loss = loss_sum / max(loss_count, 1)
        rate = seen * dist_info.world_size / max(epoch_time, 1e-9)
        log.epoch(epoch=epoch + 1, step=step, train_loss=train_loss, val_loss=report["loss"] if report else None,
                  val_top1=report["top1"] if report else None, val_top5=report["top5"] if report else None,
                  lr=lr, img_per_s=rate, data_wait=wait / max(epoch_time, 1e-9))  # fmt: skip
        summary = f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}"
        if report:
            summary += f", val loss {report['loss']:.4f}, top-1 {100 * report['top1']:.2f}%"
            summary += f", top-5 {100 * report['top5']:.2f}%"
        log.print(summary + f", {rate:.0f} img/s, {epoch_time:.1f} s")
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            log.close()
            return run_dir

    # ---- final report (optionally with the paper's ten crops) and pictures
    if data.val is not None and dist_info.main:
        if cfg.ten_crop_eval:
            report = evaluate(model, data.val_ten_crop(), num_classes=len(data.classes), classes=data.classes,
                              device=device, dtype=dtype)  # fmt: skip
            report["ten_crop"] = True
        if report is None:
            data.val.set_epoch(cfg.epochs)
            report = evaluate(model, data.val, num_classes=len(data.classes), classes=data.classes,
                              device=device, dtype=dtype)  # fmt: skip
        import json

        (run_dir / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
        log.print("final evaluation: " + format_report(report, max_classes=5))
    if cfg.plots and dist_info.main:
        from .plots import make_plots

        for path in make_plots(run_dir):
            log.print(f"wrote {path}")
    log.print(f"run: {run_dir}  checkpoints: {ckpt_dir}/{{last,best}}.pt  metrics: {run_dir / 'metrics.jsonl'}")
    log.close()
    if dist_info.enabled:
        dist.barrier()
    return run_dir


def _fail_nonfinite(step: int, ckpt_dir: Path, loss: float) -> None:
    good = ckpt_dir / "last.pt"
    where = f"the last good checkpoint is {good}" if good.exists() else "no checkpoint was written yet"
    raise UserError(
        f"training loss became non-finite ({loss}) by step {step}; stopped without saving these weights; {where}. "
        "Lower --lr, add --warmup-epochs, or use --precision fp32."
    )


class _progress:
    """A tqdm bar on a terminal; elsewhere a silent counter whose postfix the loop prints as plain log lines."""

    def __init__(self, total: int, initial: int, epoch: int, epochs: int, *, enabled: bool) -> None:
        self.is_tty = enabled and sys.stderr.isatty()
        self.postfix_str = ""
        self.bar = None
        if self.is_tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix_str(self, s: str) -> None:
        self.postfix_str = s
        if self.bar is not None:
            self.bar.set_postfix_str(s)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
