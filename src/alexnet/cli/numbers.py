"""Argument types for numbers with a range: a value outside it is argparse's one-line error naming the flag.

Every number a command takes is bounded here, before anything is allocated or started from it: ``--workers 100000``
started 100,000 loader processes, ``data synth --size 100000`` asked for 149 GiB, ``--every nan`` and ``--seed -1``
ended in tracebacks deep in numpy."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_WORKERS = 256  # loader processes or threads: beyond this they only cost memory and start-up
MAX_SEED = 2**32 - 1  # numpy's legacy seed, the narrowest of the generators a seed reaches
MAX_BATCH = 1 << 16


def whole(low: int, high: int) -> Callable[[str], int]:
    """An int in [low, high]."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside [{low:,}, {high:,}]")
        return value

    convert.__name__ = "whole number"
    return convert


def number(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] (``(low, high]`` with ``low_open``)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not (low < value if low_open else low <= value) or value > high:
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if low_open else '['}{low:g}, {high:g}]")
        return value

    convert.__name__ = "number"
    return convert


workers = whole(0, MAX_WORKERS)
threads = whole(1, MAX_WORKERS)
seed = whole(0, MAX_SEED)
batch = whole(1, MAX_BATCH)
