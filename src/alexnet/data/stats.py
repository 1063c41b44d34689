"""Per-channel mean/std and the RGB covariance eigen-decomposition fancy PCA needs, streamed over a split.

Accumulates float64 sums of x and x x^T over every pixel (bounded memory, one image at a time), in [0, 1] scale.
Images whose shorter side exceeds ``resize_size`` are first resized to it, as the paper stores them (and for speed).
"""

from __future__ import annotations

import hashlib
import json
import os
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..limits import limits, read_bounded
from .decode import DECODING_VERSION, DecodeError
from .split import Split
from .transforms import resize_shorter

MIN_STD = 1 / 255  # per channel, [0, 1] scale
FINGERPRINT_SAMPLE = 2000  # files whose size and mtime enter the fingerprint (all names always do)


def fingerprint(split: Split) -> str:
    """A digest of what the statistics were computed from: the decoder's version, every item's name and label, and
    the size and mtime of up to ``FINGERPRINT_SAMPLE`` evenly spaced files and of the class folders (so added,
    removed, renamed and most rewritten files change it without a stat of every file of a 1.3M-image set). CIFAR:
    its file's size and mtime."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((split.root, len(split), list(split.classes), DECODING_VERSION)).encode())
    if isinstance(split.items, np.ndarray):
        st = os.stat(split.root)
        h.update(repr((st.st_size, st.st_mtime_ns)).encode())
        return h.hexdigest()
    for path, label in zip(split.items, split.labels):
        h.update(f"{path}\0{label}\n".encode(errors="surrogateescape"))
    n = len(split.items)
    picks = range(n) if n <= FINGERPRINT_SAMPLE else np.linspace(0, n - 1, FINGERPRINT_SAMPLE).astype(int)
    folders = sorted({os.path.dirname(split.items[i]) for i in picks})
    for path in [split.items[i] for i in picks] + folders:
        try:
            st = os.stat(path)
            h.update(repr((st.st_size, st.st_mtime_ns)).encode())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def check_stats(stats, where: str) -> dict:
    """``stats`` if it holds finite mean/std/eigvals (3 each, std > 0) and a 3 x 3 eigvecs, else a ``UserError``."""

    def numbers(v, n: int) -> bool:
        return (
            isinstance(v, list)
            and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)
        )

    if not isinstance(stats, dict):
        raise UserError(f"{where}: statistics must be a mapping, got {type(stats).__name__}")
    for key in ("mean", "std", "eigvals"):
        if not numbers(stats.get(key), 3):
            raise UserError(f"{where}: statistics field {key!r} must be 3 finite numbers")
    if not all(v > 0 for v in stats["std"]):
        raise UserError(f"{where}: statistics field 'std' must be 3 positive numbers")
    vecs = stats.get("eigvecs")
    if not (isinstance(vecs, list) and len(vecs) == 3 and all(numbers(r, 3) for r in vecs)):
        raise UserError(f"{where}: statistics field 'eigvecs' must be a 3 x 3 list of finite numbers")
    return stats


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
        x = img.reshape(img.shape[0], -1).numpy().astype(np.float64) / 255.0  # (3, P), or (1, P) for a gray split
        x = np.repeat(x, 3 // x.shape[0], axis=0)  # the statistics stay RGB (gray: R = G = B)
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
    return {
        **stats_from_sums(np.concatenate([s1, s2.ravel(), [pixels]])),
        "images": images,
        "skipped": skipped,
        "source": split.root,
        "max_images": max_images,
        "resize_size": resize_size,
    }


def stats_from_sums(sums: np.ndarray) -> dict:
    """``{"mean", "std", "eigvals", "eigvecs"}`` from pixel sums in [0, 1] scale: ``sums[:3]`` = sum of x,
    ``sums[3:12]`` = sum of x x^T, ``sums[12]`` = pixel count. Eigenvectors are columns, largest eigenvalue first."""
    n = max(sums[12], 1.0)
    mean = sums[:3] / n
    cov = sums[3:12].reshape(3, 3) / n - np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    order = eigvals.argsort()[::-1]
    # a channel without variation (every pixel equal, e.g. an unused colour channel) would divide by zero: one grey
    # level is the smallest spread that still normalises to a finite, unit-scale input
    std = np.maximum(np.sqrt(np.clip(np.diag(cov), 0, None)), MIN_STD)
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "eigvals": np.clip(eigvals[order], 0, None).tolist(),
        "eigvecs": eigvecs[:, order].tolist(),
    }


def default_stats_path(split: Split, cache_dir: str | None = None) -> Path:
    """Where ``split``'s statistics are kept: a file named after the data's path in the cache
    (``cache_root()/stats/``), never in the user's data folder; ``data stats`` writes it and training reads it."""
    from .synthetic import cache_root

    root = Path(split.root)
    folder = root.parent if root.is_file() or root.name == "train" else root
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return cache_root(cache_dir) / "stats" / f"{folder.name}-{root.name}-{key}.json"


def load_or_compute_stats(
    split: Split,
    *,
    path: str | None = None,
    max_images: int | None = None,
    workers: int = 0,
    progress: bool = True,
    cache_dir: str | None = None,
    refresh: bool = False,
) -> dict:
    """Read cached statistics for ``split`` (same data ``fingerprint``, ``max_images`` and window), else compute and
    save them as JSON (``default_stats_path`` unless ``path``). A cache that is unreadable, malformed or computed from
    other files is recomputed (and replaced); ``refresh``: recompute it anyway. ``max_images`` at or above the split's
    size means all of them."""
    if max_images is not None and max_images >= len(split):
        max_images = None  # the same statistics as "all": data stats' cache serves a run that asks for 5,000
    p = Path(path) if path else default_stats_path(split, cache_dir)
    key = fingerprint(split)
    if p.is_file() and not refresh:
        try:
            cached = check_stats(json.loads(read_bounded(p, limits().max_json_bytes, "JSON")), str(p))
            same = cached.get("fingerprint") == key and cached.get("max_images") == max_images
            if same and cached.get("window", "auto") == getattr(split, "window", "auto"):  # DICOM/16-bit: it decides
                return cached
        except (UserError, ValueError):
            pass  # unreadable, malformed or foreign: recompute
    stats = compute_stats(split, max_images=max_images, workers=workers, progress=progress)
    stats["fingerprint"], stats["window"] = key, getattr(split, "window", "auto")
    save_json(stats, p)
    return stats


def save_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON atomically (``outputs.atomic_file``: temp file + rename, a symlink's target replaced,
    a device or FIFO refused)."""
    from ..outputs import atomic_file

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {p} ({e.strerror or e})") from None
    with atomic_file(p) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
    return p
