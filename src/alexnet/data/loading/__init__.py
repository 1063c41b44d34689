"""Loading: one loader factory for every split, ``make_loader(split, preprocess, ...)`` -> a ``Loader``.

A pack's split, or a small set decoded into RAM (``memory``), gets the packed loader (``packed``: rows copied out of
an array, augmented on the device in whole batches); image files and CIFAR get the folder loader (``folder``: decode
+ crop in DataLoader workers). Both follow the ``Loader`` protocol, so training, evaluation, features, plots and
the benchmark never ask which one they hold. What they share: the per-rank order and batching
(``sampling.loader_batches``), the accounting of unreadable images (``skipped``) and the final device step, colour
noise and normalisation in one pass (``device_ops.normalize``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from ...preprocess import Preprocess
from ..channels import LUMA
from ..pack.reader import PackedSplit
from ..split import set_decoding


class Loader(Protocol):
    """Batches of one split for one rank: ``(x, y)`` on the device, ``x`` normalised float32 ``(B, 3, c, c)`` (or
    ``(B, 10, 3, c, c)`` for ten crops), ``y`` int64 ``(B,)``. Every random choice is a function of (seed, epoch,
    sample index), so ``set_epoch(e, start_batch)`` reproduces any epoch from any batch."""

    classes: list[str]
    num_samples: int
    bad_files: list[tuple[str, str]]  # (file, reason) skipped in the current epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...
    def __len__(self) -> int: ...  # batches in this rank's epoch
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def make_loader(
    split,
    preprocess: Preprocess,
    *,
    batch_size: int,
    train: bool = False,
    preset: str = "paper",
    pca: dict | None = None,
    pca_std: float = 0.0,
    ten_crop: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    workers: int | None = None,
    max_bad_fraction: float = 0.01,
) -> Loader:
    """A loader over ``split`` (any ``SplitLike``) cropping and normalising as ``preprocess`` says.

    ``train``: shuffled per epoch, ``preset`` augmentation ("paper": random crop + flip of the ``resize`` square,
    PCA colour noise with ``pca_std`` from ``pca``; "torchvision": RandomResizedCrop + flip). Else: centre crop (or
    ``ten_crop``), in order. ``workers``: decoding processes for image files (default: none on the CPU, else cores - 1).
    """
    device = torch.device(device)
    set_decoding(split, preprocess.channels, preprocess.window)
    if preprocess.channels == 1 and pca is not None:
        # the luma of the paper's RGB colour noise, LUMA . V (alpha * eigvals): exactly the brightness shift that an
        # RGB run gives a gray image's (x, x, x), so a 1-channel run is augmented as that run is
        luma = torch.tensor(LUMA, dtype=torch.float64) @ torch.as_tensor(pca["eigvecs"], dtype=torch.float64)
        pca = {**pca, "eigvecs": luma[None].tolist()}  # (1, 3): a (B, 1) shift
    common = dict(batch_size=batch_size, train=train, preset=preset, crop_size=preprocess.crop,
                  mean=preprocess.mean, std=preprocess.std, pca=pca, pca_std=pca_std, seed=seed, device=device,
                  rank=rank, world_size=world_size, channels_last=channels_last, ten_crop=ten_crop)  # fmt: skip
    if isinstance(split, PackedSplit):
        from .packed import PackedLoader

        return PackedLoader(split, **common)
    from .folder import FolderLoader

    return FolderLoader(split, resize_size=preprocess.resize, resize_mode=preprocess.resize_mode,
                        workers=default_workers(device) if workers is None else workers,
                        max_bad_fraction=max_bad_fraction, **common)  # fmt: skip


def default_workers(device: torch.device | None = None) -> int:
    """Loader processes: none when training on the CPU (decoding and cropping cost a few % of a CPU step, and extra
    processes would only take cores from the model), else all cores but one, at most 8."""
    import os

    if device is not None and device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))
