"""What a split of a data set is, whatever its source: ``SplitLike`` (the protocol every loader reads), ``Split``
(image files or CIFAR pixels) and ``Subset`` (a split restricted to some indices)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .decode import decode_image


@dataclass
class Split:
    """One split of a data set: ``items[i]`` has label ``labels[i]``, whose name is ``classes[labels[i]]``."""

    name: str  # "train" | "val"
    items: Sequence  # file paths (str), or for CIFAR an (N, 32, 32, 3) uint8 numpy array
    labels: Sequence[int]
    classes: list[str]  # class names, index = label
    root: str  # where it came from (messages, stats cache)
    channels: int = 3  # what load gives: 3 (RGB) or 1 (gray; colour images become luma)
    window: str = "auto"  # how DICOMs and 16-bit gray images become 8 bits (data.window)
    left_out: Any = None  # listing.LeftOut: the files of its folder that were not taken as images

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:
        """Item ``i`` as ``uint8 (C, H, W)`` (RGB, or gray with ``channels=1``); raises ``DecodeError`` naming the
        file."""
        item = self.items[i]
        if isinstance(item, np.ndarray):  # (32, 32, 3)
            from ..preprocess import match_channels

            rgb = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1).contiguous()
            return match_channels(rgb, self.channels)
        return decode_image(item, window=self.window, channels=self.channels)

    def describe(self, i: int) -> str:
        """The file path of item ``i``, or e.g. ``cifar-10 train #12``."""
        if isinstance(self.items, np.ndarray):
            return f"{Path(self.root).name.split('-python')[0].split('-batches')[0]} {self.name} #{i}"
        return str(self.items[i])


def set_decoding(split, channels: int, window: str) -> None:
    """Make ``split`` (a ``Split``, or a ``Subset`` of one) decode ``channels`` channels with ``window``. A pack or an
    in-memory set holds decoded pixels: one with other channels is refused (``UserError``)."""
    from ..errors import UserError

    base = split
    while isinstance(base, Subset):
        base = base.split
    if isinstance(base, Split):
        base.channels, base.window = channels, window
        return
    images = getattr(base, "images", None)
    held = images.shape[-1] if images is not None and images.ndim == 4 else 3
    if held != channels:
        raise UserError(
            f"{getattr(base, 'root', 'the data')}: holds {held}-channel images, the model takes {channels}; "
            f"re-pack with alexnet data pack --channels {channels}, or train from the image files"
        )


class SplitLike(Protocol):
    """What every split offers, whatever its source (``Split`` for files and CIFAR, ``packed.PackedSplit``)."""

    name: str
    classes: list[str]
    labels: Any  # Sequence[int] or int64 array

    def __len__(self) -> int: ...
    def load(self, i: int) -> torch.Tensor: ...  # uint8 (3, H, W) RGB
    def describe(self, i: int) -> str: ...


class Subset:
    """``split`` restricted to ``indices`` (a ``SplitLike``): for samples, figures and bounded benchmarks."""

    def __init__(self, split, indices: Sequence[int]) -> None:
        self.split, self.indices = split, [int(i) for i in indices]
        self.name, self.classes = split.name, split.classes
        self.labels = [int(split.labels[i]) for i in self.indices]

    @property
    def root(self):
        return self.split.root

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> torch.Tensor:
        return self.split.load(self.indices[i])

    def describe(self, i: int) -> str:
        return self.split.describe(self.indices[i])
