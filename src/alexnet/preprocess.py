"""How an image becomes the network's input: one typed object, stored with the weights, used everywhere.

``Preprocess`` says how a decoded ``uint8 (3, H, W)`` image is resized and cropped and how the crop is normalised.
It is built once (from the training data, a pack's manifest, or ImageNet's constants), stored in every checkpoint
and export as ``to_dict()``, read back with ``from_dict`` (which validates: the file is untrusted), and used by
evaluate, predict, features, export and serve. The constants (ImageNet mean/std, the paper's 256:224) live here only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import UserError
from .model import MIN_INPUT_SIZE as MIN_CROP

# torchvision's AlexNet weights: resize the shorter side to 256, centre crop 224, ImageNet mean / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # paper §2: "rescaled the image such that the shorter side was of length 256", crops 224
RESIZE_MODES = ("shorter", "squash")  # shorter side to `resize` then centre square; or both sides to `resize`
INTERPOLATIONS = ("bilinear",)
MIN_STD_GRAY = 1 / 255  # a constant gray set: one grey level, as data.stats.MIN_STD
MAX_SIDE = 2048  # px: larger crops or resizes are refused (a 100000-px crop would allocate 120 GB per image)


def default_resize(crop: int) -> int:
    """The shorter side before cropping, in the paper's 256:224 ratio (256 for 224, 73 for 64)."""
    return round(crop * RESIZE_RATIO)


@dataclass(frozen=True)
class Preprocess:
    """Decode, resize, centre-crop and normalise. Sizes in px; ``mean`` / ``std`` per channel (R, G, B, or the one
    gray channel) in [0, 1] pixel scale. ``channels``: 3 (RGB) or 1 (grayscale: colour images become luma);
    ``window``: how DICOMs and 16-bit grayscale images become 8 bits (``data.window``). Files written before these
    two fields existed mean 3 channels and the ``auto`` window (what decoding did then)."""

    crop: int  # px, the square the network sees
    resize: int  # px: the shorter side ("shorter") or both sides ("squash") before the centre crop
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_mode: str = "shorter"
    interpolation: str = "bilinear"  # antialiased, as torchvision's resize on tensors
    channels: int = 3
    window: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        self.validate()

    # ---- construction and storage

    @classmethod
    def for_crop(cls, crop: int, *, resize: int | None = None, **kw: Any) -> Preprocess:
        """``crop`` px crops of images whose shorter side is first resized to ``resize`` (default: 256:224)."""
        return cls(crop=crop, resize=resize if resize is not None else default_resize(crop), **kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (checkpoints are read with ``weights_only=True``; sidecars are JSON)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "preprocess") -> Preprocess:
        """Validate an untrusted mapping (a checkpoint's or sidecar's ``preprocess``); ``UserError`` names the field.

        Files written before ``resize_mode`` existed have only resize, crop, mean and std: the mode was "shorter".
        """
        if not isinstance(d, Mapping):
            raise UserError(f"{source}: preprocess must be a mapping, got {type(d).__name__}")
        known = {"crop", "resize", "mean", "std", "resize_mode", "interpolation", "channels", "window"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"{source}: unknown preprocess field(s) {', '.join(map(str, unknown))}")
        for key in ("crop", "resize", "mean", "std"):
            if key not in d:
                raise UserError(f"{source}: preprocess has no {key!r}")
        kw: dict[str, Any] = {}
        channels = d.get("channels", 3)
        if isinstance(channels, bool) or channels not in (1, 3):
            raise UserError(f"{source}: preprocess channels must be 1 or 3, got {channels!r}")
        kw["channels"] = channels
        if "window" in d:
            kw["window"] = d["window"]
        for key in ("crop", "resize"):
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(f"{source}: preprocess {key} must be an integer number of px, got {v!r}")
            kw[key] = v
        for key in ("mean", "std"):
            kw[key] = _per_channel(d[key], channels, f"{source}: preprocess {key}")
        for key in ("resize_mode", "interpolation"):
            if key in d:
                kw[key] = d[key]
        try:
            return cls(**kw)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None

    def validate(self) -> None:
        if not MIN_CROP <= self.crop <= MAX_SIDE:
            raise UserError(f"preprocess crop {self.crop} px: must be {MIN_CROP} to {MAX_SIDE} (AlexNet's input)")
        if not self.crop <= self.resize <= MAX_SIDE:
            raise UserError(f"preprocess resize {self.resize} px: must be from the crop ({self.crop}) to {MAX_SIDE}")
        if self.resize_mode not in RESIZE_MODES:
            raise UserError(f"preprocess resize_mode {self.resize_mode!r}: choose {' or '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"preprocess interpolation {self.interpolation!r}: choose {', '.join(INTERPOLATIONS)}")
        if self.channels not in (1, 3) or len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(
                f"preprocess channels {self.channels}: must be 1 or 3, with as many mean ({len(self.mean)}) and std "
                f"({len(self.std)}) values"
            )
        from .data.window import check_window

        check_window(self.window)
        if not all(math.isfinite(v) for v in self.mean):
            raise UserError(f"preprocess mean {list(self.mean)}: must be finite")
        if not all(math.isfinite(v) and v > 1e-6 for v in self.std):
            raise UserError(f"preprocess std {list(self.std)}: must be finite and > 0")

    # ---- use

    def decode(self, src, *, name: str | None = None):
        """A file path or encoded bytes -> ``uint8 (channels, H, W)``, windowed as trained (``decode_image``)."""
        from .data.decode import decode_image

        return decode_image(src, name=name, window=self.window, channels=self.channels)

    def transform(self, *, ten_crop: bool = False):
        """The per-image eval transform: ``uint8 (C, H, W)`` -> ``(C, crop, crop)`` or ``(10, C, crop, crop)``."""
        from .data.transforms import EvalTransform, TenCrop

        kind = TenCrop if ten_crop else EvalTransform
        return kind(crop_size=self.crop, resize_size=self.resize, squash=self.resize_mode == "squash")

    def normalize(
        self, x: torch.Tensor, *, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        """``uint8`` crops (..., C, c, c) on any device -> float32 ``(x / 255 - mean) / std``."""
        from .data.device_ops import normalize

        return normalize(x, self.mean, self.std, memory_format=memory_format)


def match_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """``uint8 (C, H, W)`` with ``channels`` channels: RGB to luma (ITU-R 601, as decoding does), gray repeated."""
    if img.shape[-3] == channels:
        return img
    if channels == 1:
        w = torch.tensor([299, 587, 114], dtype=torch.int32).view(3, 1, 1)
        return ((img.to(torch.int32) * w).sum(-3, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)
    return img.expand(*img.shape[:-3], 3, *img.shape[-2:]).contiguous()


def _per_channel(v: Any, channels: int, what: str) -> tuple[float, ...]:
    """``v`` as one float per channel, or ``UserError`` saying ``what`` must be."""
    numbers = "3 numbers (R, G, B)" if channels == 3 else "1 number (gray)"
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != channels:
        raise UserError(f"{what} must be {numbers}, got {v!r}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise UserError(f"{what} must be {numbers}, got {v!r}")
    return tuple(float(x) for x in v)


IMAGENET = Preprocess(crop=224, resize=256)  # torchvision's AlexNet weights
