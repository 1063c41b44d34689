"""The augmentation presets, defined once. Two implementations draw from them: ``transforms.TrainTransform``, per
image with a ``torch.Generator`` per sample (the folder loader, in DataLoader workers), and ``batch_aug``, per batch
from counter-based uniforms (the packed and in-memory loaders, on the device). ``tests/test_data_presets.py`` checks
that both sample the same distribution (offsets, flip rate, box scale and aspect, colour noise).

- ``paper`` (§4.1): a random ``crop x crop`` window of the stored ``resize x resize`` square, uniform over all
  offsets, mirrored with probability ``FLIP_P``, plus PCA colour noise ``alpha ~ N(0, pca_std)`` per image.
- ``torchvision``: ``RandomResizedCrop(crop, scale=RRC_SCALE, ratio=RRC_RATIO)`` (10 tries, then a fallback) +
  flip with probability ``FLIP_P``.
"""

from __future__ import annotations

PRESETS = ("paper", "torchvision")
FLIP_P = 0.5  # probability of a horizontal mirror
RRC_SCALE = (0.08, 1.0)  # RandomResizedCrop: fraction of the image's area
RRC_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop: width / height
RRC_TRIES = 10  # RandomResizedCrop: boxes tried before the fallback


def centre_offset(size: int, crop: int) -> int:
    """Offset of the central ``crop`` window in ``size`` px, rounded as torchvision's ``center_crop``."""
    return round((size - crop) / 2)
