"""Augmentation of whole uint8 batches on the device (GPU or CPU): crops, flips, PCA colour noise, normalisation.

Input batches are what a pack stores: uint8 ``(B, S, S, 3)`` (NHWC). Random parameters are drawn on the CPU, per
sample, from ``sampling.uniforms(seed, epoch, index)`` (a few numbers per image), so a sample gets the same crop on
every device, in any batch and on any DDP rank. Outputs are NCHW tensors that are channels-last in memory (a free
``permute`` of NHWC), which is what convolutions on tensor cores want.

The presets are defined in ``presets``; here is their batched implementation.

- ``paper``: a random ``crop x crop`` window, uniform over all valid offsets, flipped with probability 1/2, plus
  PCA colour noise (paper §4.1: 224 px crops of 256 px images, RGB shifted by ``[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T``,
  ``a_i ~ N(0, 0.1)``, drawn once per image per use).
- ``torchvision``: ``RandomResizedCrop(crop, scale=(0.08, 1), ratio=(3/4, 4/3))`` boxes sampled as torchvision does
  (10 tries, then a centre crop), resized exactly as torchvision's ``resized_crop(antialias=True)``, flipped with
  probability 1/2.
- eval: ``transforms.center_crop`` of the NCHW view, or the ten crops of ``TenCrop``.

On CUDA (and any non-CPU device) every step is a few batch-wide kernels, with no per-image work. On the CPU the
crops run image by image, because there that is faster: a slice copy or one call of PyTorch's vectorised uint8
resize kernel per image costs less than one batched gather or matmul (timings in the function docs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .presets import FLIP_P, RRC_RATIO, RRC_SCALE, RRC_TRIES, centre_offset
from .sampling import normals, uniforms


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


def sample_paper(
    indices: torch.Tensor, size: int, crop: int, *, seed: int, epoch: int, pca_std: float | None
) -> AugParams:
    """Uniform crop offsets in ``[0, size - crop]``, flips with p = 1/2, and (if ``pca_std``) PCA coefficients."""
    u = uniforms(indices, 9, seed=seed, epoch=epoch)
    top, left = np.minimum(np.floor(u[:, :2] * (size - crop + 1)), size - crop).astype(np.int64).T
    return AugParams(
        flip=torch.from_numpy(u[:, 2] < FLIP_P),
        top=torch.from_numpy(np.ascontiguousarray(top)),
        left=torch.from_numpy(np.ascontiguousarray(left)),
        alpha=None if pca_std is None else torch.from_numpy((normals(u[:, 3:9]) * pca_std).astype(np.float32)),
    )


def sample_resized_crop(
    indices: torch.Tensor,
    size: int,
    *,
    seed: int,
    epoch: int,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
    pca_std: float | None = None,
    tries: int = RRC_TRIES,
) -> AugParams:
    """Boxes distributed as ``torchvision.transforms.RandomResizedCrop.get_params`` on a ``size x size`` image."""
    u = uniforms(indices, 2 * tries + 9, seed=seed, epoch=epoch)
    target = size * size * (scale[0] + (scale[1] - scale[0]) * u[:, :tries])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, tries : 2 * tries])
    w, h = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    rows, first = np.arange(len(u)), ok.argmax(1)  # first try that fits, as torchvision's loop
    # None fits in 10 tries: torchvision falls back to the whole (square, so ratio 1 is in range) image.
    any_ok = ok.any(1)
    w, h = np.where(any_ok, w[rows, first], size), np.where(any_ok, h[rows, first], size)
    rest = u[:, 2 * tries :]  # offsets uniform over [0, size - h] x [0, size - w], the flip, the colour noise
    top = np.minimum(np.floor(rest[:, 0] * (size - h + 1)), size - h)
    left = np.minimum(np.floor(rest[:, 1] * (size - w + 1)), size - w)
    return AugParams(
        flip=torch.from_numpy(rest[:, 2] < FLIP_P),
        boxes=torch.from_numpy(np.stack([left, top, left + w, top + h], 1).astype(np.float32)),
        alpha=None if pca_std is None else torch.from_numpy((normals(rest[:, 3:9]) * pca_std).astype(np.float32)),
    )


# ---------------------------------------------------------------------------------------------------------------------
# applying them (any device)


def crop_flip(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, crop: int
) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> uint8 (B, 3, crop, crop) channels-last: per-image windows, mirrored where ``flip``.

    On the CPU one slice copy per image (faster there than a gather: 0.5 vs 1.5 ms per 64 images at 64 px, 1.2 vs
    19 ms at 224 px); elsewhere ``crop_flip_gather``, one kernel for the whole batch (no per-image launches).
    """
    if images.device.type != "cpu":
        return crop_flip_gather(images, top, left, flip, crop)
    out = torch.empty(images.shape[0], crop, crop, images.shape[3], dtype=images.dtype)  # 3 channels, or 1 (gray)
    for i, (t, c, f) in enumerate(zip(top.tolist(), left.tolist(), flip.tolist())):
        window = images[i, t : t + crop, c : c + crop]
        out[i] = window.flip(1) if f else window
    return out.permute(0, 3, 1, 2)


