"""Where images come from: the one front door for every command that reads a data set.

``open_dataset(path)`` looks at what is on disk and returns a ``Dataset``: its kind, class names and splits. It
recognises a pack (``alexnet data pack``), CIFAR-10/100 archives or folders, the ``ROOT/train/<class>/`` (+ ``val/``)
layout including ImageNet's flat val folder, a single folder of class sub-folders (one split, e.g. ``d/val``), and
``None`` for the built-in synthetic set. Every split has one interface (``SplitLike``): ``len``, ``labels``,
``classes``, ``load(i)`` -> ``uint8 (3, H, W)`` and ``describe(i)``; ``loading.make_loader`` turns one into batches.

``open_splits`` is the lower level for image files and CIFAR: ``(train, val)`` as ``Split`` objects. Val labels
always use the train class order.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..limits import limits, read_bounded
from .decode import IMAGE_EXTENSIONS
from .listing import LeftOut, class_folders, list_images
from .pack.reader import is_packed, open_packed, read_manifest, verify_pack
from .split import Split

WNID = re.compile(r"^n\d{8}$")
VAL_INDEX = re.compile(r"ILSVRC2012_val_(\d+)")
DEVKIT = "ILSVRC2012_devkit_t12"
LOC_CSV = "LOC_val_solution.csv"
VAL_NAMES = ("val", "validation", "valid", "test")  # ROOT/<name>/: the held-out split, the first that exists
CIFAR = {  # archive name -> (folder inside, train files, val file, meta file, labels key, names key)
    "cifar-10-python.tar.gz": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    "cifar-100-python.tar.gz": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names"),
}


@dataclass
class Dataset:
    """A data set as ``open_dataset`` found it: ``splits`` by name ("train", "val"), all with the same ``classes``.

    ``kind``: "pack", "cifar", "folders" (ROOT/train + val), "folder" (one folder of class sub-folders) or
    "synthetic". For packs, ``stats`` holds the manifest's colour statistics and ``image_size``/``resize_mode`` how
    the stored images were made.
    """

    source: str  # what the user gave (or "built-in synthetic data")
    kind: str
    classes: list[str]
    splits: dict[str, Any] = field(default_factory=dict)  # name -> SplitLike
    stats: dict | None = None
    image_size: int | None = None  # px, packs only: stored images are image_size x image_size
    resize_mode: str | None = None  # packs only: "shorter" or "squash" (Preprocess.resize_mode)

    @property
    def train(self):
        return self.splits.get("train")

    @property
    def val(self):
        return self.splits.get("val")

    @property
    def left_out(self) -> list[LeftOut]:
        """What listing the image folders left out (``listing.LeftOut``), once per folder; none for other kinds."""
        found = {lo.where: lo for s in self.splits.values() if (lo := getattr(s, "left_out", None)) is not None}
        return list(found.values())

    def split(self, name: str):
        """The split ``name``; a single folder of class sub-folders serves as any split. ``UserError`` if absent."""
        if name in self.splits:
            return self.splits[name]
        if self.kind == "folder":
            return next(iter(self.splits.values()))
        have = ", ".join(self.splits) or "none"
        raise UserError(f"{self.source}: has no {name} split (it has: {have})")

    def describe(self, counts: str | None = None) -> str:
        """One line: source, kind, image counts (``counts``: as the loaders hold them, e.g. after skipping)."""
        counts = counts or ", ".join(f"{len(s)} {n}" for n, s in self.splits.items()) + " images"
        size = f", {self.image_size} px" if self.image_size else ""
        return f"{self.source} ({self.kind}{size}): {counts}, {len(self.classes)} classes"


def open_dataset(
    data: str | os.PathLike | None,
    *,
    train_dir: str | None = None,
    val_dir: str | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Open any supported data set (see the module doc). ``UserError`` with one line when it cannot."""
    check_sources(data, train_dir, val_dir)
    if train_dir is None and data is not None and is_packed(data):
        manifest = read_manifest(data)
        verify_pack(data, manifest=manifest, sample=2)  # a cheap spot check; `alexnet data verify` checks all
        splits = {name: open_packed(data, name, manifest=manifest) for name in manifest["splits"]}
        mode = "squash" if manifest["resize"] == "squash" else "shorter"
        return Dataset(str(data), "pack", list(manifest["classes"]), splits, manifest["stats"], manifest["size"], mode)
    if train_dir is None and data is not None:
        root = Path(data)
        if root.is_dir() and not (root / "train").is_dir() and _find_cifar(root) is None and class_folders(root):
            split = _folder_split(root.name, root)
            # keyed "train" whatever the folder's name: one called val/ was its own val split (train said "no train
            # split", data check found each file a duplicate of itself); train holds a val split out of it
            return Dataset(str(root), "folder", list(split.classes), {"train": split})
    train, val = open_splits(
        None if data is None else str(data), train_dir=train_dir, val_dir=val_dir, cache_dir=cache_dir
    )
    kind = "cifar" if isinstance(train.items, np.ndarray) else "folders"
    if data is None and train_dir is None:
        kind = "synthetic"
    source = str(data if data is not None else train_dir or "built-in synthetic data")
    splits = {"train": train} if val is None else {"train": train, "val": val}
    return Dataset(source, kind, list(train.classes), splits)


