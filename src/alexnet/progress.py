"""Progress for long work: a tqdm bar on a terminal; elsewhere (a log file, a pipe) a plain line now and then.

    with progress(total=len(files), desc="check train", unit="img") as bar:
        for ...:
            bar.update(1)

Redrawn tqdm bars in a log file are thousands of carriage returns; a line every ``every_s`` seconds says the same.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class progress:
    """``update(n)``, ``set_postfix_str(s)``, ``close()``; a context manager. ``enabled=False`` prints nothing."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        every_s: float = 30.0,
        file: TextIO | None = None,
    ) -> None:
        self.file = file or sys.stderr
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.enabled, self.every_s = enabled, every_s
        self.is_tty = enabled and self.file.isatty()
        self.postfix_str = ""
        self.t0 = self.t_last = time.monotonic()
        self.bar = None
        if self.is_tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=self.file)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.t_last >= self.every_s:
            self.t_last = time.monotonic()
            print(self.line(), file=self.file, flush=True)

    def set_total(self, total: int, desc: str | None = None) -> None:
        """A new end, and optionally a new label (e.g. once a time budget's steps, and so its epochs, are planned)."""
        self.total = total
        self.desc = desc if desc is not None else self.desc
        if self.bar is not None:
            self.bar.total = total
            if desc is not None:
                self.bar.set_description_str(desc, refresh=False)
            self.bar.refresh()

    def set_postfix_str(self, s: str) -> None:
        self.postfix_str = s
        if self.bar is not None:
            self.bar.set_postfix_str(s)

    def line(self) -> str:
        """``desc: n/total unit (p%), elapsed, rate[, postfix]`` — the plain-text form of the bar."""
        elapsed = time.monotonic() - self.t0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        tail = f", {self.postfix_str}" if self.postfix_str else ""
        return f"{self.desc}: {done} {self.unit}{pct}, {elapsed:.0f} s, {rate:.1f} {self.unit}/s{tail}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
