"""Augmentation of whole uint8 batches on the device (GPU or CPU): crops, flips, PCA colour noise, normalisation.

Input batches are what a pack stores: uint8 ``(B, S, S, 3)`` (NHWC). Random parameters are drawn on the CPU from a
``torch.Generator`` (a few numbers per image, so the same seed gives the same batch on every device) and applied in
a handful of batch-wide tensor ops; no per-image Python work. Outputs are NCHW tensors that are channels-last in
memory (a free ``permute`` of NHWC), which is what convolutions on tensor cores want.

- ``paper``: a random ``crop x crop`` window, uniform over all valid offsets, flipped with probability 1/2, plus
  PCA colour noise (paper §4.1: 224 px crops of 256 px images, RGB shifted by ``[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T``,
  ``a_i ~ N(0, 0.1)``, drawn once per image per use).
- ``torchvision``: ``RandomResizedCrop(crop, scale=(0.08, 1), ratio=(3/4, 4/3))`` boxes sampled as torchvision does
  (10 tries, then a centre crop), resampled bilinearly with ``torchvision.ops.roi_align`` (one sample per output
  pixel and bin-averaging when shrinking, close to antialiased resizing), flipped with probability 1/2.
- eval: centre crop (offset ``round((S - crop) / 2)``, as torchvision) or the ten crops of ``TenCrop``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

PRESETS = ("paper", "torchvision")


@dataclass
class AugParams:
    """Per-image random parameters of one batch (CPU tensors; move them with the batch)."""

    flip: torch.Tensor  # (B,) bool
    top: torch.Tensor | None = None  # (B,) int64, paper crop
    left: torch.Tensor | None = None  # (B,) int64, paper crop
    boxes: torch.Tensor | None = None  # (B, 4) float32 x1, y1, x2, y2 in pixels, RandomResizedCrop
    alpha: torch.Tensor | None = None  # (B, 3) float32 PCA noise coefficients (already times alpha_std)

    def to(self, device: torch.device, non_blocking: bool = False) -> AugParams:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return AugParams(*(move(t) for t in (self.flip, self.top, self.left, self.boxes, self.alpha)))

    def pin_memory(self) -> AugParams:
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()

        return AugParams(*(pin(t) for t in (self.flip, self.top, self.left, self.boxes, self.alpha)))


# ---------------------------------------------------------------------------------------------------------------------
# sampling the parameters (CPU, seeded)


def sample_paper(n: int, size: int, crop: int, generator: torch.Generator, *, pca_std: float | None) -> AugParams:
    """Uniform crop offsets in ``[0, size - crop]``, flips with p = 1/2, and (if ``pca_std``) PCA coefficients."""
    top = torch.randint(0, size - crop + 1, (n,), generator=generator)
    left = torch.randint(0, size - crop + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    alpha = None if pca_std is None else torch.randn(n, 3, generator=generator) * pca_std
    return AugParams(flip=flip, top=top, left=left, alpha=alpha)


def sample_resized_crop(
    n: int,
    size: int,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    pca_std: float | None = None,
    tries: int = 10,
) -> AugParams:
    """Boxes distributed as ``torchvision.transforms.RandomResizedCrop.get_params`` on a ``size x size`` image."""
    area = float(size * size)
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = ok.to(torch.int8).argmax(1)  # first try that fits, as torchvision's loop
    w = w.gather(1, first[:, None])[:, 0]
    h = h.gather(1, first[:, None])[:, 0]
    # None fits in 10 tries: torchvision falls back to the whole (square, so ratio 1 is in range) image.
    any_ok = ok.any(1)
    w = torch.where(any_ok, w, torch.full_like(w, size))
    h = torch.where(any_ok, h, torch.full_like(h, size))
    u = torch.rand(n, 2, generator=generator)  # offsets uniform over [0, size - h] x [0, size - w]
    top = torch.floor(u[:, 0] * (size - h + 1)).clamp(max=size - h)
    left = torch.floor(u[:, 1] * (size - w + 1)).clamp(max=size - w)
    flip = torch.rand(n, generator=generator) < 0.5
    alpha = None if pca_std is None else torch.randn(n, 3, generator=generator) * pca_std
    boxes = torch.stack([left, top, left + w, top + h], 1).float()
    return AugParams(flip=flip, boxes=boxes, alpha=alpha)


# ---------------------------------------------------------------------------------------------------------------------
# applying them (any device)


def crop_flip(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, crop: int
) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> uint8 (B, 3, crop, crop) channels-last: per-image windows, mirrored where ``flip``."""
    b = images.shape[0]
    ar = torch.arange(crop, device=images.device)
    rows = top[:, None] + ar  # (B, crop)
    cols = left[:, None] + torch.where(flip[:, None], crop - 1 - ar, ar)  # (B, crop), reversed when flipped
    idx = torch.arange(b, device=images.device)[:, None, None]
    out = images[idx, rows[:, :, None], cols[:, None, :]]  # (B, crop, crop, 3): one gather kernel
    return out.permute(0, 3, 1, 2)


def resized_crop_flip(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, crop, crop) in [0, 255]: each box resampled bilinearly, then mirrored."""
    from torchvision.ops import roi_align

    x = images.permute(0, 3, 1, 2).contiguous().float()  # (B, 3, S, S); roi_align is ~2x faster on NCHW
    idx = torch.arange(len(boxes), device=images.device, dtype=boxes.dtype)[:, None]
    # aligned=True: box (x1, y1, x2, y2) covers pixels [x1, x2) x [y1, y2) exactly (pixel k spans [k, k+1)).
    out = roi_align(
        x, torch.cat([idx, boxes], 1), output_size=(crop, crop), spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> uint8 (B, 3, crop, crop) view: the centre window (torchvision's rounding)."""
    s = images.shape[1]
    o = round((s - crop) / 2.0)
    return images[:, o : o + crop, o : o + crop].permute(0, 3, 1, 2)


def ten_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> uint8 (B, 10, 3, crop, crop) in torchvision ``TenCrop`` order."""
    s = images.shape[1]
    e, c = s - crop, round((s - crop) / 2.0)

    def five(x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, 5, 3, crop, crop)
        windows = [(0, 0), (0, e), (e, 0), (e, e), (c, c)]
        return torch.stack([x[..., t : t + crop, c0 : c0 + crop] for t, c0 in windows], 1)

    x = images.permute(0, 3, 1, 2)
    # as torchvision: the five crops of the image, then the five crops of the mirrored image
    return torch.cat([five(x), five(x.flip(-1))], 1)


def normalize(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 or float [0, 255] (B, 3, H, W) -> float32 ``(x / 255 + shift - mean) / std``, one fused multiply-add.

    ``mean``, ``std``: (3,) in [0, 1] scale; ``shift``: optional per-image (B, 3) colour shift in [0, 1] scale.
    Keeps the memory format of ``x``.
    """
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    bias = -mean / std
    bias = bias.view(1, 3, 1, 1) if shift is None else ((shift - mean) / std)[:, :, None, None]
    return torch.addcmul(bias, x.float(), scale) if x.dtype == torch.uint8 else torch.addcmul(bias, x, scale)


def as_tensor3(values: Sequence[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float32 tensor on ``device`` from a list/tuple/tensor (mean, std, eigvals...)."""
    return torch.as_tensor(values, dtype=torch.float32).to(device)
