"""Planning a time budget's steps: the first plan from the timed first steps, then a re-plan every
``budget.REPLAN_EVERY`` steps and after each epoch's validation, from the speed measured since the last one (the
slowest rank's), the validation and checkpoint times measured so far, and what is left of the budget."""

from __future__ import annotations

import torch

from ..auto import epochs_for, plan_steps
from ..distributed import max_over_ranks
from ..shared_fc6 import saved_values
from ..text import plural
from .budget import (
    BUDGET_SAVE_SECONDS,
    EVAL_COST,
    FEW_STEPS,
    PLOTS_SECONDS,
    REPLAN_EVERY,
    SAVE_BYTES_PER_VALUE,
    SAVE_RATE,
)
from .run import Run

REPLAN_SHOWN = 0.05  # a re-plan is printed when it moves the end by more than this share
REPLAN_KEEP = 0.01  # a new plan within this share of the current one is not taken (the deadline allows 3%)


def plan_budget(run: Run, epoch: int, step_seconds: float) -> None:
    """Plan (again) how many steps fit in what is left of ``cfg.time_budget`` at ``step_seconds`` per step, so that
    the steps, each epoch end's validation, the checkpoints and the final report end by the deadline; append the
    plan to ``run.plan`` when it changes, and print the first plan and any re-plan that moves the end by more than
    ``REPLAN_SHOWN``. Every rank calls it at the same step (a collective)."""
    budget, cfg = run.budget, run.cfg
    image_seconds, save_seconds = budget.costs(*_estimates(run, step_seconds))
    measured = torch.tensor([step_seconds, image_seconds, save_seconds, -budget.remaining()], dtype=torch.float64,
                            device=run.device)  # fmt: skip
    step_seconds, image_seconds, save_seconds, neg_remaining = max_over_ranks(measured, run.dist).tolist()
    remaining = -neg_remaining - budget.margin() - (PLOTS_SECONDS if cfg.plots else 0.0)
    # last.pt at an epoch end at most once a minute (end_of_epoch), and at the last one
    final = save_seconds * (1 + remaining / max(BUDGET_SAVE_SECONDS, run.steps_per_epoch * step_seconds))
    # each epoch end validates data.val_epochs (a subset of val); the last one all of val, with the mirrors for the
    # final report (finish): that much more than an epoch end, and then ten crops with --ten-crop-eval
    epoch_images, val_images = _val_images(run)
    eval_seconds = image_seconds * epoch_images
    views = 2 if cfg.flip_eval and not cfg.ten_crop_eval else 1
    final += image_seconds * (views * val_images - epoch_images + (10 * val_images if cfg.ten_crop_eval else 0))
    max_steps = cfg.epochs * run.steps_per_epoch if cfg.epochs else None
    total = plan_steps(remaining=remaining, step_seconds=step_seconds, steps_done=run.step,
                       steps_per_epoch=run.steps_per_epoch, epoch_seconds=eval_seconds, final_seconds=final,
                       max_steps=max_steps)  # fmt: skip
    first = not run.plan
    if not first and abs(total - run.total_steps) <= REPLAN_KEEP * run.total_steps:
        return  # within the timing noise: the plan stays (the demo's epoch count went 6, 5, 6 between re-plans)
    previous = run.total_steps
    run.plan.append((run.step, total, round(step_seconds * 1e6)))
    run.total_steps = total
    run.epochs = max(epoch + 1, epochs_for(total, run.steps_per_epoch))
    if first:
        run.log.print(
            f"time budget {cfg.time_budget}: {budget.elapsed():.1f} s used by set-up and {plural(run.step, 'step')}; "
            f"{step_seconds:.3f} s per step (batch {cfg.batch_size}) -> {plural(total, 'step')} in all "
            f"({plural(round(total / run.steps_per_epoch, 2), 'epoch')}), lr decaying {cfg.schedule} to zero by then; "
            f"{run.epochs * eval_seconds + final:.0f} s kept for validation and checkpoints; planned again every "
            f"{REPLAN_EVERY} steps as the speed changes"
        )
    elif abs(total - previous) > REPLAN_SHOWN * previous:
        run.log.print(f"time budget: re-planned at step {run.step}: {step_seconds:.3f} s per step (was "
                      f"{run.plan[0][2] / 1e6:.3f}) -> {plural(total, 'step')} in all (was {previous}), "
                      f"{-neg_remaining:.0f} s left")  # fmt: skip


def _estimates(run: Run, step_seconds: float) -> tuple[float, float]:
    """Validation seconds per image and checkpoint seconds, before they were measured: a forward pass costs about a
    third of a training step per image; a checkpoint writes weights + momentum (rank 0 only: the others count 0)."""
    per_image = step_seconds / (run.cfg.batch_size // run.dist.world_size)
    values = saved_values(run.model) + sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    return EVAL_COST * per_image, SAVE_BYTES_PER_VALUE * values / SAVE_RATE if run.dist.main else 0.0


def _val_images(run: Run) -> tuple[float, float]:
    """Images one rank validates at an epoch end before the last (``data.val_epochs``) and at the last (all of val)."""
    data, ranks = run.data, run.dist.world_size
    if data.val is None:
        return 0.0, 0.0
    epochs = data.val_epochs if data.val_epochs is not None else data.val
    return epochs.num_samples / ranks, data.val.num_samples / ranks


def few_steps_note(run: Run) -> str | None:
    """A last line for a run that got far fewer steps than its first plan (the machine got busier), else None."""
    if run.budget is None or not run.plan or run.step >= FEW_STEPS * run.plan[0][1]:
        return None
    why = f"steps slowed from {run.plan[0][2] / 1e6:.3f} to {run.plan[-1][2] / 1e6:.3f} s"
    return (f"note: this run got {run.step} steps of the {run.plan[0][1]} first planned ({why}: another process "
            f"was using the CPU?); for the accuracy a quiet machine gives, rerun when it is quiet or give a longer "
            f"--time-budget")  # fmt: skip