def check_sources(data, train_dir: str | None, val_dir: str | None) -> None:
    """``UserError`` for DATA with ``--train-dir``, or ``--val-dir`` without it (one of them was ignored without a
    word: ``--val-dir WRONG`` validated on DATA/val), and for a ``--val-dir`` that is not a folder."""
    if train_dir is not None and data is not None:
        raise UserError(f"{data} and --train-dir {train_dir}: give DATA, or --train-dir (with --val-dir), not both")
    if val_dir is not None and train_dir is None:
        raise UserError(f"--val-dir {val_dir} goes with --train-dir; DATA brings its own val split (DATA/val/)")
    if val_dir is not None and not Path(val_dir).is_dir():
        raise UserError(f"--val-dir {val_dir}: no such folder")


def match_classes(
    data_classes: Sequence[str],
    model_classes: Sequence[str],
    *,
    source: str,
    model: str,
    remedy: str = "pass --allow-class-mismatch to score by position",
) -> list[int]:
    """Map each data class to the model's output with the same name: ``mapping[data label] = model label``.

    The order may differ (labels are remapped by name); a data class the model does not know is a ``UserError``
    naming the differing classes on both sides, then what to do: rename the folders, or ``remedy`` (the calling
    command's other way out). A model may know more classes than the data has.
    """
    index = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        missing = [c for c in model_classes if c not in set(data_classes)]
        raise UserError(
            f"{source} has classes that {model} does not predict: {_few(unknown)}"
            + (f"; {model} has classes the data lacks: {_few(missing)}" if missing else "")
            + f". Rename the folders to the model's classes, or {remedy}"
        )
    return [index[c] for c in data_classes]


def _few(names: Sequence[str], n: int = 10) -> str:
    return ", ".join(map(repr, names[:n])) + (f" and {len(names) - n} more" if len(names) > n else "")


def relabel(split, mapping: Sequence[int], classes: Sequence[str]):
    """A view of ``split`` whose labels are ``mapping[label]`` and whose class names are ``classes``."""
    import copy

    out = copy.copy(split)
    table = np.asarray(mapping, dtype=np.int64)
    labels = table[np.asarray(split.labels, dtype=np.int64)]
    out.labels = labels if isinstance(split.labels, np.ndarray) else labels.tolist()
    out.classes = list(classes)
    return out


class UnlabelledValError(UserError):
    """A flat ImageNet val/ folder with no label file next to it. ``train`` holds the (fine) train split."""

    def __init__(self, message: str, train: Split):
        super().__init__(message)
        self.train = train


