"""Per-channel mean/std and the RGB covariance eigen-decomposition fancy PCA needs, streamed over a split.

Accumulates float64 sums of x and x x^T over every pixel (bounded memory, one image at a time), in [0, 1] scale.
Images whose shorter side exceeds ``resize_size`` are first resized to it, as the paper stores them (and for speed).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np

from ..errors import UserError
from .decode import DecodeError
from .sources import Split
from .transforms import resize_shorter

STATS_FILE = "alexnet-stats.json"


def compute_stats(
    split: Split,
    *,
    max_images: int | None = None,
    workers: int = 0,
    progress: bool = True,
    resize_size: int | None = 256,
) -> dict:
    """``{"mean", "std", "eigvals", "eigvecs" (columns, largest eigenvalue first), "images", "skipped", "source"}``.

    ``max_images`` takes that many images evenly spaced over the split; ``workers`` > 0 decodes in threads.
    Undecodable images are skipped and counted.
    """
    from ..progress import progress as progress_bar

    n = len(split)
    idx = range(n) if max_images is None or max_images >= n else np.linspace(0, n - 1, max_images).astype(int)

    def load(i: int):
        try:
            img = split.load(int(i))
        except DecodeError:
            return None
        if resize_size is not None:
            img = resize_shorter(img, min(resize_size, min(img.shape[-2:])))
        x = img.reshape(3, -1).numpy().astype(np.float64) / 255.0  # (3, P)
        return x.sum(axis=1), x @ x.T, x.shape[1]

    s1, s2, pixels, images, skipped = np.zeros(3), np.zeros((3, 3)), 0, 0, 0
    pool = ThreadPool(workers) if workers > 0 else None
    results = pool.imap(load, idx, chunksize=16) if pool else map(load, idx)
    bar = progress_bar(len(idx), "stats", unit="img", enabled=progress)
    for r in results:
        bar.update(1)
        if r is None:
            skipped += 1
            continue
        s1 += r[0]
        s2 += r[1]
        pixels += r[2]
        images += 1
    bar.close()
    if pool:
        pool.close()
    if images == 0:
        raise UserError(f"{split.root}: no decodable images to compute statistics from")
    mean = s1 / pixels
    cov = s2 / pixels - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)  # ascending
    order = np.argsort(vals)[::-1]
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(np.diag(cov)).tolist(),
        "eigvals": vals[order].tolist(),
        "eigvecs": vecs[:, order].tolist(),
        "images": images,
        "skipped": skipped,
        "source": split.root,
        "max_images": max_images,
        "resize_size": resize_size,
    }


def default_stats_path(split: Split, cache_dir: str | None = None) -> Path:
    """``<data folder>/alexnet-stats.json`` when writable, else a file named after the data path in the cache."""
    root = Path(split.root)
    folder = root.parent if root.is_file() or root.name == "train" else root
    if os.access(folder, os.W_OK):
        return folder / STATS_FILE
    from .synthetic import cache_root

    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return cache_root(cache_dir) / "stats" / f"{root.name}-{key}.json"


def load_or_compute_stats(
    split: Split,
    *,
    path: str | None = None,
    max_images: int | None = None,
    workers: int = 0,
    progress: bool = True,
    cache_dir: str | None = None,
) -> dict:
    """Read cached statistics for ``split`` (same source and ``max_images``), else compute and save them as JSON."""
    p = Path(path) if path else default_stats_path(split, cache_dir)
    if p.is_file():
        try:
            cached = json.loads(p.read_text())
            if cached.get("source") == split.root and cached.get("max_images") == max_images:
                return cached
        except (OSError, ValueError):
            pass  # unreadable cache: recompute
    stats = compute_stats(split, max_images=max_images, workers=workers, progress=progress)
    save_json(stats, p)
    return stats


def save_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON atomically (temp file + rename)."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=p.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, p)
    except OSError as e:
        raise UserError(f"cannot write {p} ({e.strerror or e})") from None
    return p
