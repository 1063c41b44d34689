"""A time budget is a deadline: the first steps are timed and the step count planned (``auto.plan_steps``) so that
the steps, validation, checkpoints and the final report fit in what is left; then the speed is measured again every
``REPLAN_EVERY`` steps and at each epoch's end, and the plan follows it (``loop.plan_budget``), so a load that comes
or goes mid-run moves the end of training, not the end of the command. Each plan is kept (``Run.plan``, stored in
every checkpoint): the learning rate is a function of the plans (``schedule.lr_factor``), so a resumed run repeats
them exactly."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from ..device import synchronize

CALIBRATION_SKIP = 5  # steps not timed (allocation, autotuning, compilation)
CALIBRATION_STEPS = 20  # steps timed (10 after 3 skipped measured 0.47 s per step where the run then took 0.36-0.41)
MIN_WINDOW = 10  # steps timed before a re-plan trusts their speed
REPLAN_EVERY = 20  # steps between re-plans (and one at each epoch end); every 50 overran a 45 s budget by 13%
# when the steps slowed 3x mid-epoch (another process took the cores)
EVAL_COST = 0.3  # seconds of validation per image, in units of a training step's seconds per image (measured ~0.2)
SAVE_BYTES_PER_VALUE, SAVE_RATE = 4, 150e6  # a checkpoint holds weights + momentum (fp32); bytes/s measured here
BUDGET_SAVE_SECONDS = 60  # under a time budget, last.pt at an epoch end only if the last save is this old
BUDGET_MARGIN = 0.02  # of the budget, kept free (process exit, timing noise)
PLOTS_SECONDS = 15.0  # --plots after the final report (the demo's seven pictures took 9-12 s on 2 cores)
FEW_STEPS = 0.7  # a run that got fewer than this share of its first plan's steps says so in its last line


@dataclass
class Budget:
    """A time budget of ``seconds`` from ``started`` (``time.time()``), the timing of the first steps, and of the
    steps since the last plan (a window that never includes validation or checkpoint saves). ``whole``: the run's
    whole budget (``seconds`` is what a resumed run has left), whose ``BUDGET_MARGIN`` every plan keeps free."""

    seconds: float
    started: float
    whole: float
    first: int = 0  # batch indices [first, last) of this epoch are timed
    last: int = 0
    t0: float | None = None
    step_time: float | None = None
    window_t0: float | None = None  # perf_counter() where the window's current stretch of steps began (None: paused)
    window_elapsed: float = 0.0  # seconds of steps in the window before that stretch
    window_step: int = -1  # the run's step count where the window began (-1: no window yet)
    eval_image_seconds: float | None = None  # the last epoch end's validation, measured: per image and view
    save_seconds: float | None = None  # the last checkpoint save, measured
    pending: float | None = None  # the speed of an epoch's last steps, for the re-plan after its validation

    def elapsed(self) -> float:
        return time.time() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def margin(self) -> float:
        """Seconds kept free: a share of the whole budget, so a resumed run plans as the one it continues did."""
        return BUDGET_MARGIN * self.whole

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

    def costs(self, est_eval: float, est_save: float) -> tuple[float, float]:
        """(validation per image and view, checkpoint) seconds: the last measured, else the estimates given."""
        return (self.eval_image_seconds if self.eval_image_seconds is not None else est_eval,
                self.save_seconds if self.save_seconds is not None else est_save)  # fmt: skip

    def start_window(self, step: int) -> None:
        """Time the steps from the run's ``step`` on (after a plan made from a measured speed)."""
        self.window_t0, self.window_elapsed, self.window_step = time.perf_counter(), 0.0, step

    def pause(self) -> None:
        """Stop the clock at an epoch's end: validation and checkpoints are not steps."""
        if self.window_t0 is not None:
            self.window_elapsed += time.perf_counter() - self.window_t0
            self.window_t0 = None

    def resume(self, step: int) -> None:
        """Restart the clock at an epoch's start (a new window at ``step`` if there is none: a resumed run)."""
        if self.window_step < 0:
            self.start_window(step)
        else:
            self.window_t0 = time.perf_counter()

    def window_seconds(self, step: int, device: torch.device) -> float | None:
        """Seconds per step since ``start_window``, pauses excluded (waits for the device), or None for fewer than
        ``MIN_WINDOW`` steps (too few to tell a slow-down from noise)."""
        if self.window_step < 0 or step - self.window_step < MIN_WINDOW:
            return None
        synchronize(device)
        running = time.perf_counter() - self.window_t0 if self.window_t0 is not None else 0.0
        return (self.window_elapsed + running) / (step - self.window_step)

    def replan_due(self, step: int, epoch_done: bool) -> bool:
        """Whether to plan again after the run's ``step``: at every multiple of ``REPLAN_EVERY`` and at an epoch's
        end (the same steps in a resumed run as in an uninterrupted one)."""
        return epoch_done or step % REPLAN_EVERY == 0