def open_splits(
    data: str | None,
    *,
    train_dir: str | None = None,
    val_dir: str | None = None,
    cache_dir: str | None = None,
) -> tuple[Split, Split | None]:
    """Detect the data set layout at ``data`` and return ``(train, val)`` (``val`` is None when there is none).

    Layouts: ``ROOT/train/<class>/*`` + ``ROOT/val/<class>/*`` (or explicit ``train_dir`` / ``val_dir``; a
    ``validation/``, ``valid/`` or ``test/`` folder serves as val when there is no ``val/``);
    ImageNet's flat ``val/`` labelled by ``LOC_val_solution.csv`` or the devkit (tar.gz or extracted);
    CIFAR-10/100 python archives or their extracted folders. ``data=None`` uses the built-in synthetic data set.
    """
    if train_dir is not None:
        train = _folder_split("train", Path(train_dir))
        val = _val_split(Path(val_dir), train, search=[Path(val_dir).parent]) if val_dir else None
        return train, val
    if data is None:
        from .synthetic import default_synthetic

        data = str(default_synthetic(cache_dir))
    root = Path(data)
    if not root.exists():
        raise UserError(f"{root}: no such file or folder")
    cifar = _find_cifar(root)
    if cifar is not None:
        return _cifar_splits(*cifar)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder, nor a CIFAR archive ({', '.join(CIFAR)})")
    if not (root / "train").is_dir():
        raise UserError(
            f"{root}: no train/ folder. Expected ROOT/train/<class>/<images> (and ROOT/val/<class>/ or ImageNet's "
            f"flat val/), a CIFAR archive ({', '.join(CIFAR)}) or its extracted folder; or, to train, "
            "--train-dir and --val-dir"
        )
    train = _folder_split("train", root / "train")
    held_out = next((root / name for name in VAL_NAMES if (root / name).is_dir()), None)
    val = _val_split(held_out, train, search=[root, root.parent]) if held_out is not None else None
    return train, val


# ---------------------------------------------------------------------------------------------------------------
# image folders and ImageNet


def _folder_split(name: str, folder: Path, classes: list[str] | None = None) -> Split:
    if not folder.is_dir():
        raise UserError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    found = class_folders(folder)
    if not found:
        raise UserError(f"{folder}: no class sub-folders; expected {folder}/<class>/<images>")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise UserError(
                f"{folder}: classes not in train: {', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}; "
                "val must use the train classes"
            )
    items, labels = [], []
    left_out = LeftOut(str(folder))
    for label, c in enumerate(classes):
        if c in found:
            files, _ = list_images(folder / c, left_out)
            items += files
            labels += [label] * len(files)
    if not items:
        raise UserError(f"{folder}: no images ({'/'.join(IMAGE_EXTENSIONS)}) in its class folders"
                        + (f"; {left_out.line(sidecars=True)}" if left_out.counts else ""))  # fmt: skip
    return Split(name, items, labels, _readable(classes), str(folder), left_out=left_out)


def _readable(classes: list[str]) -> list[str]:
    """ImageNet's 1000 wnids become torchvision's category names (their order is the sorted wnids)."""
    if len(classes) == 1000 and all(WNID.match(c) for c in classes):
        from ..weights import imagenet_classes

        return imagenet_classes()
    return list(classes)


def _wnids(train: Split) -> list[str]:
    return class_folders(Path(train.root))


def _val_split(folder: Path, train: Split, search: list[Path]) -> Split:
    if class_folders(folder):
        split = _folder_split("val", folder, classes=_wnids(train))
        split.classes = train.classes
        return split
    files, left_out = list_images(folder)
    if not files:
        raise UserError(f"{folder}: empty val folder (no class sub-folders, no images)"
                        + (f"; {left_out.line(sidecars=True)}" if left_out.counts else ""))  # fmt: skip
    wnid_of = _imagenet_val_labels(folder, [folder, *search], train)
    index = {w: i for i, w in enumerate(_wnids(train))}
    labels, missing = [], []
    for f in files:
        w = wnid_of.get(Path(f).stem)
        if w is None:
            missing.append(f)
        elif w not in index:
            raise UserError(f"{f}: its label {w} is not a train class folder")
        else:
            labels.append(index[w])
    if missing:
        raise UserError(f"{len(missing)} val images have no label in the label file, e.g. {missing[0]}")
    return Split("val", files, labels, train.classes, str(folder), left_out=left_out)


