"""Writing packed data sets (the layout is in ``reader``'s doc): worker processes decode and resize, the parent
writes rows in order, then the manifest, last and atomically.

Everything a pack writes is named in ``OWN_FILES`` and the markers; an existing directory is reused only when it is
recognisably one of our packs holding nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UserError
from ...outputs import lock_file
from ..split import SplitLike
from ..stats import stats_from_sums
from .reader import FORMAT, IN_PROGRESS, LOCK, MANIFEST, RESIZE_MODES, VERSION, _file_digest

CHUNK_BYTES = 16 << 20  # rows per checksum chunk = this // bytes per image
TASK_IMAGES = 32  # images per worker task
SMALL_PIXELS = 256 * 256  # images of at most this many pixels are resized a block's same-sized ones at a time


def resize_for_pack(img: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): the preset resize (shorter side + centre crop) or a squash."""
    from ..transforms import center_crop, resize_shorter, resize_square

    if resize == "shorter-centre":
        return center_crop(resize_shorter(img, size), size)
    if resize == "squash":
        return resize_square(img, size)
    raise UserError(f"--resize {resize!r} is not one of {', '.join(RESIZE_MODES)}")


_WORKER: dict[str, Any] = {}
DecodedBlock = tuple[np.ndarray, np.ndarray, list[tuple[str, str]], np.ndarray]


def _init_worker(split: SplitLike, size: int, resize: str, pool: bool = False) -> None:
    if pool:
        torch.set_num_threads(1)  # one process per core already
    _WORKER.update(split=split, size=size, resize=resize)


STATS_IMAGES = 16  # images per numpy call of the colour sums: 16 x 256 x 256 x 3 float64 = 25 MiB


def _decode_range(start: int, stop: int) -> DecodedBlock:
    """Decode images [start, stop): (good images (k,S,S,3), their positions, bad (describe, reason), pixel sums)."""
    from ..decode import DecodeError

    split, size, resize = _WORKER["split"], _WORKER["size"], _WORKER["resize"]
    c = getattr(split, "channels", 3)  # 1 for a grayscale set (--in-channels 1)
    out = np.empty((stop - start, size, size, c), np.uint8)
    good, bad = [], []
    sums = np.zeros(3 + 9 + 1)  # sum x (3), sum x x^T (9), pixel count, in [0, 1] scale
    small: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}  # shape -> [(row of out, image)]
    for i in range(start, stop):
        try:
            img = split.load(i)
        except DecodeError as e:
            bad.append((split.describe(i), str(e)))
            continue
        if img.shape[-2] * img.shape[-1] <= SMALL_PIXELS:
            small.setdefault(tuple(img.shape), []).append((len(good), img))
        else:
            out[len(good)] = resize_for_pack(img, size, resize).permute(1, 2, 0).numpy()  # (3, S, S) -> (S, S, 3)
        good.append(i)
    for group in small.values():  # the same pixels as one at a time (tested), at a third of the cost for 32-px images
        rows = [row for row, _ in group]
        out[rows] = resize_for_pack(torch.stack([img for _, img in group]), size, resize).permute(0, 2, 3, 1).numpy()
    for a in range(0, len(good), STATS_IMAGES):  # a few images per call (torch's reductions: 4x numpy's here)
        px = torch.from_numpy(out[a : min(a + STATS_IMAGES, len(good))].reshape(-1, c)).double()  # whole numbers
        if c == 1:  # the statistics stay RGB (the stats cache's format): gray is R = G = B
            px = px.expand(-1, 3)
        sums[:3] += px.sum(0).numpy() / 255.0  # exact: sums of whole numbers below 2**53
        sums[3:12] += (px.T @ px).numpy().ravel() / 255.0**2
        sums[12] += len(px)
    return out[: len(good)], np.asarray(good, np.int64), bad, sums


