"""Packed data sets: every image decoded once, resized to S x S and stored raw, so training only copies bytes.

Layout of a pack directory ``OUT`` (format ``alexnet-packed``, version 1)::

    OUT/manifest.json          written LAST, atomically (tmp file + rename): its presence marks a complete pack
    OUT/.packing               present while ``pack_dataset`` runs; a directory with it and no manifest is half-written
    OUT/<split>/images.u8      raw uint8, N x S x S x 3 (NHWC, RGB), C order: np.memmap(..., shape=(N, S, S, 3))
    OUT/<split>/labels.npy     int64 (N,), class indices into manifest["classes"]

``manifest.json`` holds: ``format``, ``version``, ``size`` (S, px), ``resize`` (``shorter-centre``: shorter side to S
then centre crop, as the paper; ``squash``: both sides to S), ``classes``, ``stats`` (the train split's per-channel
``mean``/``std`` and RGB covariance ``eigvals``/``eigvecs`` for the paper's PCA colour noise, all in [0, 1] scale;
``eigvecs[:, k]`` is the k-th eigenvector), and per split: ``count``, ``images_bytes``, ``labels_blake2b``,
``chunk_rows`` and ``chunk_blake2b`` (one BLAKE2b-128 digest per ``chunk_rows`` images, so a check can be partial or
parallel) and ``skipped`` (files that failed to decode, with the reason). Opening a pack always checks the manifest,
the file sizes and the labels digest (cheap); ``verify_pack`` also re-hashes every image chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..limits import limits, read_bounded
from ..preprocess import MAX_SIDE
from .sources import SplitLike
from .stats import MIN_STD, check_stats

FORMAT = "alexnet-packed"
VERSION = 1
MANIFEST = "manifest.json"
IN_PROGRESS = ".packing"
RESIZE_MODES = ("shorter-centre", "squash")
CHUNK_BYTES = 16 << 20  # rows per checksum chunk = this // bytes per image
TASK_IMAGES = 32  # images per worker task


# ---------------------------------------------------------------------------------------------------------------------
# reading


@dataclass
class PackedSplit:
    """One split of a pack, memory-mapped: ``images[i]`` is an (S, S, 3) uint8 view, ``labels[i]`` its class."""

    root: Path
    name: str
    images: np.ndarray  # np.memmap (N, S, S, 3) uint8, read-only
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    size: int
    manifest: dict

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` as ``uint8 (3, S, S)`` (a copy out of the memory map)."""
        return torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1).contiguous()

    def describe(self, i: int) -> str:
        return f"{self.root}/{self.name} #{i}"


def _rerun_hint(root: Path, manifest: dict | None = None) -> str:
    size = f" --size {manifest['size']}" if manifest else ""
    return f"re-run `alexnet data pack SRC {root}{size}` to rebuild it"


def is_packed(path: str | Path | None) -> bool:
    """True if ``path`` is a pack directory: complete (manifest) or half-written (so opening it explains why not)."""
    if path is None:
        return False
    p = Path(path)
    return p.is_dir() and ((p / MANIFEST).is_file() or (p / IN_PROGRESS).exists())


