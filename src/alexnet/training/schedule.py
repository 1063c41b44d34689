"""The learning-rate schedule: warm-up, then cosine / linear / step / plateau; and which epoch is the best so far.
Small pure pieces, unit-tested (tests/test_metrics.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import TrainConfig
from ..errors import UserError


def lr_factor(
    cfg: TrainConfig,
    step: int,
    steps_per_epoch: int,
    plateau_decays: int = 0,
    total_steps: int | None = None,
    plan: Sequence[Sequence[int]] = (),
) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based): linear warm-up from 1%, then the schedule.

    Cosine and linear decay to zero at ``total_steps`` (default ``cfg.epochs`` epochs). Under a time budget the
    total is unknown until the first steps are timed: the peak lr until then, and from then on the decay follows
    ``plan``, the budget's plans as ``(step made, total steps, µs per step)`` (``planned_decay``)."""
    warmup = (cfg.warmup_epochs or 0.0) * steps_per_epoch
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    if cfg.schedule in ("cosine", "linear"):
        shape = _SHAPES[cfg.schedule]
        if plan:
            return planned_decay(step, warmup, plan, shape)
        total = total_steps if total_steps is not None else (cfg.epochs or 0) * steps_per_epoch
        if total <= 0:
            return 1.0
        return shape(min(1.0, (step - warmup) / max(1.0, total - warmup)))
    if cfg.schedule == "step":
        return cfg.lr_decay ** ((step // steps_per_epoch) // cfg.step_epochs)
    if cfg.schedule == "plateau":
        return cfg.lr_decay**plateau_decays
    raise UserError(f"unknown schedule {cfg.schedule!r}; choose from cosine, step, plateau")


_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
}


def planned_decay(step: float, warmup: float, plan: Sequence[Sequence[int]], shape: Callable[[float], float]) -> float:
    """The decay under a time budget's plans ``[(s0, T0), (s1, T1), ...]`` (plan k made after step s_k, to end at
    step T_k): 1 until the first plan (or the warm-up's end, if later), then from each plan's start to the next the
    value there times ``shape`` of the progress toward T_k. Continuous: a re-plan bends the curve, never jumps it,
    and the lr reaches zero at the last plan's end."""
    value = 1.0
    for k, (made, total, *_) in enumerate(plan):
        start = max(float(made), warmup)
        end = max(float(plan[k + 1][0]), warmup) if k + 1 < len(plan) else float("inf")
        progress = min(1.0, (min(step, end) - start) / max(1.0, total - start)) if step > start else 0.0
        if step <= end:
            return value * shape(max(0.0, progress))
        value *= shape(max(0.0, progress))
    return value


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


def best_improved(metric: str, value: float, best: float | None) -> bool:
    """Higher val top-1 or lower train loss than the best so far (None: no best yet)."""
    if best is None:
        return True
    return value > best if metric == "val_top1" else value < best
