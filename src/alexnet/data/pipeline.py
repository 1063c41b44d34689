"""From a training config to ready loaders: open the data set, decide its preprocessing, make the loaders.

``open_dataset`` finds the source (pack, folders, ImageNet, CIFAR, built-in); ``make_loader`` picks the pipeline.
The ``Preprocess`` built here (crop, resize, mean and std of the training data) is stored in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import UserError
from ..preprocess import Preprocess
from .channels import LUMA
from .loading import Loader, make_loader
from .loading.memory import fits_in_memory, load_into_memory
from .loading.skipped import Skipped
from .pack.reader import PackedSplit
from .sources import Dataset, open_dataset
from .split import Subset, set_decoding

SYNTHETIC_IMAGE_SIZE = 64  # px: the built-in synthetic data set's images
# Under a time budget the epoch ends before the last validate every k-th val image, at most this many: a 10,000-image
# val took ~6 s of a 5-minute budget at each of 4-5 epoch ends on 2 cores; 2,000 tell the progress to about +-1 point
BUDGET_VAL_IMAGES = 2000
__all__ = ["DataBundle", "build_data", "open_training_data", "training_preprocess"]


@dataclass
class DataBundle:
    train: Loader
    val: Loader | None
    classes: list[str]
    preprocess: Preprocess  # what evaluate/predict/export need, stored in checkpoints as ``preprocess.to_dict()``
    description: str
    val_ten_crop: Callable[[], Loader]
    dataset: Dataset
    val_epochs: Loader | None = None  # validated at the epoch ends before the last (None: val; see build_data)


def training_preprocess(cfg: TrainConfig, dataset: Dataset, stats: dict) -> Preprocess:
    """Crop (``cfg.image_size``, chosen from the data when not given: ``alexnet.auto``) and resize in px, the
    training data's mean and std (of the luma for ``cfg.in_channels`` 1), the channels and the window. A pack's
    stored size is its resize (its images are already resized)."""
    crop = cfg.image_size or (SYNTHETIC_IMAGE_SIZE if dataset.kind == "synthetic" else 224)
    channels = cfg.in_channels or 3
    stats = gray_stats(stats) if channels == 1 else stats
    decoding = {"channels": channels, "window": cfg.window}
    if dataset.kind == "pack":
        if cfg.resize_size and cfg.resize_size != dataset.image_size:
            raise UserError(
                f"--resize-size {cfg.resize_size}: {dataset.source} holds {dataset.image_size} px images; "
                "re-pack with --size to change it"
            )
        if crop > dataset.image_size:
            raise UserError(
                f"--image-size {crop} px is larger than the packed images ({dataset.image_size} px in "
                f"{dataset.source}); re-pack with a larger --size or crop smaller"
            )
        resize, mode = dataset.image_size, dataset.resize_mode or "shorter"
        packed_window = getattr(dataset.train, "manifest", {}).get("window", "auto")  # its pixels are windowed
        if cfg.window not in ("auto", packed_window):
            raise UserError(
                f"--window {cfg.window}: {dataset.source} was packed with window {packed_window}; re-pack with "
                f"--window {cfg.window}"
            )
        decoding["window"] = packed_window
        return Preprocess(crop=crop, resize=resize, mean=stats["mean"], std=stats["std"], resize_mode=mode, **decoding)
    return Preprocess.for_crop(crop, resize=cfg.resize_size, mean=stats["mean"], std=stats["std"], **decoding)


def data_geometry(cfg: TrainConfig, dataset: Dataset) -> Preprocess:
    """``training_preprocess`` without the colour statistics (placeholders): crop, resize, channels and window. Its
    ``UserError`` (a pack smaller than the crop, packed at another resize or window) comes before anything slow."""
    return training_preprocess(cfg, dataset, {"mean": (0.5,) * 3, "std": (0.25,) * 3})


def gray_stats(stats: dict) -> dict:
    """RGB statistics -> those of the luma ``L = w . rgb``: mean ``w . mean``, std ``sqrt(w^T cov w)`` (the RGB
    covariance from the eigen-decomposition; exact, and for a gray set R = G = B gives the gray values' own)."""
    import numpy as np

    w = np.array(LUMA)
    mean = float(w @ np.asarray(stats["mean"], np.float64))
    if "eigvals" in stats and "eigvecs" in stats:
        vecs = np.asarray(stats["eigvecs"], np.float64)
        var = float(w @ (vecs @ np.diag(stats["eigvals"]) @ vecs.T) @ w)
    else:  # no covariance: the channels' stds, as if perfectly correlated (gray)
        var = float(w @ np.asarray(stats["std"], np.float64)) ** 2
    from ..preprocess import MIN_STD_GRAY

    return {**stats, "mean": [mean], "std": [max(var, 0.0) ** 0.5 or MIN_STD_GRAY]}


def open_training_data(
    cfg: TrainConfig, *, stored_split: dict | None = None, log: Callable[[str], None] = print
) -> Dataset:
    """The data set ``cfg`` names, with a train split (``UserError`` otherwise). Image folders without a val split
    get one held out (``holdout.with_holdout``: ``cfg.val_fraction``, ``cfg.seed``; ``stored_split``: a resumed
    run's ``split.json``); a run left without validation says so once (best.pt is then chosen by train loss), as
    does each image folder whose files were left out as not images (``listing.LeftOut``)."""
    from .holdout import with_holdout

    dataset = open_dataset(cfg.data, train_dir=cfg.train_dir, val_dir=cfg.val_dir)
    for left_out in dataset.left_out:  # e.g. 8 of 24 photos are .heic: said once, not trained on unknowingly
        if said := left_out.line():
            log(f"warning: {said}")
    dataset, line = with_holdout(dataset, cfg.val_fraction, cfg.seed, stored=stored_split, train_dir=cfg.train_dir)
    if dataset.kind == "pack":  # a val split held out when it was packed: --val-fraction and --seed cannot move it
        held = getattr(dataset.train, "manifest", {}).get("held_out")  # read (and checked) by open_dataset
        if held:
            line = (f"validation: the pack's val split, held out when it was packed (--val-fraction "
                    f"{held['val_fraction']:g}, --seed {held['seed']}; repack to change it)")  # fmt: skip
    if line:
        log(line)
    if dataset.train is None:
        raise UserError(f"{dataset.source}: has no train split to train on")
    labels = getattr(dataset.train, "labels", None)
    present = len(np.unique(np.asarray(labels))) if labels is not None else 0
    if labels is not None and present < 2:  # one class "trains" to 100% top-1 and means nothing
        raise UserError(
            f"{dataset.source}: its training images are of {present} class{'' if present == 1 else 'es'}; "
            "classification needs at least 2 (one sub-folder of images per class)"
        )
    if dataset.val is None:
        how = ("give --val-dir" if cfg.train_dir else
               "give DATA with a val/ folder" if cfg.val_fraction == 0 or dataset.kind not in ("folder", "folders")
               else "add images: no class has two")  # fmt: skip
        if cfg.train_dir and cfg.val_fraction:
            how += ", or pass the folder as DATA to hold out --val-fraction of it"
        elif cfg.val_fraction == 0 and dataset.kind in ("folder", "folders"):
            how += ", or a --val-fraction above 0"
        log(f"warning: no validation split: best.pt is chosen by train loss and no accuracy is measured; {how}")
    return dataset


def build_data(
    cfg: TrainConfig,
    dataset: Dataset,
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    log: Callable[[str], None] = print,
) -> DataBundle:
    """Loaders for ``dataset`` as ``cfg`` says (``cfg.batch_size`` and ``cfg.image_size`` resolved, see
    ``alexnet.auto``). Image files that fit in memory are decoded once into RAM (``cfg.in_memory``,
    ``loading.memory``)."""
    if cfg.batch_size % world_size:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world_size} processes")
    per_rank = cfg.batch_size // world_size
    splits = {"train": dataset.train, "val": dataset.val}
    stats = dataset.stats
    show = rank == 0 and sys.stderr.isatty()
    geometry = data_geometry(cfg, dataset)
    for split in (dataset.train, dataset.val):  # decode as the model wants: its channels, the window
        if split is not None:
            set_decoding(split, geometry.channels, geometry.window)
    if use_memory(cfg, dataset, geometry.resize, world_size):
        t0 = time.perf_counter()
        workers = _decoders(dataset)
        splits["train"], stats = load_into_memory(dataset.train, geometry.resize, workers=workers, progress=show)
        if dataset.val is not None:
            splits["val"] = load_into_memory(dataset.val, geometry.resize, workers=workers, progress=show)[0]
        skipped = report_skipped(dataset, splits, cfg.max_bad_fraction, warn=rank == 0)
        held = sum(s.images.nbytes for s in splits.values() if s is not None)
        if rank == 0:
            log(f"in memory: {_counts(splits, skipped)} decoded once at {geometry.resize} px ({held / 2**20:.0f} MiB) "
                f"in {time.perf_counter() - t0:.1f} s; --in-memory off to read the files every epoch")  # fmt: skip
    elif dataset.kind == "pack":
        skipped = report_skipped(dataset, splits, cfg.max_bad_fraction, warn=rank == 0)
    else:
        skipped = None  # found by the folder loader while it decodes
        if stats is None:
            from .stats import load_or_compute_stats

            stats = load_or_compute_stats(dataset.train, max_images=5000, progress=show)
    preprocess = training_preprocess(cfg, dataset, stats)

    def make(split, **kw) -> Loader:
        return make_loader(split, preprocess, batch_size=per_rank, seed=cfg.seed, device=device, rank=rank,
                           world_size=world_size, channels_last=channels_last, workers=cfg.workers,
                           max_bad_fraction=cfg.max_bad_fraction, **kw)  # fmt: skip

    train = make(splits["train"], train=True, preset=cfg.augment, pca=stats, pca_std=cfg.pca_std)
    val = make(splits["val"]) if splits["val"] is not None else None
    val_epochs = None
    if val is not None and cfg.time_budget and len(splits["val"]) > BUDGET_VAL_IMAGES:
        val_epochs = make(spread_subset(splits["val"], BUDGET_VAL_IMAGES))

    def ten_crop() -> Loader:
        return make_loader(splits["val"], preprocess, batch_size=max(1, per_rank // 10), ten_crop=True, seed=cfg.seed,
                           device=device, rank=rank, world_size=world_size, workers=cfg.workers)  # fmt: skip

    desc = f"{dataset.describe(_counts(splits, skipped) if skipped else None)}; {preprocess.crop} px crops"
    return DataBundle(train, val, list(dataset.classes), preprocess, desc, ten_crop, dataset, val_epochs)


def spread_subset(split, most: int):
    """Every k-th image of ``split``, at most ``most`` (k the smallest that gives so few): spread over the whole
    split, so a split in class order keeps its class shares. A memory-mapped or in-memory split stays one (a
    strided view, nothing copied); any other becomes a ``Subset``."""
    k = -(-len(split) // most)
    if k <= 1:
        return split
    if isinstance(split, PackedSplit):
        return dataclasses.replace(split, images=split.images[::k], labels=split.labels[::k])
    return Subset(split, range(0, len(split), k))


def use_memory(cfg: TrainConfig, dataset: Dataset, size: int, world_size: int = 1) -> bool:
    """Decode into memory? Never for packs (already decoded, memory-mapped); else ``cfg.in_memory``, or when every
    process's copy fits (``memory.fits_in_memory``)."""
    if dataset.kind == "pack" or cfg.in_memory is False:
        return False
    return bool(cfg.in_memory) or fits_in_memory(_images(dataset) * world_size, size, cfg.in_channels or 3)


def report_skipped(dataset: Dataset, splits: dict, max_bad_fraction: float, *, warn: bool = True) -> dict[str, int]:
    """Account for the images a pack or an in-memory set could not decode, as the folder loader does for the files
    it reads (``skipped.Skipped``: named once, bounded, ``UserError`` above ``max_bad_fraction``); returns the count
    per split. ``warn``: print the lines (one process of several prints them)."""
    counts = {}
    for name, split in splits.items():
        if split is None:
            continue
        files = split.skipped
        total = len(split) + len(files)
        record = Skipped(name, str(split.root), total, max_bad_fraction)
        if warn:
            record.add_all(files).summarise()
        record.check(len(files))
        counts[name] = len(files)
    return counts


def _counts(splits: dict, skipped: dict[str, int]) -> str:
    """``120 train (20 unreadable, skipped), 20 val images``: what the loaders hold."""
    parts = [f"{len(s):,} {n}" + (f" ({skipped[n]:,} unreadable, skipped)" if skipped.get(n) else "")
             for n, s in splits.items() if s is not None]  # fmt: skip
    return ", ".join(parts) + " images"


def _decoders(dataset: Dataset) -> int:
    """Processes decoding into memory: all cores for sets large enough to repay starting them."""
    return 0 if _images(dataset) < 4000 else min(8, os.cpu_count() or 1)


def _images(dataset: Dataset) -> int:
    return sum(len(s) for s in dataset.splits.values())