def _imagenet_val_labels(folder: Path, search: list[Path], train: Split) -> dict[str, str]:
    """``{image stem: wnid}`` for a flat ImageNet val folder, from LOC_val_solution.csv or the devkit."""
    for d in search:
        if (d / LOC_CSV).is_file():
            return _read_loc_csv(d / LOC_CSV)
    for d in search:
        for candidate in (d / f"{DEVKIT}.tar.gz", d / DEVKIT / "data", d / "data", d):
            if candidate.is_file() or (candidate / "meta.mat").is_file():
                meta, truth = _devkit_files(candidate)
                return _devkit_labels(meta, truth, candidate)
    raise UnlabelledValError(
        f"{folder}: flat val folder (images, no class sub-folders) and no labels for it. Put one of these next "
        f"to it (in {search[1] if len(search) > 1 else folder}): {LOC_CSV} (from Kaggle's ImageNet download), "
        f"{DEVKIT}.tar.gz (from image-net.org), or its extracted {DEVKIT}/data/ with meta.mat and "
        "ILSVRC2012_validation_ground_truth.txt; or sort val/ into <wnid>/ folders. Training on unlabelled val "
        "would report ~0.1% accuracy.",
        train,
    )


def _read_loc_csv(path: Path) -> dict[str, str]:
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                out[row["ImageId"]] = row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError):
                raise UserError(f"{path}: expected columns ImageId,PredictionString (e.g. 'n01751748 ...')") from None
    return out


def _devkit_files(where: Path) -> tuple[bytes, bytes]:
    """(meta.mat bytes, ground-truth text bytes) from the devkit tar.gz or an extracted data/ folder."""
    names = ("meta.mat", "ILSVRC2012_validation_ground_truth.txt")
    if where.is_file():
        try:
            with tarfile.open(where) as tar:
                found = {Path(m.name).name: m for m in tar.getmembers() if Path(m.name).name in names}
                if len(found) < 2:
                    raise UserError(f"{where}: missing data/{' or data/'.join(names)} inside; re-download it")
                return tuple(tar.extractfile(found[n]).read() for n in names)  # type: ignore[return-value]
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"{where}: cannot read the devkit archive ({e})") from None
    if not (where / names[1]).is_file():
        raise UserError(f"{where}: has meta.mat but no {names[1]}")
    return (where / names[0]).read_bytes(), (where / names[1]).read_bytes()


def _devkit_labels(meta: bytes, truth: bytes, where: Path) -> dict[str, str]:
    try:
        import scipy.io
    except ImportError:
        raise UserError(
            f"reading the ImageNet devkit's meta.mat ({where}) needs scipy: pip install 'alexnet[imagenet]'; "
            f"or put {LOC_CSV} next to val/ instead"
        ) from None
    synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    wnid_of_id = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in np.atleast_1d(synsets)}
    ids = [int(x) for x in truth.decode().split()]
    return {f"ILSVRC2012_val_{i + 1:08d}": wnid_of_id[gt] for i, gt in enumerate(ids)}


# ---------------------------------------------------------------------------------------------------------------
# CIFAR


def _find_cifar(root: Path) -> tuple[Path, str] | None:
    """(archive or extracted folder, archive name) when ``root`` is or holds a CIFAR python data set."""
    for archive, (inner, *_rest) in CIFAR.items():
        if root.is_file() and root.name == archive:
            return root, archive
        if root.is_dir():
            if root.name == inner and (root / _rest[2]).is_file():
                return root, archive
            if (root / inner).is_dir():
                return root / inner, archive
            if (root / archive).is_file():
                return root / archive, archive
    return None


