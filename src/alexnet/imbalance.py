"""Imbalanced classes: how uneven a split is, and the class weights of ``train --balance``.

``data check`` reports ``imbalance_ratio`` (largest class / smallest) and warns past ``WARN_RATIO``; ``--balance``
weights the cross-entropy by ``balanced_weights``: a class with n_c of the N images weighs N / (C * n_c), so every
class adds the same total to the loss however many images it has (sklearn's ``class_weight="balanced"``).
Measured against a weighted sampler's alternative, no sampler: see the README's "Imbalanced classes".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

import numpy as np

WARN_RATIO = 3.0  # data check warns when the largest class has more than this many times the smallest one's images


def class_counts(labels: Iterable[int] | np.ndarray, num_classes: int) -> list[int]:
    """Images per class: ``counts[c]`` for c in ``range(num_classes)``."""
    return np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes].tolist()


def imbalance_ratio(counts: Sequence[int]) -> float | None:
    """Largest over smallest count among the classes that have images; ``None`` when fewer than two have any."""
    present = [n for n in counts if n > 0]
    return max(present) / min(present) if len(present) >= 2 else None


def balanced_weights(counts: Sequence[int]) -> torch.Tensor:
    """Cross-entropy class weights N / (C * n_c) over the C classes that have images (float32, one per class).

    Their mean over the training images is 1, so the loss keeps its scale; a class without images gets 0 (it is
    never a target). Equal counts give all ones.
    """
    import torch  # here: data check uses this module without torch

    n = torch.as_tensor(counts, dtype=torch.float64)
    present = n > 0
    weights = torch.where(present, n.sum() / (present.sum() * n.clamp_min(1)), 0.0)
    return weights.float()


def describe_weights(weights: torch.Tensor, classes: Sequence[str]) -> str:
    """One line for the run's log: the weights' range and the classes at its ends."""
    w = weights.tolist()
    used = [i for i, x in enumerate(w) if x > 0]  # classes with images
    lo, hi = min(used, key=w.__getitem__), max(used, key=w.__getitem__)
    return (f"balance: loss weight per class = images / (classes x its images), {w[lo]:.2f} ({classes[lo]}) to "
            f"{w[hi]:.2f} ({classes[hi]})")  # fmt: skip
