"""Batched input operations on the training device: uint8 -> float, fancy-PCA colour noise, normalisation.

All work on whole batches and never read a value back to the host (no hidden syncs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """``uint8 (..., 3, H, W)`` -> ``float32`` in [0, 1]."""
    return x.to(torch.float32).div_(255.0)


def pca_noise(
    x: torch.Tensor,
    eigvals: torch.Tensor,
    eigvecs: torch.Tensor,
    *,
    alpha_std: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Paper §4.1 "fancy PCA": add ``eigvecs @ (alpha * eigvals)`` to every pixel of each image, alpha ~ N(0, std).

    ``x``: float ``(B, 3, H, W)`` in [0, 1]; ``eigvals`` (3,) and ``eigvecs`` (3, 3) (one eigenvector per column)
    of the RGB covariance on the same [0, 1] scale. One alpha triple per image, drawn on the generator's device.
    Not clamped, as in the paper.
    """
    b = x.shape[0]
    gen_device = generator.device if generator is not None else x.device
    alpha = torch.randn(b, 3, generator=generator, device=gen_device, dtype=torch.float32) * alpha_std
    alpha = alpha.to(x.device, non_blocking=True)
    vals = torch.as_tensor(eigvals, dtype=x.dtype, device=x.device)
    vecs = torch.as_tensor(eigvecs, dtype=x.dtype, device=x.device)
    return x + pca_shift(alpha.to(x.dtype), vals, vecs)[:, :, None, None]


def pca_shift(alpha: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor) -> torch.Tensor:
    """Per-image RGB shift ``eigvecs @ (alpha * eigvals)``: (B, 3) from alpha (B, 3) (paper §4.1)."""
    return (alpha * eigvals) @ eigvecs.T


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    shift: torch.Tensor | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """A new float32 ``(x + shift - mean) / std`` per channel of ``(..., 3, H, W)``, ``x`` in torchvision's
    convention: uint8 in [0, 255] or float in [0, 1] (uint8 is scaled by 1/255 on the fly).

    ``mean``, ``std``: 3 values on the [0, 1] scale. ``shift``: optional per-image (B, 3) colour shift on the same
    scale (the PCA noise), for ``(B, 3, H, W)`` batches. One pass: ``addcmul`` reads ``x`` in its own dtype and
    writes the result once, in ``memory_format`` (4-D only). The kernels alone on the 2-core CPU, per 64 images:
    0.38 ms at 64 px and 1.9 ms at 128 px, against 0.87 and 3.1 ms for a converting copy + multiply + add; at 224 px
    29 vs 20 ms (the mixed-dtype kernel is not vectorised there), under 1 % of a CPU training step at that size.
    """
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)  # (C, 1, 1): 3, or 1 for gray
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    scale = 1.0 / (255.0 * s) if x.dtype == torch.uint8 else 1.0 / s
    bias = -m / s if shift is None else (shift[:, :, None, None] - m) / s
    fmt = memory_format if x.dim() == 4 else torch.contiguous_format
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
    return torch.addcmul(bias, x, scale, out=out)


class Normalizer:
    """The last step of every loader, on the training device: the paper's colour noise and the normalisation, in
    one pass (``normalize``), into the memory format the model wants (channels-last if asked; 4-D batches only).

    ``mean``, ``std``: 3 values, [0, 1] scale. ``pca``: ``(eigvals (3,), eigvecs (3, 3))`` with the eigenvalues
    scaled as the loader draws its coefficients (times ``pca_std`` when the coefficients are N(0, 1)), or None.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, device: torch.device,
                 pca: tuple | None = None, channels_last: bool = False) -> None:  # fmt: skip
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(device)
        self.pca = None if pca is None else tuple(torch.as_tensor(t, dtype=torch.float32).to(device) for t in pca)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (or [0, 1] float) ``(B, 3, c, c)`` or ten crops ``(B, 10, 3, c, c)`` on the device -> normalised
        float32; ``alpha`` ``(B, 3)`` on the device: each image's colour-noise coefficients (ignored without pca)."""
        shift = None if alpha is None or self.pca is None else pca_shift(alpha, *self.pca)  # (B, 3) RGB per image
        return normalize(x, self.mean, self.std, shift, memory_format=self.memory_format)