def _peak_rss_mib() -> dict[str, float]:
    """Peak resident memory so far (MiB) of this process and of the largest finished child (Linux: KiB units)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {
        "parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
    }


OWN_FILES = ("images.u8", "labels.npy")  # per split; with MANIFEST, IN_PROGRESS and LOCK: all a pack ever writes


def _is_our_pack(out: Path) -> bool:
    """True when ``out`` holds a pack of ours (complete, or half-written by us): our manifest format or marker."""
    marker = out / IN_PROGRESS
    if marker.is_file() and not marker.is_symlink():
        return marker.read_text(errors="replace").startswith(_MARKER_TEXT)
    if (out / MANIFEST).is_symlink():
        return False
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
    if out.is_dir():
        _refuse_links(out)
    if out.is_dir() and any(c.name != LOCK for c in out.iterdir()):
        if not _is_our_pack(out):
            raise UserError(f"{out} is a non-empty directory that is not an alexnet pack; choose an empty or new one")
        foreign = _foreign_files(out)
        if foreign:
            raise UserError(
                f"{out} holds files a pack does not write ({', '.join(str(f) for f in foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}); move them, or choose an empty or new directory"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # /proc/x, a read-only disk, a file in the way of a parent: the place, not a crash
        raise UserError(f"{out}: cannot create the pack folder there ({e.strerror or e})") from None


MARKERS = (MANIFEST, IN_PROGRESS, LOCK, MANIFEST + ".tmp")  # the names a pack writes at its top level


def _refuse_links(out: Path) -> None:
    """Each of our top-level names in ``out`` is absent or a regular file: a symbolic link (or anything else) there
    was not made by us, and writing to it would write to whatever it points at."""
    for name in MARKERS:
        path = out / name
        if path.is_symlink():
            raise UserError(f"{path} is a symbolic link, which a pack never makes; remove it (nothing was written)")
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is not a regular file, so not a pack's; move it (nothing was written)")


def _create(path: Path, mode: str = "wb"):
    """A new file at ``path``, opened for writing, never through a link: a file or link already there is an error
    (``O_EXCL``: nothing followed, nothing replaced)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        raise UserError(f"{path} appeared while packing (another program?); nothing was written to it") from None
    return os.fdopen(fd, mode)


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a fresh regular file at ``path`` (ours: ``_refuse_links`` checked the name)."""
    path.unlink(missing_ok=True)  # unlink never follows a link
    with _create(path) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _foreign_files(out: Path) -> list[Path]:
    """What in our pack ``out`` a pack does not write (so must not be removed with it)."""
    foreign = []
    for child in out.iterdir():
        if child.name in MARKERS:  # regular files: _refuse_links checked
            continue
        if child.is_dir() and not child.is_symlink():
            foreign += [g for g in child.iterdir() if g.name not in OWN_FILES or not g.is_file() or g.is_symlink()]
        else:
            foreign.append(child)
    return foreign


def _start(out: Path) -> None:
    """Mark ``out`` as being written, then remove the previous pack's files (never anything else)."""
    with _writing(out / IN_PROGRESS):
        _replace_file(out / IN_PROGRESS, _MARKER_TEXT.encode())
    (out / MANIFEST).unlink(missing_ok=True)  # from here on, the directory never looks complete until the end
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            for name in OWN_FILES:
                (child / name).unlink(missing_ok=True)
            child.rmdir()


