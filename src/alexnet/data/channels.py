"""How many input channels a data set wants: 1 when its images are grayscale (``--in-channels auto``).

A grayscale set decoded as RGB costs three times the decoding, memory and conv1 work for the same information, so
``alexnet train`` chooses a single-channel model when every image of an evenly spaced sample is stored gray: a DICOM
whose photometric interpretation is MONOCHROME1/2, or a PNG/TIFF/JPEG/BMP in Pillow's gray modes (8/16/32-bit, 1-bit,
gray + alpha). Only headers are read. An RGB file whose three channels happen to be equal counts as colour.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as decoding converts colour to gray
SAMPLE = 64  # files whose headers are read (evenly spaced over the train split)


def stored_gray(path: str) -> bool | None:
    """Whether an image file is stored grayscale (None: unreadable, so no vote)."""
    from .decode import stored_header

    header = stored_header(path)
    return None if header is None else header[2]


def sampled_gray(split, sample: int = SAMPLE) -> tuple[bool, int]:
    """``(every sampled image is gray, how many were read)``. Decoded sets (CIFAR, packs) answer from their array."""
    images = getattr(split, "images", None)
    if images is not None and getattr(images, "ndim", 0) == 4:  # a pack or an in-memory set: (N, S, S, C)
        return images.shape[-1] == 1, len(split)
    items = getattr(split, "items", None)
    if items is None or isinstance(items, np.ndarray) or len(items) == 0:  # CIFAR: RGB pixels
        return False, 0
    idx = np.unique(np.linspace(0, len(items) - 1, min(sample, len(items))).astype(int))
    votes = [v for v in (stored_gray(str(items[i])) for i in idx) if v is not None]
    return bool(votes) and all(votes), len(votes)


def choose_in_channels(cfg, dataset):
    """``(cfg with in_channels resolved, the line saying why, or None when given)``: 1 when every sampled train image
    is gray, else 3."""
    if cfg.in_channels is not None:
        return cfg, None
    gray, n = sampled_gray(dataset.train)
    if not gray:
        return dataclasses.replace(cfg, in_channels=3), None  # the usual case: said only when it is 1
    return dataclasses.replace(cfg, in_channels=1), f"in-channels 1 (all {n} sampled train images are grayscale)"