def crop_flip_gather(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, crop: int
) -> torch.Tensor:
    """``crop_flip`` as one gather over the batch."""
    b = images.shape[0]
    ar = torch.arange(crop, device=images.device)
    rows = top[:, None] + ar  # (B, crop)
    cols = left[:, None] + torch.where(flip[:, None], crop - 1 - ar, ar)  # (B, crop), reversed when flipped
    idx = torch.arange(b, device=images.device)[:, None, None]
    return images[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, crop, crop, 3) gathered


def resized_crop_flip(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> (B, 3, crop, crop): each box resized to ``crop x crop``, then mirrored.

    Exactly torchvision's ``resized_crop(..., antialias=True)`` + ``hflip`` per image (bilinear, triangle filter
    widened when shrinking, as PIL). On the CPU: uint8 out, one call of PyTorch's vectorised uint8 kernel per image
    (what torchvision runs on uint8 tensors; 2.6 ms per 64 images at 64 px, 9 ms at 224 px, vs 2.8 and 160 ms for
    the matmuls on 2 cores). Elsewhere: float in [0, 1] out (torchvision's convention), two batched matmuls with
    per-image interpolation matrices (``resize_weights``), equal to torchvision on float tensors up to rounding.
    """
    if images.device.type == "cpu":
        return _resized_crop_flip_loop(images, boxes, flip, crop)
    return resized_crop_flip_matmul(images, boxes, flip, crop)


def _resized_crop_flip_loop(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, crop: int) -> torch.Tensor:
    import torch.nn.functional as F

    x = images.permute(0, 3, 1, 2)  # (B, 3, S, S) channels-last view: the layout of the fast uint8 kernel
    out = torch.cat(
        [
            F.interpolate(x[i : i + 1, :, y1:y2, x1:x2], (crop, crop), mode="bilinear", antialias=True)
            for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist())
        ]
    )
    if flip.any():
        out[flip] = out[flip].flip(-1)
    return out


def resized_crop_flip_matmul(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, crop: int) -> torch.Tensor:
    """``resized_crop_flip`` as two batched matmuls (float32 in [0, 1] out), for devices where launches cost."""
    b, s, c = images.shape[0], images.shape[1], images.shape[3]  # c: 3, or 1 for gray
    x1, y1, x2, y2 = boxes.float().unbind(1)
    wy = resize_weights(y1, y2 - y1, s, crop) / 255.0  # (B, crop, S), and [0, 255] -> [0, 1] for free
    wx = resize_weights(x1, x2 - x1, s, crop, flip=flip)  # (B, crop, S), rows reversed where flipped
    # (B, S_row, 3, S_col), made contiguous by the uint8 -> float copy: both passes are then plain bmm
    x = images.permute(0, 1, 3, 2).to(torch.float32, memory_format=torch.contiguous_format)
    t = torch.bmm(wy, x.view(b, s, c * s)).view(b, crop * c, s)  # rows resized: (B, crop_row * 3, S_col)
    out = torch.bmm(t, wx.transpose(1, 2))  # columns resized: (B, crop_row * 3, crop_col)
    return out.view(b, crop, c, crop).permute(0, 2, 1, 3)


def resize_weights(
    start: torch.Tensor, length: torch.Tensor, size: int, out: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Interpolation matrices (B, out, size) resizing the windows ``[start, start + length)`` of a ``size``-pixel axis
    to ``out`` pixels: output pixel i reads input pixel j with weight ``tri((j + 0.5 - c_i) / support)``, normalised
    over the window, where ``c_i = (i + 0.5) * length / out`` (window coordinates), ``tri(t) = max(0, 1 - |t|)`` and
    ``support = max(1, length / out)``: ATen's antialiased bilinear, which torchvision's ``resize`` uses. Rows are
    reversed where ``flip``.
    """
    n, dev = len(start), start.device
    scale = (length / out)[:, None, None]  # (B, 1, 1)
    i = torch.arange(out, device=dev, dtype=torch.float32).expand(n, out)
    if flip is not None:
        i = torch.where(flip[:, None], out - 1 - i, i)
    center = scale * (i[:, :, None] + 0.5)  # (B, out, 1)
    j = torch.arange(size, device=dev, dtype=torch.float32)[None, None, :] - start[:, None, None]  # (B, 1, size)
    w = (1 - (j + 0.5 - center).abs() / scale.clamp(min=1.0)).clamp_(min=0)
    w = w * ((j >= 0) & (j < length[:, None, None]))
    return w / w.sum(-1, keepdim=True)


def ten_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> uint8 (B, 10, 3, crop, crop) in torchvision ``TenCrop`` order."""
    s = images.shape[1]
    e, c = s - crop, centre_offset(s, crop)

    def five(x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, 5, 3, crop, crop)
        windows = [(0, 0), (0, e), (e, 0), (e, e), (c, c)]
        return torch.stack([x[..., t : t + crop, c0 : c0 + crop] for t, c0 in windows], 1)

    x = images.permute(0, 3, 1, 2)
    # as torchvision: the five crops of the image, then the five crops of the mirrored image
    return torch.cat([five(x), five(x.flip(-1))], 1)


def as_tensor3(values: Sequence[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float32 tensor on ``device`` from a list/tuple/tensor (mean, std, eigvals...)."""
    return torch.as_tensor(values, dtype=torch.float32).to(device)