def _lock(out: Path) -> int:
    """An exclusive lock on ``out`` for this process's lifetime of the pack (released if it dies)."""
    return lock_file(out / LOCK, f"{out}: another `alexnet data pack`{{pid}} is writing this directory; wait for it")


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
    from ...progress import progress as progress_bar

    with _writing(d):
        d.mkdir(parents=True)
    row_bytes = size * size * getattr(split, "channels", 3)  # 1 channel for a gray pack
    chunk_rows = max(1, CHUNK_BYTES // row_bytes)
    labels_all = np.asarray(split.labels, dtype=np.int64)
    labels: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    sums = np.zeros(13)
    digests: list[str] = []
    hasher, rows_in_chunk, written = hashlib.blake2b(digest_size=16), 0, 0
    bar = progress_bar(len(split), f"pack {split.name}", unit="img", enabled=progress)
    with bar, _writing(d / "images.u8"), _create(d / "images.u8") as f:  # a failed close (flush) is named too
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
    with _writing(d / "labels.npy"), _create(d / "labels.npy") as f:
        np.save(f, np.concatenate(labels) if labels else np.zeros(0, np.int64))
        f.flush()
        os.fsync(f.fileno())
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
    max_bad_fraction: float = 1.0,
    notes: dict | None = None,
) -> dict:
    """Pack already-opened splits (``{"train": Split, "val": Split}``) into ``out``; returns the manifest.
    ``source_dirs``: folders the pack must not overlap (it is refused if ``out`` contains or is inside one).
    ``max_bad_fraction``: more undecodable images than this fraction of a split is a ``UserError``, the partial pack
    removed (a pack hides them from training's own check). ``notes``: more manifest entries (``held_out``).

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
    created = not out.exists()
    _prepare_out(out, list(source_dirs or []))
    lock = _lock(out)
    try:
        _prepare_out(out, list(source_dirs or []))  # again, now that no other packer can change it
        try:
            _start(out)
            entries, stats_sums = {}, None
            for name, split in splits.items():
                entries[name], sums = _pack_split(split, out / name, size, resize, workers, progress)
                _check_skipped(split, entries[name]["skipped"], max_bad_fraction)
                if stats_sums is None or name == "train":
                    stats_sums = sums
            first = next(iter(splits.values()))
            decoding = {"channels": getattr(first, "channels", 3), "window": getattr(first, "window", "auto")}
            manifest = _write_manifest(out, size, resize, classes, stats_sums, entries, source, t0, decoding,
                                       notes or {})  # fmt: skip
        except (_WriteFailed, _TooManyBad) as e:  # a full disk, a quota, an I/O error: no torn pack left behind
            _remove_partial(out, list(splits), created)
            redone = "" if created else f" ({out} held an earlier pack, being replaced in place: it is gone too)"
            raise UserError(str(e) + redone) from None
    finally:
        os.close(lock)
    return manifest


class _TooManyBad(Exception):
    """More of a split than ``max_bad_fraction`` did not decode (``Skipped.check``'s message, as training says it)."""


def _check_skipped(split, skipped: list, max_bad_fraction: float) -> None:
    from ..loading.skipped import Skipped

    where = str(getattr(split, "root", split.name))
    try:
        Skipped(split.name, where, len(split), max_bad_fraction, named=0).add_all(skipped).check()
    except UserError as e:
        raise _TooManyBad(f"{e}; the partial pack was removed") from None


class _WriteFailed(Exception):
    """Writing ``path`` failed with ``error``: the message names both, for the user."""

    def __init__(self, path: Path, error: OSError) -> None:
        if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            why = "no space left on the device" if error.errno == errno.ENOSPC else "disk quota exceeded"
            hint = "free some space or pack to another disk"
        else:
            why, hint = f"cannot write ({error.strerror or error})", "check the disk"
        super().__init__(f"{path}: {why}; the partial pack was removed ({hint})")


@contextlib.contextmanager
def _writing(path: Path):
    """Turn an ``OSError`` while writing ``path`` into ``_WriteFailed`` naming it (``write`` errors name no file)."""
    try:
        yield
    except OSError as e:
        raise _WriteFailed(path, e) from None


def _remove_partial(out: Path, names: list[str], created: bool) -> None:
    """Remove what this pack wrote before it failed (only our names), and ``out`` itself if this pack created it."""
    for name in names:
        for own in OWN_FILES:
            (out / name / own).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (out / name).rmdir()
    for name in (MANIFEST + ".tmp", IN_PROGRESS, *((LOCK,) if created else ())):
        (out / name).unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


def _write_manifest(
    out: Path, size: int, resize: str, classes, stats_sums, entries: dict, source: str, t0, decoding: dict, notes: dict
) -> dict:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "size": size,
        "resize": resize,
        "layout": "NHWC uint8 RGB" if decoding["channels"] == 3 else "NHWC uint8 gray",
        "channels": decoding["channels"],  # absent in packs written before: 3
        "window": decoding["window"],  # how DICOMs and 16-bit gray images were made 8-bit
        "classes": classes,
        "stats": stats_from_sums(stats_sums),
        "splits": entries,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mib": _peak_rss_mib(),
        **notes,
    }
    tmp = out / (MANIFEST + ".tmp")
    with _writing(tmp):
        _replace_file(tmp, json.dumps(manifest, indent=1).encode())
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
    channels: int = 3,
    window: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    max_bad_fraction: float = 0.01,
    say_left_out: Callable[[list], None] | None = None,
) -> dict:
    """Pack any supported source (image folders, ImageNet layout, CIFAR; None = built-in synthetic) into ``out``;
    ``channels`` 1 stores gray images (a third of the bytes; colour becomes luma), ``window``: how DICOMs and 16-bit
    gray images become 8 bits (``data.window``). A source without a val split gets one held out as ``alexnet
    train`` would hold it out of the folder (``val_fraction`` of each class, chosen by ``seed``; said in the
    manifest's ``held_out``): a pack has no files left to hold out later. ``say_left_out``: told the LeftOut lists."""
    from ..holdout import with_holdout
    from ..sources import open_dataset
    from ..split import set_decoding

    dataset = open_dataset(src, train_dir=train_dir, val_dir=val_dir, cache_dir=cache_dir)
    if dataset.kind == "pack":
        raise UserError(f"{src} is already a pack; pack its source instead")
    if say_left_out is not None:  # e.g. .heic photos: not packed, and said so
        say_left_out(dataset.left_out)
    dataset, line = with_holdout(dataset, val_fraction, seed, train_dir=train_dir)
    notes = {"held_out": {"val_fraction": val_fraction, "seed": seed, "line": line}} if line else {}
    for split in dataset.splits.values():
        set_decoding(split, channels, window)
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
        max_bad_fraction=max_bad_fraction,
        notes=notes,
    )
