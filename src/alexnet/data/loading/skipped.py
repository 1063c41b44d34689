"""Unreadable images, accounted for one way by every loader: the folder loader (found while decoding an epoch), the
in-memory set and a pack (found when decoding them once). Each file is named once on stderr, the first
``WARN_FIRST`` of a split one line each and the rest as a count, and more than ``max_bad_fraction`` of a split is a
``UserError`` listing examples. The lines are the same whichever loader found the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from ...errors import UserError

WARN_FIRST = 5  # unreadable files named one line each, per split; the rest are counted


def skip_line(describe: str, reason: str) -> str:
    """``describe: reason``, once: decoding errors usually start with the file's name already."""
    return reason if reason.startswith(describe) else f"{describe}: {reason}"


class Skipped:
    """The unreadable files of one split (``where``: its folder or pack, ``total``: its image count)."""

    def __init__(self, name: str, where: str, total: int, max_bad_fraction: float, *, named: int = WARN_FIRST) -> None:
        self.name, self.where, self.total, self.max_bad_fraction = name, where, total, max_bad_fraction
        self.named = named  # files named one line each; 0: counted only (files a run already named)
        self.files: list[tuple[str, str]] = []  # (describe, reason), each file once, in the order found
        self._seen: set[str] = set()
        self._counted = 0  # files beyond the named ones already counted in a summary line

    def add(self, describe: str, reason: str) -> None:
        """Account for one unreadable file; named on stderr if among the split's first ``WARN_FIRST``."""
        if describe in self._seen:  # found again in a later epoch: already named and counted
            return
        self._seen.add(describe)
        self.files.append((describe, reason))
        if len(self.files) <= self.named:
            print(f"warning: skipped {skip_line(describe, reason)}", file=sys.stderr)

    def add_all(self, files: Iterable) -> Skipped:
        for describe, reason in files:
            self.add(describe, reason)
        return self

    def summarise(self) -> None:
        """One line counting the files found since the last summary beyond those named (none if there are none)."""
        more = len(self.files) - self.named - self._counted
        if more > 0:
            self._counted += more
            what = f"{more} {'more ' if self.named else ''}unreadable image{'s' if more > 1 else ''}"
            print(
                f"warning: skipped {what} in {self.where} ({self.name}), {len(self.files)} of {self.total} in all; "
                "`alexnet data check` lists them",
                file=sys.stderr,
            )

    def check(self, found: int | None = None) -> None:
        """``UserError`` when more than ``max_bad_fraction`` of the split is unreadable (``found``: this epoch's
        count, default every file accounted for)."""
        found = len(self.files) if found is None else found
        if found > self.max_bad_fraction * max(1, self.total):
            examples = "; ".join(skip_line(d, r) for d, r in self.files[:3])
            raise UserError(
                f"{found} of {self.total} {self.name} images in {self.where} cannot be decoded, more than "
                f"--max-bad-fraction {self.max_bad_fraction:g}; fix or remove them (`alexnet data check` lists "
                f"them), or raise --max-bad-fraction. E.g. {examples}"
            )


def load_readable(split, indices, skipped: Skipped | None = None, *, want: int | None = None):
    """``(kept indices, uint8 (3, H, W) images)`` of the items of ``split`` at ``indices`` that decode, in order;
    the others are accounted for in ``skipped`` (a fresh record of the split if None). ``want``: stop once that many
    are kept (for "the first n readable images of this order")."""
    from ..decode import DecodeError

    if skipped is None:
        skipped = Skipped(split.name, str(getattr(split, "root", split.name)), len(split), 1.0)
    kept, images = [], []
    for i in indices:
        if want is not None and len(kept) >= want:
            break
        try:
            img = split.load(int(i))
        except DecodeError as e:
            skipped.add(split.describe(int(i)), str(e))
            continue
        kept.append(int(i))
        images.append(img)
    return kept, images