def read_manifest(root: str | Path) -> dict:
    """The validated manifest of a complete pack; ``UserError`` for half-written, foreign or inconsistent ones."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        if (root / IN_PROGRESS).exists():
            raise UserError(f"{root} is a half-written pack (packing was interrupted); {_rerun_hint(root)}")
        raise UserError(f"{root} is not a packed data set (no {MANIFEST}); create one with `alexnet data pack`")
    try:
        manifest = json.loads(read_bounded(path, limits().max_json_bytes, "manifest"))
    except ValueError as e:
        raise UserError(f"{path} is not readable JSON ({e}); {_rerun_hint(root)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise UserError(
            f"{path}: pack format version {manifest.get('version')} is not supported (this code reads "
            f"version {VERSION}); {_rerun_hint(root)}"
        )
    if (root / IN_PROGRESS).exists():
        raise UserError(f"{root} is being re-packed or the re-pack was interrupted; {_rerun_hint(root)}")
    _check_structure(manifest, path)
    size = manifest["size"]
    for name, info in manifest["splits"].items():
        images, labels = root / name / "images.u8", root / name / "labels.npy"
        expected = info["count"] * size * size * 3
        if labels.is_file() and labels.stat().st_size > 8 * info["count"] + 4096:
            raise UserError(f"{labels}: larger than {info['count']} int64 labels (corrupt pack); {_rerun_hint(root)}")
        if not images.is_file() or images.stat().st_size != expected:
            got = images.stat().st_size if images.is_file() else "missing"
            raise UserError(
                f"{images}: {got} bytes, manifest says {expected} (half-written or corrupt pack); "
                f"{_rerun_hint(root, manifest)}"
            )
        if not labels.is_file() or _file_digest(labels) != info["labels_blake2b"]:
            raise UserError(f"{labels}: missing or checksum mismatch (corrupt pack); {_rerun_hint(root, manifest)}")
    return manifest


_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a folder inside the pack, never a path elsewhere


def _check_structure(m: dict, path: Path) -> None:
    """Every field ``read_manifest``'s callers use, with its type and range; ``UserError`` naming the field."""

    def bad(field: str, want: str) -> UserError:
        return UserError(f"{path}: manifest field {field!r} must be {want}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(m.get("size")) or not 1 <= m["size"] <= MAX_SIDE:
        raise bad("size", f"an integer number of px from 1 to {MAX_SIDE}")
    if m.get("resize") not in RESIZE_MODES:
        raise bad("resize", " or ".join(RESIZE_MODES))
    classes = m.get("classes")
    max_classes = limits().max_classes
    if not isinstance(classes, list) or not 1 <= len(classes) <= max_classes:
        raise bad("classes", f"a list of 1 to {max_classes} class names")
    if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise bad("classes", "distinct strings")
    check_stats(m.get("stats"), f"{path}: manifest field 'stats'")
    splits = m.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise bad("splits", "a mapping of split names (train, val) to their entries")
    for name, info in splits.items():
        if not _SPLIT_NAME.match(name):
            raise bad("splits", f"named by letters, digits, '-' and '_' (got {name!r})")
        if not isinstance(info, dict):
            raise bad(f"splits.{name}", "a mapping")
        if not is_int(info.get("count")) or info["count"] < 0:
            raise bad(f"splits.{name}.count", "a non-negative integer")
        if not is_int(info.get("chunk_rows")) or info["chunk_rows"] < 1:
            raise bad(f"splits.{name}.chunk_rows", "a positive integer")
        chunks = info.get("chunk_blake2b")
        if not (isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)
                and len(chunks) == -(-info["count"] // info["chunk_rows"])):  # fmt: skip
            raise bad(f"splits.{name}.chunk_blake2b", "one digest per chunk of chunk_rows images")
        if not isinstance(info.get("labels_blake2b"), str):
            raise bad(f"splits.{name}.labels_blake2b", "a digest string")
        if not isinstance(info.get("skipped", []), list):
            raise bad(f"splits.{name}.skipped", "a list")


def _check_labels(labels: np.ndarray, count: int, num_classes: int, path: Path) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != count:
        raise UserError(
            f"{path}: labels must be {count} integers (1-D), got {labels.dtype} of shape {labels.shape}; "
            f"{_rerun_hint(path.parent.parent)}"
        )
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{path}: labels from {labels.min()} to {labels.max()}, outside the {num_classes} classes 0.."
            f"{num_classes - 1}; {_rerun_hint(path.parent.parent)}"
        )
    return labels.astype(np.int64, copy=False)


def open_packed(root: str | Path, split: str, *, verify: bool = False, manifest: dict | None = None) -> PackedSplit:
    """Memory-map one split of a pack (``verify=True`` re-hashes every image chunk first). ``manifest``: one that
    ``read_manifest(root)`` already returned (it checks sizes and label digests; no need to repeat that per split)."""
    root = Path(root)
    manifest = manifest or read_manifest(root)
    if split not in manifest["splits"]:
        raise UserError(f"{root} has no split {split!r} (it has: {', '.join(manifest['splits'])})")
    if verify:
        verify_pack(root, splits=[split], manifest=manifest)
    size, n = manifest["size"], manifest["splits"][split]["count"]
    d = root / split
    if n:
        images = np.memmap(d / "images.u8", dtype=np.uint8, mode="r", shape=(n, size, size, 3))
    else:
        images = np.zeros((0, size, size, 3), np.uint8)
    try:
        labels = np.load(d / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{d / 'labels.npy'}: not a readable .npy file ({e}); {_rerun_hint(root)}") from None
    labels = _check_labels(labels, n, len(manifest["classes"]), d / "labels.npy")
    return PackedSplit(root, split, images, labels, list(manifest["classes"]), size, manifest)


def verify_pack(
    root: str | Path,
    *,
    splits: list[str] | None = None,
    manifest: dict | None = None,
    progress: bool = False,
    sample: int | None = None,
) -> None:
    """Re-hash image chunks against the manifest; ``UserError`` naming the first bad chunk. ``sample``: only that
    many chunks per split (the middle and the last, where a torn write would show), a cheap check for every open."""
    from ..progress import progress as progress_bar

    root = Path(root)
    manifest = manifest or read_manifest(root)
    row_bytes = manifest["size"] ** 2 * 3
    for name in splits or list(manifest["splits"]):
        info = manifest["splits"][name]
        step = info["chunk_rows"] * row_bytes
        chunks = list(enumerate(info["chunk_blake2b"]))
        if sample is not None and len(chunks) > sample:
            picks = {len(chunks) - 1 - i * len(chunks) // sample for i in range(sample)}  # last, middle, ...
            chunks = [chunks[i] for i in sorted(picks)]
        with (
            open(root / name / "images.u8", "rb") as f,
            progress_bar(len(chunks), f"verify {name}", unit="chunk", enabled=progress) as bar,
        ):
            for k, want in chunks:
                bar.update(1)
                f.seek(k * step)
                if hashlib.blake2b(f.read(step), digest_size=16).hexdigest() != want:
                    first = k * info["chunk_rows"]
                    raise UserError(
                        f"{root / name / 'images.u8'}: checksum mismatch in images {first}.."
                        f"{first + info['chunk_rows'] - 1} (corrupt pack); {_rerun_hint(root, manifest)}"
                    )


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# writing: workers decode + resize, the parent writes rows in order


def resize_for_pack(img: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): the preset resize (shorter side + centre crop) or a squash."""
    from .transforms import center_crop, resize_shorter

    if resize == "shorter-centre":
        return center_crop(resize_shorter(img, size), size)
    if resize == "squash":
        from torchvision.transforms.functional import resize as F_resize

        return F_resize(img, [size, size], antialias=True)
    raise UserError(f"--resize {resize!r} is not one of {', '.join(RESIZE_MODES)}")


_WORKER: dict[str, Any] = {}
DecodedBlock = tuple[np.ndarray, np.ndarray, list[tuple[str, str]], np.ndarray]


def _init_worker(split: SplitLike, size: int, resize: str, pool: bool = False) -> None:
    if pool:
        torch.set_num_threads(1)  # one process per core already
    _WORKER.update(split=split, size=size, resize=resize)


def _decode_range(start: int, stop: int) -> DecodedBlock:
    """Decode images [start, stop): (good images (k,S,S,3), their positions, bad (describe, reason), pixel sums)."""
    from .decode import DecodeError

    split, size, resize = _WORKER["split"], _WORKER["size"], _WORKER["resize"]
    out = np.empty((stop - start, size, size, 3), np.uint8)
    good, bad = [], []
    sums = np.zeros(3 + 9 + 1)  # sum x (3), sum x x^T (9), pixel count, in [0, 1] scale
    for i in range(start, stop):
        try:
            img = split.load(i)
        except DecodeError as e:
            bad.append((split.describe(i), str(e)))
            continue
        img = resize_for_pack(img, size, resize)  # (3, S, S)
        row = out[len(good)]
        row[...] = img.permute(1, 2, 0).numpy()
        px = row.reshape(-1, 3).astype(np.float64) / 255.0
        sums[:3] += px.sum(0)
        sums[3:12] += (px.T @ px).ravel()
        sums[12] += len(px)
        good.append(i)
    return out[: len(good)], np.asarray(good, np.int64), bad, sums


def stats_from_sums(sums: np.ndarray) -> dict:
    n = max(sums[12], 1.0)
    mean = sums[:3] / n
    cov = sums[3:12].reshape(3, 3) / n - np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = eigvals.argsort()[::-1]  # largest first, as usually listed
    return {
        "mean": mean.tolist(),
        "std": np.maximum(np.sqrt(np.clip(np.diag(cov), 0, None)), MIN_STD).tolist(),  # never divide by 0
        "eigvals": np.clip(eigvals[order], 0, None).tolist(),
        "eigvecs": eigvecs[:, order].tolist(),
    }


def _peak_rss_mib() -> dict[str, float]:
    """Peak resident memory so far (MiB) of this process and of the largest finished child (Linux: KiB units)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {
        "parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
    }


OWN_FILES = ("images.u8", "labels.npy")  # per split; with MANIFEST, IN_PROGRESS and LOCK: all a pack ever writes
LOCK = ".lock"


def _is_our_pack(out: Path) -> bool:
    """True when ``out`` holds a pack of ours (complete, or half-written by us): our manifest format or marker."""
    marker = out / IN_PROGRESS
    if marker.is_file() and not marker.is_symlink():
        return marker.read_text(errors="replace").startswith(_MARKER_TEXT)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


_MARKER_TEXT = "alexnet-packed: packing started; a complete pack has manifest.json and no .packing file\n"


def _prepare_out(out: Path, sources: list[Path]) -> None:
    """Make ``out`` ready for a fresh pack, removing only files a pack of ours wrote; refuse anything else.

    ``out`` must be new, empty, or one of our packs holding nothing but our files (split folders with
    ``images.u8`` / ``labels.npy``, the manifest, the markers); it must not contain or be inside a source folder.
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out} exists and is not a directory")
    target = out.resolve()
    for src in sources:
        src = src.resolve()
        if target == src or target in src.parents or src in target.parents:
            raise UserError(f"{out} and the source {src} overlap; write the pack to a folder outside the source")
    if out.is_dir() and any(c.name != LOCK for c in out.iterdir()):
        if not _is_our_pack(out):
            raise UserError(f"{out} is a non-empty directory that is not an alexnet pack; choose an empty or new one")
        foreign = []
        for child in out.iterdir():
            if child.name in (MANIFEST, IN_PROGRESS, LOCK, MANIFEST + ".tmp"):
                continue
            if child.is_dir() and not child.is_symlink():
                foreign += [g for g in child.iterdir() if g.name not in OWN_FILES or not g.is_file() or g.is_symlink()]
            else:
                foreign.append(child)
        if foreign:
            raise UserError(
                f"{out} holds files a pack does not write ({', '.join(str(f) for f in foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}); move them, or choose an empty or new directory"
            )
    out.mkdir(parents=True, exist_ok=True)


def _start(out: Path) -> None:
    """Mark ``out`` as being written, then remove the previous pack's files (never anything else)."""
    (out / IN_PROGRESS).write_text(_MARKER_TEXT)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on, the directory never looks complete until the end
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            for name in OWN_FILES:
                (child / name).unlink(missing_ok=True)
            child.rmdir()


def _lock(out: Path):
    """An exclusive lock on ``out`` for this process's lifetime of the pack (released if it dies)."""
    import fcntl

    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{out}: another `alexnet data pack` is writing this directory; wait for it") from None
    return fd


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def decoded_blocks(split: SplitLike, size: int, resize: str, workers: int) -> Iterator[DecodedBlock]:
    """Decode ``split`` resized to ``size`` x ``size``, in order, a block of ``TASK_IMAGES`` images at a time:
    ``(images (k, S, S, 3) uint8, their indices, [(describe, reason)] of the failed ones, pixel sums)``.

    ``workers`` > 1 decodes in that many processes, with a bounded window of blocks in flight: memory stays about
    2 x workers x TASK_IMAGES images whatever the split's size.
    """
    n = len(split)
    ranges = [(a, min(a + TASK_IMAGES, n)) for a in range(0, n, TASK_IMAGES)]
    if workers <= 1:
        _init_worker(split, size, resize)
        # One image's resize is a few small ops: on two threads each paid 0.15 ms of thread hand-off against 0.004 ms
        # of work, and 11 ms on a loaded machine (measured: 3,000 64-px images took 33 s to load instead of 3).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for a, b in ranges:
                yield _decode_range(a, b)
        finally:
            torch.set_num_threads(threads)
        return
    # fork, as DataLoader workers on Linux: no re-import of torch per worker (spawn costs seconds each)
    ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(split, size, resize, True)
    ) as pool:
        pending: list[Future] = []
        todo = iter(ranges)
        for a, b in todo:
            pending.append(pool.submit(_decode_range, a, b))
            if len(pending) >= 2 * workers:
                break
        while pending:
            yield pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_decode_range, *nxt))


