"""Training: ``train(TrainConfig) -> run directory``. One process, or DDP under ``torchrun`` (one node or several).

``train`` reads top to bottom: set up -> for each epoch: ``train_one_epoch`` (lr -> ``train_step`` -> occasional
log) -> ``end_of_epoch`` (validate, schedule, checkpoint, one log line) -> ``finish`` (final evaluation, pictures).
Checkpoints are atomic and resume bit for bit; SIGTERM / SIGINT / SIGHUP save ``last.pt`` and raise ``Preempted``.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Collection
from pathlib import Path

import torch

from ..config import TrainConfig
from ..distributed import Preempted, StopSignals, max_over_ranks, process_group, sum_over_ranks
from ..errors import UserError
from ..evaluate import evaluate, format_report, shows_top5
from ..progress import progress
from ..text import duration_text
from .budget import BUDGET_SAVE_SECONDS, threads_restored
from .planning import few_steps_note, plan_budget
from .run import Run
from .run_dir import NothingToResume, RunLock, copy_checkpoint
from .schedule import best_improved, lr_factor
from .setup import setup
from .state import save
from .step import train_step


def train(
    cfg: TrainConfig,
    *,
    stop_after_epoch: int | None = None,
    started: float | None = None,
    given: Collection[str] | None = None,
) -> Path:
    """Train as ``cfg`` says; returns the run directory. Under torchrun, every rank calls this.

    Set up (``UserError`` for any mistake, before anything is written), then for each epoch: its steps, then
    validation, schedule, ``last.pt`` / ``best.pt`` and a log line; at the end the final evaluation and pictures.
    SIGTERM / SIGINT / SIGHUP: the ranks finish their step, save ``last.pt`` and raise ``Preempted`` (the CLI exits
    143 / 130 / 129); a second signal stops at once, or once a save it interrupts is written. Signal handlers and
    the process group are as before when this returns.
    ``stop_after_epoch``: return after that many epochs, as if killed after the checkpoint (tests of resuming).
    ``started``: when the run began (``time.time()``; default: now), the start of ``cfg.time_budget``.
    ``given``: the names of the settings the user gave (the CLI's flags and config file); a resumed run takes the
    others from its checkpoint. Default: those of ``cfg`` that differ from ``TrainConfig()``.
    """
    started = time.time() if started is None else started
    cfg.validate()
    with process_group(cfg.device) as dist_info, RunLock() as lock:  # rank 0 locks the run folder: see setup
        try:
            run = setup(cfg, dist_info, started, given, lock)  # a signal here stops at once: nothing to save yet
        except NothingToResume as e:
            if dist_info.main:
                print(e)
            return e.run_dir
        with run.log, StopSignals() as stop, threads_restored():
            epoch = run.start_epoch
            while epoch < run.epochs:  # run.epochs is fixed once a time budget's steps are planned
                loss, images, seconds, data_wait = train_one_epoch(run, epoch, stop)
                saved = end_of_epoch(run, epoch, loss, images, seconds, data_wait, stop)
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
    elif run.budget is not None:
        run.budget.resume(run.step)  # the clock of the steps runs again (validation is not timed)
    batch_idx = run.start_batch
    while batch_idx < end:
        t0 = time.perf_counter()
        x, y = next(batches)  # (B, 3, S, S) normalised on the device, (B,)
        wait += time.perf_counter() - t0
        run.lr = cfg.lr * lr_factor(cfg, run.step, run.steps_per_epoch, run.plateau.decays, run.total_steps, run.plan)
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr * group["lr_mult"]
        loss = train_step(run.train_model, x, y, run.criterion, run.optimizer, run.scaler, run.device, run.dtype)
        loss_sum += loss * y.shape[0]
        run.step, images = run.step + 1, images + y.shape[0]
        bar.update(1)
        if run.budget is not None and follow_budget(run, epoch, batch_idx, end):  # the epoch may now end sooner
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
    if run.budget is not None:
        run.budget.pause()
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


def follow_budget(run: Run, epoch: int, batch_idx: int, end: int) -> bool:
    """After step ``batch_idx`` of a time-budgeted epoch: plan once the first steps are timed, then re-plan every
    ``REPLAN_EVERY`` steps from the speed since the last plan (at an epoch's last step, the speed is kept for the
    re-plan after validation, in ``train``; at the last planned step at once). Returns whether the plan changed."""
    budget = run.budget
    if run.total_steps is None:
        if not budget.timed(batch_idx, run.device):
            return False
        plan_budget(run, epoch, budget.step_seconds())
    elif budget.replan_due(run.step, epoch_done=batch_idx == end - 1):
        seconds = budget.window_seconds(run.step, run.device)
        if seconds is None:  # too few steps timed: the last plan's speed (stored: a resumed run uses the same)
            seconds = run.plan[-1][2] / 1e6
        else:
            budget.start_window(run.step)
            if run.threads is not None:
                run.threads.after_window(seconds)
        if batch_idx == end - 1 and epoch + 1 < run.epochs:  # re-planned after the validation, its time measured
            budget.pending = seconds
            return False
        # the last planned step: re-plan now, so that steps the speed gained continue this epoch (after its
        # validation the epoch is over: a run planned inside one epoch ended up to a fifth of its budget early)
        before = run.total_steps
        plan_budget(run, epoch, seconds)
        return run.total_steps != before
    else:
        return False
    budget.start_window(run.step)
    return True


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
        raise _diverged(run, f"training loss became non-finite by step {run.step}")
    if (signum or due) and not saved:
        partial = (0.0, 0)
        if loss_sum is not None:  # the epoch's loss so far, over all ranks, so the resumed epoch's mean is whole
            totals = torch.stack([loss_sum, torch.tensor(images, dtype=loss_sum.dtype, device=run.device)])
            s, n = sum_over_ranks(totals, run.dist).tolist()
            partial = (s, int(n))
        with stop.saving(_last_good(run)):
            save(run, epoch, batch, partial=partial)
        run.last_save = time.time()
    if signum:
        name = signal.Signals(signum).name
        path = run.dir / "checkpoints" / "last.pt"
        message = (f"stopped by {name} at step {run.step} (epoch {epoch + (batch > 0)}); saved {path}; resume with: "
                   f"alexnet train --out {run.dir} --resume auto (same data and flags)")  # fmt: skip
        raise Preempted(signum, str(path), message)


def _last_good(run: Run) -> str:
    """Where the last good checkpoint is, as words for a line that says why the run stopped."""
    good = run.dir / "checkpoints" / "last.pt"
    if not good.exists():
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {good}: resume with alexnet train --out {run.dir} --resume auto"


def _diverged(run: Run, what: str) -> UserError:
    """The one line for weights that went to inf / NaN: nothing of them is saved; where the last good ones are."""
    good = run.dir / "checkpoints" / "last.pt"
    where = f"the last good checkpoint is {good}" if good.exists() else "no checkpoint was written yet"
    return UserError(
        f"{what}; stopped without saving these weights; {where}. Lower --lr, add --warmup-epochs, or use "
        "--precision fp32."
    )


def _check_finite(run: Run, epoch: int, report: dict | None) -> None:
    """Before an epoch's checkpoint: a val loss or a weight that is inf / NaN stops the run (a step's loss is
    checked before its update, so the last update of an epoch could break the weights unseen; they were saved as
    best.pt and the run exited 0). The weights are the same on every rank: every rank raises."""
    if report is not None and not math.isfinite(report["loss"]):
        raise _diverged(run, f"val loss became non-finite after epoch {epoch + 1} (step {run.step})")
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        raise _diverged(run, f"the weights became non-finite by step {run.step}")


def end_of_epoch(
    run: Run, epoch: int, loss: float, images: int, seconds: float, data_wait: float, stop: StopSignals
) -> bool:
    """Validate, step the plateau schedule, write ``last.pt`` (and ``best.pt`` when the chosen metric improved:
    val top-1, or the epoch's train loss without a val split; a second signal waits for that: ``stop.saving``), one
    metrics record and one console line. Returns whether ``last.pt`` was written."""
    data, budget = run.data, run.budget
    t0 = time.perf_counter()
    report, subset = validate(run, epoch)
    run.report = report
    eval_seconds = time.perf_counter() - t0
    if budget is not None and budget.pending is not None:  # the epoch-end re-plan, this validation's time measured
        plan_budget(run, epoch, budget.pending)
        budget.pending = None
    _check_finite(run, epoch, report)
    metric, value = ("val_top1", report["top1"]) if report else ("train_loss", loss)
    with stop.saving(_last_good(run)):
        saving, is_best, improved = save_epoch(run, epoch, metric, value)
    rate = images / max(seconds, 1e-9) if images else None  # None: all its steps ran before this run resumed
    val = {f"val_{k}": report[k] if report else None for k in ("loss", "top1", "top5", "count")}
    run.log.epoch(epoch=epoch + 1, step=run.step, train_loss=loss, **val, val_seconds=round(eval_seconds, 3),
                  lr=run.lr, img_per_s=rate, data_wait=data_wait / max(seconds, 1e-9), best_metric=metric,
                  is_best=is_best)  # fmt: skip
    summary = f"epoch {epoch + 1}/{epochs_text(run)}: train loss {loss:.4f}"
    if report:
        summary += f", val loss {report['loss']:.4f}, top-1 {100 * report['top1']:.2f}%"
        if shows_top5(len(data.classes)):
            summary += f", top-5 {100 * report['top5']:.2f}%"
        if subset:
            summary += f" ({report['count']:,} of the {data.val.num_samples:,} val images)"
    left = _time_left(run, epoch, seconds, images, eval_seconds)
    summary += f", {rate:.0f} img/s, {seconds:.1f} s" if rate is not None else ", its steps trained before resuming"
    summary += f", about {left} left" if left else ""
    if improved and not is_best:  # under a time budget: this epoch was not saved (last.pt waits a minute)
        kept = run.best.get("epoch")
        summary += ", best so far (not saved: " + (f"best.pt keeps epoch {kept})" if kept else "no best.pt yet)")
    elif improved:
        summary += ", best so far"
    run.log.print(summary)
    return saving


def validate(run: Run, epoch: int) -> tuple[dict | None, bool]:
    """The epoch end's validation (None without a val split) and whether it was on ``data.val_epochs``, a subset.
    The last epoch validates all of val, with the mirrors when the final report wants them: that pass is the final
    report too (``run.final_report``; the epoch's record keeps the centre crops). Under a time budget, the seconds
    per image and view go to the planning."""
    data, cfg = run.data, run.cfg
    if data.val is None:
        return None, False
    t0 = time.perf_counter()
    last = epoch + 1 >= run.epochs
    loader = data.val if last or data.val_epochs is None else data.val_epochs
    fold = last and cfg.flip_eval and not cfg.ten_crop_eval
    loader.set_epoch(epoch)
    report = evaluate(run.train_model if not run.dist.enabled else run.model, loader, num_classes=len(data.classes),
                      classes=data.classes, device=run.device, dtype=run.dtype, distributed=run.dist.enabled,
                      flip=fold)  # fmt: skip
    if last:
        run.final_report, run.final_step = report, run.step
    report = {**report, **report["centre"]} if fold else report
    run.plateau.update(report["top1"])
    if run.budget is not None:
        images = loader.num_samples / run.dist.world_size
        run.budget.eval_image_seconds = (time.perf_counter() - t0) / images / (2 if fold else 1)
    return report, loader is not data.val


def save_epoch(run: Run, epoch: int, metric: str, value: float) -> tuple[bool, bool, bool]:
    """Write ``last.pt`` (and link ``best.pt`` when ``value`` of ``metric`` beats the saved best): (saved, best.pt
    written, better than every epoch so far). Under a time budget a 61M-parameter checkpoint (0.5 GB, ~3 s here) at
    every end of a seconds-long epoch would eat the budget: ``last.pt`` then waits ``BUDGET_SAVE_SECONDS`` (a signal
    still saves at once), and ``best.pt`` is the best of the saved epochs, while "best so far" is printed for every
    improvement (saying when that epoch was not saved)."""
    final = epoch + 1 >= run.epochs
    saving = run.budget is None or final or time.time() - run.last_save >= BUDGET_SAVE_SECONDS
    previous = run.best.get("value") if run.best.get("metric") == metric else None
    improved = best_improved(metric, value, run.best_seen if run.best_seen is not None else previous)
    if improved:
        run.best_seen = value
    is_best = saving and best_improved(metric, value, previous)
    if is_best:
        run.best = {"metric": metric, "value": value, "epoch": epoch + 1}
    if saving:
        t0 = time.perf_counter()
        save(run, epoch + 1, 0)
        run.last_save = time.time()
        if run.budget is not None and run.dist.main:
            run.budget.save_seconds = time.perf_counter() - t0
    if is_best and run.dist.main:
        copy_checkpoint(run.dir / "checkpoints" / "last.pt", run.dir / "checkpoints" / "best.pt")
    return saving, is_best, improved


def _time_left(run: Run, epoch: int, seconds: float, images: int, eval_seconds: float) -> str | None:
    """The whole run's time still to come after ``epoch``, as text: what is left of a time budget, or the remaining
    steps at this epoch's speed plus their validations. None after the last epoch."""
    if epoch + 1 >= run.epochs:
        return None
    if run.budget is not None:
        return duration_text(max(0.0, run.budget.remaining()))
    if not images:  # no step of this epoch ran in this session: no speed to go by
        return None
    steps = max(1, round(images / run.cfg.batch_size))  # this session's steps in the epoch (images of all ranks)
    step_s = seconds / steps
    left = (run.epochs * run.steps_per_epoch - run.step) * step_s + (run.epochs - epoch - 1) * eval_seconds
    return duration_text(left)


def _which_epoch(run: Run) -> str:
    """Which weights the final report is about: the last epoch's (best.pt may be another)."""
    best = run.best.get("epoch")
    text = f"last epoch, {run.epochs}"
    if best is not None and (run.dir / "checkpoints" / "best.pt").exists():  # a finished run copied: last.pt only
        text += f"; best.pt is epoch {best}" if best != run.epochs else "; also best.pt"
    return text


def finish(run: Run) -> None:
    """The final report on the whole val split (each image and its mirror averaged, or ten crops with
    ``--ten-crop-eval``, or the centre crops with ``--no-flip-eval``; all ranks evaluate their shard and the sums are
    all-reduced), written by rank 0 to ``eval.json``; then the pictures. The last epoch's validation made it already
    (one pass over val for both the epoch's record and the report), unless steps came after it."""
    data, cfg = run.data, run.cfg
    if data.val is not None:
        kw = dict(num_classes=len(data.classes), classes=data.classes, device=run.device, dtype=run.dtype,
                  distributed=run.dist.enabled)  # fmt: skip
        # the last epoch's validation is the report when it was made on these weights (not when the epoch was
        # resumed after it, or the budget's re-plan after that validation added steps)
        report, views = run.final_report if run.final_step == run.step else None, ""
        if cfg.ten_crop_eval:
            report, views = {**evaluate(run.model, data.val_ten_crop(), **kw), "ten_crop": True}, " with ten crops"
        else:
            if report is None:
                data.val.set_epoch(run.epochs)
                report = evaluate(run.model, data.val, flip=cfg.flip_eval, **kw)
            if cfg.flip_eval:  # eval.json keeps the centre crop's top-1 only (run.final_report is left as it is)
                centre = report["centre"]
                report = {**{k: v for k, v in report.items() if k != "centre"}, "flip": True,
                          "centre_top1": centre["top1"]}  # fmt: skip
                views = f" of each image and its mirror (the centre crop alone: {centre['top1']:.2%})"
        if run.dist.main:
            (run.dir / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
            run.log.print(f"final evaluation ({_which_epoch(run)}){views}: " + format_report(report, max_classes=5))
    if cfg.plots and run.dist.main:
        from ..plots import make_plots

        for path in make_plots(run.dir):
            run.log.print(f"wrote {path}")
    ckpt_dir = run.dir / "checkpoints"
    names = ",".join(name for name in ("last", "best") if (ckpt_dir / f"{name}.pt").exists())
    shown = f"{ckpt_dir}/{{{names}}}.pt" if "," in names else f"{ckpt_dir}/{names}.pt" if names else "none"
    run.log.print(f"run: {run.dir}  checkpoints: {shown}  metrics: {run.dir / 'metrics.jsonl'}")
    note = few_steps_note(run)
    if note:
        run.log.print(note)