class _NumpyOnly(pickle.Unpickler):
    """CIFAR batches are pickles: allow numpy arrays and nothing else (no arbitrary code from a downloaded file)."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy") and name in (
            "_reconstruct",
            "ndarray",
            "dtype",
            "scalar",
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        return _NumpyOnly(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise UserError(f"{where}: not a CIFAR python batch ({type(e).__name__}: {e})") from None


def _cifar_splits(src: Path, archive: str) -> tuple[Split, Split]:
    _inner, train_files, val_file, meta_file, labels_key, names_key = CIFAR[archive]
    wanted = [*train_files, val_file, meta_file]
    blobs = _cifar_archive_blobs(src, archive, wanted) if src.is_file() else _cifar_folder_blobs(src, archive, wanted)
    meta = _unpickle(blobs[meta_file], f"{src}/{meta_file}")
    names = meta.get(names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(
            f"{src}/{meta_file}: no list of class names under {names_key.decode()!r}; re-download {archive}"
        )
    classes = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names]

    def split(name: str, files: list[str]) -> Split:
        batches = [_cifar_batch(blobs[f], f"{src}/{f}", labels_key, len(classes)) for f in files]
        data = np.concatenate([d for d, _ in batches])
        labels = [y for _, ys in batches for y in ys]
        pixels = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        return Split(name, pixels, labels, classes, str(src))

    return split("train", train_files), split("val", [val_file])


def _cifar_archive_blobs(src: Path, archive: str, wanted: list[str]) -> dict[str, bytes]:
    """The ``wanted`` members' bytes from a CIFAR tar.gz, refusing oversized members before inflating them."""
    max_bytes = limits().max_archive_member_bytes
    try:
        with tarfile.open(src) as tar:
            members: dict[str, tarfile.TarInfo] = {}
            for k, m in enumerate(tar):  # stop once found: never list a hostile archive's millions of members
                if m.isfile() and Path(m.name).name in wanted:
                    members[Path(m.name).name] = m
                if len(members) == len(wanted) or k > 10_000:
                    break
            missing = [w for w in wanted if w not in members]
            if missing:
                raise UserError(f"{src}: missing {', '.join(missing)} inside; re-download {archive}")
            for w in wanted:  # sizes come from the tar headers: refuse before inflating anything
                if members[w].size > max_bytes:
                    raise UserError(
                        f"{src}: {w} inside is {members[w].size:,} bytes, over the {max_bytes:,}-byte limit "
                        "(ALEXNET_MAX_ARCHIVE_MEMBER_BYTES); not a CIFAR archive"
                    )
            return {w: tar.extractfile(members[w]).read() for w in wanted}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{src}: cannot read the archive ({e}); re-download {archive}") from None


def _cifar_folder_blobs(src: Path, archive: str, wanted: list[str]) -> dict[str, bytes]:
    missing = [w for w in wanted if not (src / w).is_file()]
    if missing:
        raise UserError(f"{src}: missing {', '.join(missing)}; re-extract {archive}")
    return {w: read_bounded(src / w, limits().max_archive_member_bytes, "CIFAR batch") for w in wanted}


def _cifar_batch(blob: bytes, where: str, labels_key: bytes, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """One CIFAR batch file: ``(data uint8 (N, 3072), labels)``, checked; ``UserError`` naming the file."""
    b = _unpickle(blob, where)
    data = b.get(b"data") if isinstance(b, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{where}: 'data' must be uint8 (N, 3072) (32x32 RGB), got {got}")
    ys = b.get(labels_key)
    if not isinstance(ys, (list, np.ndarray)) or len(ys) != len(data):
        raise UserError(f"{where}: {labels_key.decode()!r} must list one label per image ({len(data)})")
    try:
        ys = np.asarray(ys)
    except (ValueError, TypeError):  # ragged or nested lists
        raise UserError(f"{where}: {labels_key.decode()!r} must be a flat list of integer labels") from None
    if ys.ndim != 1 or ys.dtype.kind not in "iu" or (len(ys) and (ys.min() < 0 or ys.max() >= num_classes)):
        raise UserError(f"{where}: labels must be integers 0..{num_classes - 1} (one per class name)")
    return data, ys.astype(int).tolist()
