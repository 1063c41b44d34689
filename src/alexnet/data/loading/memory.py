"""In-memory data: a set that fits comfortably in RAM is decoded once into one uint8 array, then served by the
packed loader as if it were a pack (as cifar10-airbench keeps CIFAR on the GPU).

``load_into_memory(split, size)`` decodes every image exactly as ``alexnet data pack`` would (shorter side to
``size``, centre square, the same code) into an ``(N, size, size, 3)`` array and returns a ``PackedSplit`` over it:
no loader processes, no decoding per epoch, the same per-sample (seed, epoch, index) augmentation and exact resume,
and the colour statistics come from the same pass. ``fits_in_memory`` decides whether a split is small enough.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..pack.reader import RESIZE_MODES, PackedSplit
from ..pack.writer import decoded_blocks
from ..split import SplitLike
from ..stats import stats_from_sums

MEMORY_FRACTION = 0.25  # of the machine's available memory, at most, for the decoded set
MEMORY_CAP = 4 << 30  # bytes, at most, whatever the machine


def decoded_bytes(n: int, size: int, channels: int = 3) -> int:
    return n * size * size * channels


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; elsewhere physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(n: int, size: int, channels: int = 3) -> bool:
    """Whether ``n`` images of ``size`` px fit the in-memory budget: ``MEMORY_FRACTION`` of the available memory,
    at most ``MEMORY_CAP``."""
    return decoded_bytes(n, size, channels) <= min(MEMORY_CAP, MEMORY_FRACTION * available_memory())


def load_into_memory(
    split: SplitLike,
    size: int,
    *,
    resize: str = "shorter-centre",
    workers: int = 0,
    progress: bool = False,
) -> tuple[PackedSplit, dict]:
    """Decode ``split`` once into RAM; returns ``(a PackedSplit over the array, its colour statistics)``.

    Images that fail to decode are skipped (listed in ``PackedSplit.manifest["skipped"]``), as when packing.
    """
    from ...progress import progress as progress_bar

    if resize not in RESIZE_MODES:
        raise UserError(f"resize {resize!r} is not one of {', '.join(RESIZE_MODES)}")
    n = len(split)
    images = np.empty((n, size, size, getattr(split, "channels", 3)), np.uint8)  # 1 channel for a gray set
    labels_all = np.asarray(split.labels, dtype=np.int64)
    keep: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    sums, written = np.zeros(13), 0
    with progress_bar(n, f"load {split.name} into memory", unit="img", enabled=progress) as bar:
        for imgs, good, bad, s in decoded_blocks(split, size, resize, workers):
            images[written : written + len(imgs)] = imgs
            written += len(imgs)
            keep.append(good)
            skipped.extend(bad)
            sums += s
            bar.update(len(good) + len(bad))
    good = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    manifest = {"size": size, "resize": resize, "skipped": [list(b) for b in skipped], "in_memory": True}
    root = Path(getattr(split, "root", "memory"))
    out = PackedSplit(root, split.name, images[:written], labels_all[good], list(split.classes), size, manifest)
    return out, stats_from_sums(sums)
