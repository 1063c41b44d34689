"""Several processes and stop signals: the torchrun process group, and stopping cleanly on SIGTERM / SIGINT / SIGHUP.

- ``process_group(device)``: joins the group when launched by torchrun (``WORLD_SIZE`` > 1; NCCL on GPUs, gloo on
  CPUs) and leaves it on exit if it joined it.
- ``StopSignals``: a context manager that turns the first SIGTERM / SIGINT / SIGHUP into a request (``signum``),
  which the training loop honours at its next check by saving ``last.pt`` and raising ``Preempted``; a second signal
  stops at once (during a checkpoint's write, it waits for it: a third stops at once). The previous handlers are
  restored on exit, whatever happens.
- ``max_over_ranks`` / ``sum_over_ranks``: the small collectives by which ranks agree. Every rank must call them at
  the same points; the training loop calls them only at steps every rank reaches (the same step numbers: every
  rank runs the same number of steps per epoch).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

T = TypeVar("T")


class Preempted(Exception):
    """Training stopped by a signal. ``signum``; ``exit_code`` (128 + signum: 143 for SIGTERM, 130 for SIGINT, 129 for
    SIGHUP), what
    a shell reports for a process the signal ended; ``checkpoint``: the saved ``last.pt``, or None if the second
    signal stopped it before saving."""

    def __init__(self, signum: int, checkpoint: str | None, message: str) -> None:
        super().__init__(message)
        self.signum, self.checkpoint = signum, checkpoint
        self.exit_code = 128 + signum


# ----------------------------------------------------------------------------------------------------------------
# the process group


@dataclass(frozen=True)
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


@contextmanager
def process_group(device_name: str = "auto") -> Iterator[Dist]:
    """This process's place among torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without torchrun.

    Joins the default process group if it is not joined yet (NCCL when training on CUDA, else gloo) and destroys it
    on exit only then, so a caller that set up its own group keeps it.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Dist()
        return
    info = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and (device_name == "auto" or device_name.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        yield info
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def on_main(fn: Callable[[], T], info: Dist) -> T:
    """``fn()`` run on rank 0 only, its result given to every rank. A ``UserError`` it raises is raised on every
    rank (the same one line), so a refusal on rank 0 does not leave the others waiting in a collective."""
    result, error = None, None
    if info.main:
        try:
            result = fn()
        except UserError as e:
            if not info.enabled:
                raise
            error = e
    if info.enabled:
        box = [result, None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        result, message = box
        if error is not None:
            raise error
        if message is not None:
            raise UserError(message)
    return result


def max_over_ranks(values: torch.Tensor, info: Dist) -> torch.Tensor:
    """Element-wise maximum over all ranks (``values`` itself in one process). A collective: see the module doc."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def sum_over_ranks(values: torch.Tensor, info: Dist) -> torch.Tensor:
    """Element-wise sum over all ranks (``values`` itself in one process). A collective: see the module doc."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# ----------------------------------------------------------------------------------------------------------------
# stop signals


class StopSignals:
    """``with StopSignals() as stop:`` the first SIGTERM, SIGINT or SIGHUP (a closed terminal, a dropped ssh session)
    sets ``stop.signum`` (nothing else happens until
    the loop looks at it); a second one raises at once: ``KeyboardInterrupt`` for SIGINT, ``Preempted`` without a
    checkpoint for SIGTERM. Inside ``stop.saving(...)`` a second one waits for the save to end (said once), and only
    a third stops it. On exit the handlers that were there before are put back.

    Outside the main thread Python cannot install handlers: then signals keep their usual effect.
    """

    SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._saving = False
        self._waited = False  # a second signal came during a save and was told to wait
        self._forced: int | None = None  # a signal after that: the save was cut short

    @contextmanager
    def saving(self, kept: str) -> Iterator[None]:
        """Around writing a checkpoint: a second signal waits for the write to end (a torn write is lost work,
        and was reported as a full disk); a third stops it, and whatever the write raised becomes ``Preempted``
        without a checkpoint, naming ``kept`` ("the last good checkpoint is ...")."""
        self._saving = True
        try:
            yield
        except BaseException:
            if self._forced is None:
                raise
            name = signal.Signals(self._forced).name
            raise Preempted(self._forced, None, f"stopped by a third {name} while saving (that save is lost); "
                                                f"{kept}") from None  # fmt: skip
        finally:
            self._saving = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            # None: the previous handler was not installed from Python; the default is the closest we can restore
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None and self._saving and not self._waited:  # the save ends soon: stopping now loses it
            self._waited = True
            with contextlib.suppress(OSError):
                print(f"\nreceived {name} again: saving the checkpoint, please wait (a third {name} stops at once, "
                      "losing this save)", file=sys.stderr)  # fmt: skip
            return
        if self.signum is not None:  # the second signal (a third during a save): stop now
            self._forced = signum if self._saving else None
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Preempted(signum, None, f"stopped by a second {name} before saving")
        self.signum = signum
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone: saving matters, not this line
            print(f"\nreceived {name}: finishing this step and saving (send it again to stop now)", file=sys.stderr)
