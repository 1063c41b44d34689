"""Resuming a run: its own settings come back from its checkpoint, so ``alexnet train --out RUN --resume auto`` alone
continues it. A setting given again that would change what the run means (``config.fixed_on_resume``: data,
architecture, image size, batch, lr schedule, seed...) is refused with one line naming both values; the harmless
ones (workers, checkpoint interval, logging...) apply and are printed."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..config import PATH_SETTINGS, TrainConfig, fixed_on_resume, flag_name
from ..errors import UserError, WeightsError
from ..text import printable

_ALWAYS_GIVEN = ("out", "resume", "overwrite")  # how this session was started, never taken from the checkpoint


def given_settings(cfg: TrainConfig) -> set[str]:
    """The settings a Python caller set: those that differ from ``TrainConfig()``'s defaults."""
    defaults = TrainConfig()
    return {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)}


def resumed_config(
    cfg: TrainConfig, ck: Checkpoint, path: Path, given: Collection[str] | None, say: Callable[[str], Any]
) -> TrainConfig:
    """The run's stored settings, with the harmless ones the user gave taken from ``cfg``. ``given``: the names of
    the settings the user gave (the CLI's flags and config file); ``None`` (a Python caller, whose ``cfg`` is whole):
    every harmless setting, and the fixed ones that differ from the defaults. ``UserError`` for a given setting that
    is fixed on resume and differs from the stored value; the given harmless ones that differ are printed.
    ``WeightsError`` for stored settings that are not valid."""
    if ck.config is None:  # a checkpoint without settings: nothing to restore (check_resume compares the model)
        return cfg
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    stored = {k: v for k, v in ck.config.items() if k in names}  # a key of an older version is dropped
    fixed = set(fixed_on_resume())
    given = given_settings(cfg) | (names - fixed) if given is None else set(given)
    for name in sorted(given & fixed):
        value, before = getattr(cfg, name), stored.get(name)
        if name in PATH_SETTINGS and value is not None and before is not None:  # ./d and d, relative or absolute
            value, before = os.path.abspath(value), os.path.abspath(before)
        if value is not None and name in stored and value != before:
            raise UserError(
                f"--resume {path}: --{flag_name(name)} {_show(value)} would change the run (it was trained with "
                f"{_show(before)}); drop the flag to continue it, or start a new run in another --out"
            )
    free = (given - fixed) | set(_ALWAYS_GIVEN)  # harmless and given: this session's (workers, logging, --plots...)
    applied = [f"--{flag_name(n)} {_show(getattr(cfg, n))}" for n in sorted(free - set(_ALWAYS_GIVEN))
               if n in stored and getattr(cfg, n) != stored[n]]  # fmt: skip
    try:
        resumed = TrainConfig(**{**stored, **{n: getattr(cfg, n) for n in free}})
    except UserError as e:
        raise WeightsError(f"{path}: its stored settings are not valid ({e})") from None
    if applied:
        say(f"resuming {path} with its own settings, except " + ", ".join(applied))
    return resumed


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return printable(str(value), limit=200)
