"""From a training config to ready loaders: open the data set, decide its preprocessing, make the loaders.

``open_dataset`` finds the source (pack, folders, ImageNet, CIFAR, built-in); ``make_loader`` picks the pipeline.
The ``Preprocess`` built here (crop, resize, mean and std of the training data) is stored in every checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..errors import UserError
from ..preprocess import Preprocess
from .loaders import Loader, make_loader
from .sources import Dataset, open_dataset

SYNTHETIC_IMAGE_SIZE = 64  # px: the built-in synthetic data set's images
__all__ = ["DataBundle", "build_data", "training_preprocess"]


@dataclass
class DataBundle:
    train: Loader
    val: Loader | None
    classes: list[str]
    preprocess: Preprocess  # what evaluate/predict/export need, stored in checkpoints as ``preprocess.to_dict()``
    description: str
    val_ten_crop: Callable[[], Loader]
    dataset: Dataset


def training_preprocess(cfg: TrainConfig, dataset: Dataset, stats: dict) -> Preprocess:
    """Crop and resize in px, the training data's mean and std. Defaults: crop 224 and resize 256 (the paper's);
    64 / 73 on the built-in 64-px data; a pack's stored size is its resize (its images are already resized)."""
    crop = cfg.image_size or (SYNTHETIC_IMAGE_SIZE if dataset.kind == "synthetic" else 224)
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
        return Preprocess(crop=crop, resize=resize, mean=stats["mean"], std=stats["std"], resize_mode=mode)
    return Preprocess.for_crop(crop, resize=cfg.resize_size, mean=stats["mean"], std=stats["std"])


def build_data(
    cfg: TrainConfig, *, device: torch.device, rank: int = 0, world_size: int = 1, channels_last: bool = False
) -> DataBundle:
    if cfg.batch_size % world_size:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world_size} processes")
    per_rank = cfg.batch_size // world_size
    dataset = open_dataset(cfg.data, train_dir=cfg.train_dir, val_dir=cfg.val_dir)
    if dataset.train is None:
        raise UserError(f"{dataset.source}: has no train split to train on")
    if dataset.stats is not None:
        stats = dataset.stats
    else:
        from .stats import load_or_compute_stats

        stats = load_or_compute_stats(dataset.train, max_images=5000, progress=rank == 0 and sys.stderr.isatty())
    preprocess = training_preprocess(cfg, dataset, stats)

    def make(split, **kw) -> Loader:
        return make_loader(split, preprocess, batch_size=per_rank, seed=cfg.seed, device=device, rank=rank,
                           world_size=world_size, channels_last=channels_last, workers=cfg.workers,
                           max_bad_fraction=cfg.max_bad_fraction, **kw)  # fmt: skip

    train = make(dataset.train, train=True, preset=cfg.augment, pca=stats, pca_std=cfg.pca_std)
    val = make(dataset.val) if dataset.val is not None else None

    def ten_crop() -> Loader:
        return make_loader(dataset.val, preprocess, batch_size=max(1, per_rank // 10), ten_crop=True, seed=cfg.seed,
                           device=device, rank=rank, world_size=world_size, workers=cfg.workers)  # fmt: skip

    desc = f"{dataset.describe()}; {preprocess.crop} px crops"
    return DataBundle(train, val, list(dataset.classes), preprocess, desc, ten_crop, dataset)
