"""Gray images over 8 bits that ``--window auto`` spreads badly (``window.auto_advice``): named by ``data check`` from
every file, and by ``train`` from an evenly spaced sample of its train split before it starts, so a set of 12-bit
values in 16-bit files is not trained on as ~16 gray levels without a word."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..limits import limits, read_bounded
from . import dicom
from .decode import WIDE_GRAY_MODES, read_header
from .window import auto_advice, value_range

SAMPLE = 16  # files read whole before training (evenly spaced over the train split)


def wide_gray_facts(img, path: str) -> tuple[str, bool, float, float] | None:
    """``(path, integer values, low, high)`` of an opened Pillow image over 8 bits (finite values), else None."""
    if img.mode not in WIDE_GRAY_MODES:
        return None
    return path, img.mode != "F", *value_range(np.asarray(img))


def _file_facts(path: str) -> tuple[str, bool, float, float] | None:
    """``wide_gray_facts`` of an image file; None for a DICOM (it has its own window) or an unreadable file (the
    loader reports it)."""
    try:
        data = read_bounded(path, limits().max_image_file_bytes, "image")
        return None if dicom.is_dicom(data) else wide_gray_facts(read_header(data, path), path)
    except (UserError, OSError, ValueError):  # a truncated file fails on np.asarray: the loader names it
        return None


def sampled_advice(split, sample: int = SAMPLE) -> list[str]:
    """``auto_advice`` for an evenly spaced sample of ``split``'s files ([] for decoded sets: CIFAR, packs)."""
    items = getattr(split, "items", None)
    if items is None or isinstance(items, np.ndarray) or len(items) == 0:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, min(sample, len(items))).astype(int))
    facts = [f for f in (_file_facts(str(items[i])) for i in idx) if f is not None]
    return auto_advice(f"{split.name} (a sample of {len(idx)} images)", facts)
