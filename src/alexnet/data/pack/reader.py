"""Reading packed data sets: every image decoded once, resized to S x S and stored raw, so training only copies bytes.

Layout of a pack directory ``OUT`` (format ``alexnet-packed``, version 1)::

    OUT/manifest.json          written LAST, atomically (tmp file + rename): its presence marks a complete pack
    OUT/.packing               present while ``pack_dataset`` runs; a directory with it and no manifest is half-written
    OUT/<split>/images.u8      raw uint8, N x S x S x C (NHWC; C = 3 RGB, or the manifest's "channels": 1 gray),
                               C order: np.memmap(..., shape=(N, S, S, C))
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
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ...limits import limits, read_bounded
from ...preprocess import MAX_SIDE
from ...text import plural
from ..stats import check_stats

FORMAT = "alexnet-packed"
VERSION = 1
MANIFEST = "manifest.json"
IN_PROGRESS = ".packing"
LOCK = ".lock"  # held by the writer while it writes
RESIZE_MODES = ("shorter-centre", "squash")


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

    @property
    def skipped(self) -> list:
        """``[describe, reason]`` of each source image that could not be decoded when this split was made."""
        entry = self.manifest.get("splits", {}).get(self.name, self.manifest)  # a pack's, or an in-memory set's
        return list(entry.get("skipped", []))


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
        expected = info["count"] * size * size * manifest.get("channels", 3)
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

    if not _is_int(m.get("size")) or not 1 <= m["size"] <= MAX_SIDE:
        raise bad("size", f"an integer number of px from 1 to {MAX_SIDE}")
    if m.get("channels", 3) not in (1, 3) or isinstance(m.get("channels"), bool):
        raise bad("channels", "1 or 3")
    if not isinstance(m.get("window", "auto"), str):
        raise bad("window", "a string (data.window)")
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
        _check_split_entry(f"splits.{name}", info, bad)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_split_entry(field: str, info, bad) -> None:
    """One split's manifest entry: counts, chunk digests, labels digest, skipped files."""
    if not isinstance(info, dict):
        raise bad(field, "a mapping")
    if not _is_int(info.get("count")) or info["count"] < 0:
        raise bad(f"{field}.count", "a non-negative integer")
    if not _is_int(info.get("chunk_rows")) or info["chunk_rows"] < 1:
        raise bad(f"{field}.chunk_rows", "a positive integer")
    chunks = info.get("chunk_blake2b")
    if not (isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)
            and len(chunks) == -(-info["count"] // info["chunk_rows"])):  # fmt: skip
        raise bad(f"{field}.chunk_blake2b", "one digest per chunk of chunk_rows images")
    if not isinstance(info.get("labels_blake2b"), str):
        raise bad(f"{field}.labels_blake2b", "a digest string")
    if not isinstance(info.get("skipped", []), list):
        raise bad(f"{field}.skipped", "a list")


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
    size, n, c = manifest["size"], manifest["splits"][split]["count"], manifest.get("channels", 3)
    d = root / split
    if n:
        images = np.memmap(d / "images.u8", dtype=np.uint8, mode="r", shape=(n, size, size, c))
    else:
        images = np.zeros((0, size, size, c), np.uint8)
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
    from ...progress import progress as progress_bar

    root = Path(root)
    manifest = manifest or read_manifest(root)
    row_bytes = manifest["size"] ** 2 * manifest.get("channels", 3)
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
                if _chunk_digest(f, step) != want:
                    first = k * info["chunk_rows"]
                    raise UserError(
                        f"{root / name / 'images.u8'}: checksum mismatch in images {first}.."
                        f"{first + info['chunk_rows'] - 1} (corrupt pack); {_rerun_hint(root, manifest)}"
                    )


def _chunk_digest(f, size: int) -> str:
    """BLAKE2b-128 of the next ``size`` bytes of ``f`` (fewer at its end), read 1 MiB at a time: a manifest's
    ``chunk_rows`` is untrusted, so a chunk is never read into memory whole (a fuzzed 131,646,803-row chunk did)."""
    h = hashlib.blake2b(digest_size=16)
    while size > 0:
        block = f.read(min(size, 1 << 20))
        if not block:
            break
        h.update(block)
        size -= len(block)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_pack(manifest: dict) -> str:
    """A few human lines about a finished pack (counts, skipped files, peak memory, time)."""
    from ..loading.skipped import skip_line  # loading imports this module

    lines = [
        f"pack: {manifest['size']} px ({manifest['resize']}), {len(manifest['classes'])} classes, "
        f"{manifest['seconds']:.1f} s"
    ]
    held = manifest.get("held_out")
    if held:  # the source had no val split
        lines.append(f"  {held['line']}, --seed {held['seed']} (as train would hold it out of the source)")
    for name, info in manifest["splits"].items():
        mib = info["images_bytes"] / 2**20
        lines.append(f"  {name}: {plural(info['count'], 'image')}, {mib:.1f} MiB, {len(info['skipped'])} skipped")
        for desc, reason in info["skipped"][:10]:
            lines.append(f"    skipped {skip_line(desc, reason)}")
    rss = manifest["peak_rss_mib"]
    lines.append(f"  peak RSS: {rss['parent']:.0f} MiB (writer), {rss['largest_worker']:.0f} MiB (largest worker)")
    return "\n".join(lines)
