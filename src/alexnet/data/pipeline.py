"""From a training config to ready loaders: finds the source, its statistics and the right pipeline.

A packed data set (``alexnet data pack``) gets the packed loader (augmentation on the device); anything else gets
the folder pipeline. Both yield normalised float batches on the training device.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import TrainConfig

SYNTHETIC_IMAGE_SIZE = 64  # px: the built-in synthetic data set's images


@dataclass
class DataBundle:
    train: Any  # a loader: set_epoch(), __len__, __iter__ -> (x, y) on the device
    val: Any | None
    classes: list[str]
    preprocess: dict  # {"resize", "crop", "mean", "std"}: what evaluate/predict/export need
    description: str
    val_ten_crop: Callable[[], Any]


def image_sizes(cfg: TrainConfig) -> tuple[int, int]:
    """(crop, resize) in px. Defaults: 224 / 256 (the paper's), or 64 / 73 for the built-in 64-px data."""
    crop = cfg.image_size or (SYNTHETIC_IMAGE_SIZE if cfg.data is None and not cfg.train_dir else 224)
    if cfg.resize_size:
        return crop, cfg.resize_size
    return crop, round(crop * 256 / 224)


def default_workers(device: torch.device | None = None) -> int:
    """Loader processes: none when training on the CPU (decoding and cropping cost a few % of a CPU step, and extra
    processes would only take cores from the model), else all cores but one, at most 8."""
    import os

    if device is not None and device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def build_data(
    cfg: TrainConfig, *, device: torch.device, rank: int = 0, world_size: int = 1, channels_last: bool = False
) -> DataBundle:
    crop, resize = image_sizes(cfg)
    if cfg.batch_size % world_size:
        from ..errors import UserError

        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world_size} processes")
    per_rank = cfg.batch_size // world_size
    if cfg.data is not None and _is_packed(cfg.data):
        from .packed import read_manifest
        from .packed_loader import PackedLoader

        manifest = read_manifest(cfg.data)
        stats, classes, has_val = manifest["stats"], list(manifest["classes"]), "val" in manifest["splits"]
        resize = manifest["size"]  # the pack's images are already resized: crops come from them directly

        def make(split: str, **kw):
            return PackedLoader(cfg.data, split, **kw)

        counts = ", ".join(f"{v['count']} {k}" for k, v in manifest["splits"].items())
        desc = f"{cfg.data} (packed {resize} px): {counts}"
    else:
        from .loader import FolderLoader
        from .sources import open_splits
        from .stats import load_or_compute_stats

        splits = dict(zip(("train", "val"), open_splits(cfg.data, train_dir=cfg.train_dir, val_dir=cfg.val_dir)))
        stats = load_or_compute_stats(splits["train"], max_images=5000, progress=rank == 0 and sys.stderr.isatty())
        classes, has_val = list(splits["train"].classes), splits["val"] is not None
        workers = cfg.workers if cfg.workers is not None else default_workers(device)

        def make(split: str, **kw):
            return FolderLoader(splits[split], resize_size=resize, workers=workers,
                                max_bad_fraction=cfg.max_bad_fraction, **kw)  # fmt: skip

        source = cfg.data or cfg.train_dir or "built-in synthetic data"
        n_val = len(splits["val"]) if has_val else 0
        desc = f"{source}: {len(splits['train'])} train / {n_val} val images, {crop} px crops"

    common = dict(crop_size=crop, mean=stats["mean"], std=stats["std"], seed=cfg.seed, device=device, rank=rank,
                  world_size=world_size, channels_last=channels_last)  # fmt: skip
    train = make("train", batch_size=per_rank, train=True, preset=cfg.augment, pca=stats, pca_std=cfg.pca_std, **common)
    val = make("val", batch_size=per_rank, train=False, **common) if has_val else None

    def ten_crop():
        return make("val", batch_size=max(1, per_rank // 10), train=False, ten_crop=True, **common)

    preprocess = {"resize": resize, "crop": crop, "mean": list(stats["mean"]), "std": list(stats["std"])}
    return DataBundle(train, val, classes, preprocess, desc, ten_crop)


def _is_packed(path: str) -> bool:
    try:
        from .packed import is_packed
    except ImportError:
        return False
    return is_packed(path)
