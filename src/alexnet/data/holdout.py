"""A held-out validation split for data that has none: one folder of class sub-folders, or ``ROOT/train`` alone.

``hold_out`` takes ``fraction`` of each class's images (stratified: at least one image of every class that has two
or more, never all of a class), chosen by a permutation seeded from ``(seed, class)``, so the same files, seed and
fraction give the same split on any machine. A run writes the split's file lists (paths relative to the data folder)
to ``RUN_DIR/split.json`` (``write_split``); resuming, ``alexnet evaluate CKPT`` and ``alexnet plot RUN_DIR`` read
them back (``with_holdout(stored=...)``), so images added to the folder later never move from train to val.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .sources import Dataset
from .split import Split

SPLIT_FILE = "split.json"  # in the run folder


def val_count(n: int, fraction: float) -> int:
    """Images held out of a class of ``n``: ``fraction`` of them rounded, at least 1 when ``n >= 2``, at most
    ``n - 1`` (every class keeps a training image)."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, int(n * fraction + 0.5)))


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """``(train, val)`` from ``split``: ``val_count`` images of each class, drawn with ``default_rng([seed, label])``
    (stable across numpy versions and machines); both keep the files' order."""
    labels = np.asarray(split.labels, dtype=np.int64)
    is_val = np.zeros(len(labels), dtype=bool)
    for c in range(len(split.classes)):
        idx = np.flatnonzero(labels == c)
        k = val_count(len(idx), fraction)
        if k:
            is_val[idx[np.random.default_rng([seed, c]).permutation(len(idx))[:k]]] = True
    return _pick(split, "train", ~is_val), _pick(split, "val", is_val)


def _pick(split: Split, name: str, mask: np.ndarray) -> Split:
    items = [p for p, m in zip(split.items, mask) if m]
    labels = [int(y) for y, m in zip(split.labels, mask) if m]
    return Split(name, items, labels, list(split.classes), split.root, left_out=split.left_out)


def needs_holdout(dataset: Dataset, train_dir: str | None = None) -> bool:
    """Image folders given as DATA with no val split (``--train-dir`` is an explicit choice and is left alone)."""
    return (
        train_dir is None
        and dataset.kind in ("folder", "folders")
        and dataset.val is None
        and not isinstance(dataset.split("train").items, np.ndarray)
    )


def is_held_out(dataset: Dataset) -> bool:
    """Was ``dataset``'s val split held out of its train folder (``with_holdout``)?"""
    val, train = dataset.val, dataset.train
    return dataset.kind in ("folder", "folders") and val is not None and val.root == train.root


def with_holdout(
    dataset: Dataset, fraction: float, seed: int, *, stored: dict | None = None, train_dir: str | None = None
) -> tuple[Dataset, str | None]:
    """``dataset`` with a val split held out of its images when it has none (``needs_holdout``), and the line that
    says so (None when nothing was held out). ``stored``: a run's ``split.json`` (``read_split``), used as it is."""
    if not needs_holdout(dataset, train_dir):
        return dataset, None
    whole = dataset.split("train")
    if stored is not None:
        train, val = _from_stored(whole, stored)
        line = f"validation: the run's held-out split ({len(val):,} of {len(train) + len(val):,} images)"
    else:
        train, val = hold_out(whole, fraction, seed)
        if not len(val):
            train = _pick(whole, "train", np.ones(len(whole), dtype=bool))
            return _replace(dataset, train, None), None
        line = (f"held out {fraction:.0%} for validation: {len(val):,} of {len(whole):,} images, stratified by "
                "class; --val-fraction to change (0: none)")  # fmt: skip
    return _replace(dataset, train, val), line


def _replace(dataset: Dataset, train: Split, val: Split | None) -> Dataset:
    splits = {"train": train} if val is None else {"train": train, "val": val}
    return Dataset(dataset.source, dataset.kind, list(dataset.classes), splits, dataset.stats)


def split_record(dataset: Dataset, fraction: float, seed: int) -> dict:
    """What ``write_split`` stores: the classes and each split's files relative to the data folder."""
    root = Path(dataset.train.root)
    return {
        "data": str(root),
        "val_fraction": fraction,
        "seed": seed,
        "classes": list(dataset.classes),
        **{name: [os.path.relpath(p, root) for p in s.items] for name, s in dataset.splits.items()},
    }


def write_split(run_dir: str | os.PathLike, dataset: Dataset, fraction: float, seed: int) -> Path:
    """``RUN_DIR/split.json``: the held-out split's file lists (see the module doc)."""
    path = Path(run_dir) / SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split_record(dataset, fraction, seed), indent=0) + "\n")
    return path


def read_split(run_dir: str | os.PathLike | None) -> dict | None:
    """A run's ``split.json``, or None when the run has none. ``UserError`` naming the file when it is damaged."""
    if run_dir is None:
        return None
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        ok = isinstance(record, dict) and all(isinstance(record.get(k), list) for k in ("classes", "train", "val"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise UserError(f"{path}: not a split file (classes, train and val lists); delete it to split again")
    return record


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run folder of a checkpoint saved by a run (``RUN_DIR/checkpoints/NAME.pt``), else its folder."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == "checkpoints" else folder


def _from_stored(whole: Split, stored: dict) -> tuple[Split, Split]:
    """The stored lists as splits of ``whole``'s folder; a file's class is its first folder."""
    classes = list(stored["classes"])
    if classes != list(whole.classes):
        raise UserError(
            f"{whole.root}: its class folders are not those of the run's split.json ({len(whole.classes)} vs "
            f"{len(classes)} classes); use the data the run was trained on"
        )
    from .listing import class_folders

    index = {c: i for i, c in enumerate(class_folders(Path(whole.root)))}  # label order: the sorted class folders
    out = []
    for name in ("train", "val"):
        rel = [str(p) for p in stored[name]]
        bad = next((p for p in rel if Path(p).parts[0] not in index or os.path.isabs(p) or ".." in Path(p).parts), None)
        if bad is not None:
            raise UserError(f"split.json: {bad!r} is not inside a class folder of {whole.root}")
        items = [os.path.join(whole.root, p) for p in rel]
        out.append(
            Split(name, items, [index[Path(p).parts[0]] for p in rel], classes, whole.root, left_out=whole.left_out)
        )
    return out[0], out[1]


def open_run_dataset(config: dict, checkpoint: str | os.PathLike) -> Dataset:
    """The data set a run trained on, from its checkpoint's ``config``, with the run's held-out split (its
    ``split.json``, else the same split made again from the config's seed and fraction)."""
    from ..errors import UserError
    from .sources import open_dataset

    try:
        dataset = open_dataset(config.get("data"), train_dir=config.get("train_dir"), val_dir=config.get("val_dir"))
    except UserError as e:  # say where the path came from: the user never typed it here
        where = config.get("data") or config.get("train_dir") or "the built-in data"
        raise UserError(f"{checkpoint} was trained on {where}, which cannot be opened now ({e}); give DATA") from None
    stored = read_split(run_dir_of(checkpoint))
    fraction, seed = float(config.get("val_fraction") or 0.0), int(config.get("seed") or 0)
    return with_holdout(dataset, fraction, seed, stored=stored, train_dir=config.get("train_dir"))[0]