def _pack_split(
    split: SplitLike, d: Path, size: int, resize: str, workers: int, progress: bool
) -> tuple[dict, np.ndarray]:
    """Write one split; returns its manifest entry and its pixel sums."""
    from ..progress import progress as progress_bar

    d.mkdir(parents=True)
    row_bytes = size * size * 3
    chunk_rows = max(1, CHUNK_BYTES // row_bytes)
    labels_all = np.asarray(split.labels, dtype=np.int64)
    labels: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    sums = np.zeros(13)
    digests: list[str] = []
    hasher, rows_in_chunk, written = hashlib.blake2b(digest_size=16), 0, 0
    with open(d / "images.u8", "wb") as f, progress_bar(len(split), f"pack {split.name}", unit="img",
                                                          enabled=progress) as bar:  # fmt: skip
        for imgs, good, bad, s in decoded_blocks(split, size, resize, workers):
            if len(imgs):  # a block whose every image failed to decode writes nothing
                f.write(memoryview(np.ascontiguousarray(imgs)).cast("B"))
            for row in imgs:  # chunked digests, updated in write order
                hasher.update(memoryview(row).cast("B"))
                rows_in_chunk += 1
                if rows_in_chunk == chunk_rows:
                    digests.append(hasher.hexdigest())
                    hasher, rows_in_chunk = hashlib.blake2b(digest_size=16), 0
            written += len(imgs)
            labels.append(labels_all[good])
            skipped.extend(bad)
            sums += s
            bar.update(len(good) + len(bad))
        f.flush()
        os.fsync(f.fileno())
    if rows_in_chunk:
        digests.append(hasher.hexdigest())
    np.save(d / "labels.npy", np.concatenate(labels) if labels else np.zeros(0, np.int64))
    _fsync(d / "labels.npy")
    entry = {
        "count": written,
        "images_bytes": written * row_bytes,
        "labels_blake2b": _file_digest(d / "labels.npy"),
        "chunk_rows": chunk_rows,
        "chunk_blake2b": digests,
        "skipped": [list(s) for s in skipped],
    }
    return entry, sums


def pack_splits(
    splits: dict[str, SplitLike],
    out: str | Path,
    *,
    size: int = 256,
    resize: str = "shorter-centre",
    workers: int | None = None,
    progress: bool = True,
    source: str = "",
    source_dirs: list[Path] | None = None,
) -> dict:
    """Pack already-opened splits (``{"train": Split, "val": Split}``) into ``out``; returns the manifest.
    ``source_dirs``: folders the pack must not overlap (it is refused if ``out`` contains or is inside one).

    Statistics (mean/std/PCA) come from the ``train`` split (or the first one). ``workers``: decoding processes
    (default: all cores; 0 or 1 decodes in this process). Bad files are skipped and listed in ``manifest["skipped"]``.
    """
    if resize not in RESIZE_MODES:
        raise UserError(f"--resize {resize!r} is not one of {', '.join(RESIZE_MODES)}")
    if size < 1:
        raise UserError(f"--size {size} must be a positive number of pixels")
    if not splits:
        raise UserError("nothing to pack: no splits")
    classes = list(next(iter(splits.values())).classes)
    workers = (os.cpu_count() or 1) if workers is None else workers
    out = Path(out)
    t0 = time.perf_counter()
    _prepare_out(out, list(source_dirs or []))
    lock = _lock(out)
    try:
        _prepare_out(out, list(source_dirs or []))  # again, now that no other packer can change it
        _start(out)
        entries, stats_sums = {}, None
        for name, split in splits.items():
            entries[name], sums = _pack_split(split, out / name, size, resize, workers, progress)
            if stats_sums is None or name == "train":
                stats_sums = sums
        manifest = _write_manifest(out, size, resize, classes, stats_sums, entries, source, t0)
    finally:
        os.close(lock)
    return manifest


def _write_manifest(out: Path, size: int, resize: str, classes, stats_sums, entries: dict, source: str, t0) -> dict:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "size": size,
        "resize": resize,
        "layout": "NHWC uint8 RGB",
        "classes": classes,
        "stats": stats_from_sums(stats_sums),
        "splits": entries,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mib": _peak_rss_mib(),
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    _fsync(tmp)
    os.replace(tmp, out / MANIFEST)  # atomic: the pack is complete exactly when this name exists ...
    (out / IN_PROGRESS).unlink()  # ... and no longer marked in progress
    _fsync(out)
    return manifest


def pack_dataset(
    src: str | Path | None,
    out: str | Path,
    *,
    size: int = 256,
    resize: str = "shorter-centre",
    workers: int | None = None,
    progress: bool = True,
    train_dir: str | None = None,
    val_dir: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    """Pack any supported source (image folders, ImageNet layout, CIFAR; None = built-in synthetic) into ``out``."""
    from .sources import open_dataset

    dataset = open_dataset(src, train_dir=train_dir, val_dir=val_dir, cache_dir=cache_dir)
    if dataset.kind == "pack":
        raise UserError(f"{src} is already a pack; pack its source instead")
    roots = [Path(getattr(s, "root", "")) for s in dataset.splits.values() if getattr(s, "root", "")]
    return pack_splits(
        dataset.splits,
        out,
        source_dirs=[r if r.is_dir() else r.parent for r in roots],
        size=size,
        resize=resize,
        workers=workers,
        progress=progress,
        source=str(src) if src is not None else "synthetic",
    )


def describe_pack(manifest: dict) -> str:
    """A few human lines about a finished pack (counts, skipped files, peak memory, time)."""
    lines = [
        f"pack: {manifest['size']} px ({manifest['resize']}), {len(manifest['classes'])} classes, "
        f"{manifest['seconds']:.1f} s"
    ]
    for name, info in manifest["splits"].items():
        lines.append(
            f"  {name}: {info['count']} images, {info['images_bytes'] / 2**20:.1f} MiB, {len(info['skipped'])} skipped"
        )
        for desc, reason in info["skipped"][:10]:
            lines.append(f"    skipped {reason if reason.startswith(desc) else f'{desc}: {reason}'}")
    rss = manifest["peak_rss_mib"]
    lines.append(f"  peak RSS: {rss['parent']:.0f} MiB (writer), {rss['largest_worker']:.0f} MiB (largest worker)")
    return "\n".join(lines)
