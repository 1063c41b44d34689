"""A time budget: the first steps are timed, then the step count is fixed (``auto.plan_steps``) so that the steps,
validation and checkpoints fit in what is left."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..device import synchronize

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