SLOWED = 1.5  # a window this much slower than the fastest one on all threads: try one thread fewer
PROBE_EVERY = 4  # windows between tries of the other thread count once one was kept


@dataclass
class CpuThreads:
    """Under a time budget on a CPU, the intra-op thread count that runs the steps fastest now, chosen window by window.

    A busy process on one of the cores makes every multi-threaded op wait for the thread that shares that core: on 2
    cores the demo's step went from 0.18 to 0.69 s with one busy process, where one thread alone runs on the free
    core. When a window is ``SLOWED`` x slower than the best on all threads, the next window tries one thread fewer
    and the faster count is kept; the other count is tried again every ``PROBE_EVERY`` windows (the load may have
    gone). Thread counts change the speed, not what is computed (up to float summation order)."""

    full: int
    best_full: float | None = None  # fastest window on all threads
    seconds: dict | None = None  # threads -> seconds per step of the latest window run with them
    trial: bool = False  # the current count is being tried for one window
    kept_for: int = 0  # windows since the current count was kept
    log: object = None  # print(line) for the changes

    def after_window(self, step_seconds: float) -> None:
        """Take one window's seconds per step (run on ``torch.get_num_threads()`` threads); maybe change the count."""
        now = torch.get_num_threads()
        self.seconds = {**(self.seconds or {}), now: step_seconds}
        if now == self.full:
            self.best_full = step_seconds if self.best_full is None else min(self.best_full, step_seconds)
        other = self.full - 1 if now == self.full else self.full
        if self.trial:  # the window just measured tried `now`: keep the faster of the two
            self.trial, self.kept_for = False, 0
            if step_seconds > self.seconds.get(other, float("inf")):
                self._set(other, f"back to {other} (the {now}-thread window took {step_seconds:.3f} s per step)")
            elif self.log is not None:
                self.log(f"time budget: {now} CPU thread(s) kept ({step_seconds:.3f} s per step)")
            return
        self.kept_for += 1
        slowed = now == self.full and self.full > 1 and step_seconds > SLOWED * (self.best_full or step_seconds)
        if (slowed and other not in self.seconds) or (self.kept_for >= PROBE_EVERY and (slowed or now != self.full)):
            self.trial = True
            self._set(other, f"trying {other} (steps at {step_seconds:.3f} s, fastest on {self.full}: "
                             f"{self.best_full:.3f} s)")  # fmt: skip

    def _set(self, threads: int, why: str) -> None:
        torch.set_num_threads(threads)
        if self.log is not None:
            self.log(f"time budget: CPU threads {why}")


@contextlib.contextmanager
def threads_restored():
    """Run the block, then give torch back the intra-op thread count it had (``CpuThreads`` may change it)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpu_threads(device: torch.device, distributed: bool, log) -> CpuThreads | None:
    """The thread follower of a time-budgeted run: only for a single-process CPU run with threads to spare."""
    if device.type != "cpu" or distributed or torch.get_num_threads() < 2:
        return None
    return CpuThreads(torch.get_num_threads(), log=log)
