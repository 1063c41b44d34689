"""Image-like inputs of the Python API (file paths, PIL images, numpy arrays, tensors) as ``uint8 (3, H, W)`` tensors:
what ``Predictor.predict``, ``probabilities``, ``features`` and ``explain`` take. Checked here, once per input, so
the model's forward never checks its input (the hot path).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from .errors import ArgumentError, UserError, decoding
from .preprocess import Preprocess

FLOAT_TOLERANCE = 1e-3  # float pixels this far outside 0..1 are rounding (a resize's overshoot): clamped, not refused


def as_uint8_images(image: Any, preprocess: Preprocess | None = None) -> list[torch.Tensor]:
    """One input -> a list of ``uint8 (3, H, W)`` RGB tensors (a ``(B, 3, H, W)`` tensor gives B of them; gray ones
    R = G = B; none without pixels); files are decoded as ``preprocess`` says (its channels and window) when given."""
    if isinstance(image, (str, os.PathLike)):
        from .data.decode import decode_image

        return [preprocess.decode(image) if preprocess is not None else decode_image(image)]
    window = preprocess.window if preprocess is not None else "auto"
    if isinstance(image, np.ndarray):
        return [_from_numpy(image, window)]
    if isinstance(image, torch.Tensor):
        return _from_tensor(image)
    if type(image).__module__.startswith("PIL."):
        with decoding("PIL image"):  # a closed or truncated one: one line, not Pillow's traceback
            return [_from_pil(image, window)]
    raise UserError(
        f"cannot read an image from a {type(image).__name__}; pass a path, a PIL image, a numpy (H, W, 3) uint8 array "
        "or a (3, H, W) / (B, 3, H, W) tensor"
    )


def _from_pil(image: Any, window: str) -> torch.Tensor:
    """A PIL image -> ``uint8 (3, H, W)``; a 16/32-bit or float gray one windowed as its file would be."""
    from .data.decode import WIDE_GRAY_MODES

    if 0 in image.size:
        raise UserError(f"PIL image of size {image.size[0]}x{image.size[1]}: empty (no pixels)")
    if image.mode in WIDE_GRAY_MODES:  # convert("RGB") would saturate every value above 255
        return _from_numpy(np.asarray(image), window)
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def _from_numpy(a: np.ndarray, window: str = "auto") -> torch.Tensor:
    """A numpy image -> ``uint8 (3, H, W)``: uint8 RGB / RGBA, or gray ``(H, W)`` of any integer or float type
    (over 8 bits: windowed with ``window`` as a 16/32-bit or float PNG / TIFF file is, ``data.window.to_uint8``)."""
    if a.ndim == 2 and a.dtype != np.uint8 and a.dtype.kind in "iuf" and a.size:
        from .data.window import to_uint8

        a = to_uint8(a, window, integer=a.dtype.kind != "f")
    a = np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise UserError(f"numpy image of shape {a.shape}: expected (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray")
    if 0 in a.shape[:2]:
        raise UserError(f"numpy image of shape {a.shape}: empty (no pixels)")
    if a.dtype != np.uint8:
        raise UserError(
            f"numpy image of dtype {a.dtype}: expected uint8 0..255 RGB (0..1 floats: "
            "(a * 255).round().astype(np.uint8)); a gray (H, W) array may be 16-bit, 32-bit or float, windowed as its "
            "PNG / TIFF file would be"
        )
    rgb = a[:, :, :3]
    # torch.from_numpy shares memory and warns on a read-only array (a decoded video frame, a memory map, np.frombuffer
    # of bytes): copy those only; .contiguous() below copies into torch's own memory either way
    rgb = np.ascontiguousarray(rgb) if rgb.flags.writeable else np.array(rgb, order="C")
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _from_tensor(t: torch.Tensor) -> list[torch.Tensor]:
    t, shape = t.detach().cpu(), tuple(t.shape)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise UserError(f"tensor of shape {shape}: expected (3, H, W) or (B, 3, H, W) RGB, or 1 channel gray")
    if 0 in t.shape[2:]:
        raise UserError(f"tensor of shape {shape}: empty (no pixels)")
    t = t.repeat(1, 3, 1, 1) if t.shape[1] == 1 else t  # gray, as a numpy (H, W) array: the same value in R, G and B
    if t.is_floating_point():  # 0..1 floats, as torchvision's to_tensor gives
        t = float_to_uint8(t, f"tensor of shape {shape}")
    elif t.dtype != torch.uint8:
        raise UserError(f"tensor of dtype {t.dtype}: expected uint8 0..255 or float 0..1")
    return list(t.unbind(0))


def float_to_uint8(t: torch.Tensor, what: str) -> torch.Tensor:
    """Float pixels in 0..1 -> uint8 0..255 (rounded). ``ArgumentError`` naming ``what`` for NaN / inf or values
    outside 0..1: 0..255 floats (``.float()`` of a uint8 image) or a normalised tensor would otherwise be clamped into
    a wrong image that still gets a confident prediction. One ``aminmax`` over the whole input (a batch at once)."""
    lo, hi = (float(v) for v in torch.aminmax(t))  # NaN anywhere makes both NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        found = "NaN or infinite values"
    elif lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
        found = f"values {lo:.4g}..{hi:.4g}" + (" (0..255 floats: divide by 255)" if lo >= 0 and hi <= 255 else "")
    else:
        return (t.clamp(0, 1) * 255).round().to(torch.uint8)
    raise ArgumentError(
        f"{what}: {str(t.dtype).removeprefix('torch.')} with {found}; pass uint8 0..255, or float 0..1 before "
        "normalisation (the model normalises with its own mean and std)"
    )
