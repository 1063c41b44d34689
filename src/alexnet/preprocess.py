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
MAX_SIDE = 2048  # px: larger crops or resizes are refused (a 100000-px crop would allocate 120 GB per image)


def default_resize(crop: int) -> int:
    """The shorter side before cropping, in the paper's 256:224 ratio (256 for 224, 73 for 64)."""
    return round(crop * RESIZE_RATIO)


@dataclass(frozen=True)
class Preprocess:
    """Resize, centre-crop and normalise. Sizes in px; ``mean`` / ``std`` per RGB channel in [0, 1] pixel scale."""

    crop: int  # px, the square the network sees
    resize: int  # px: the shorter side ("shorter") or both sides ("squash") before the centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: str = "shorter"
    interpolation: str = "bilinear"  # antialiased, as torchvision's resize on tensors

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
        unknown = sorted(set(d) - {"crop", "resize", "mean", "std", "resize_mode", "interpolation"})
        if unknown:
            raise UserError(f"{source}: unknown preprocess field(s) {', '.join(map(str, unknown))}")
        for key in ("crop", "resize", "mean", "std"):
            if key not in d:
                raise UserError(f"{source}: preprocess has no {key!r}")
        kw: dict[str, Any] = {}
        for key in ("crop", "resize"):
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(f"{source}: preprocess {key} must be an integer number of px, got {v!r}")
            kw[key] = v
        for key in ("mean", "std"):
            v = d[key]
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != 3:
                raise UserError(f"{source}: preprocess {key} must be 3 numbers (R, G, B), got {v!r}")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise UserError(f"{source}: preprocess {key} must be 3 numbers (R, G, B), got {v!r}")
            kw[key] = tuple(float(x) for x in v)
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
        if not all(math.isfinite(v) for v in self.mean):
            raise UserError(f"preprocess mean {list(self.mean)}: must be finite")
        if not all(math.isfinite(v) and v > 1e-6 for v in self.std):
            raise UserError(f"preprocess std {list(self.std)}: must be finite and > 0")

    # ---- use

    def transform(self, *, ten_crop: bool = False):
        """The per-image eval transform: ``uint8 (3, H, W)`` -> ``(3, crop, crop)`` or ``(10, 3, crop, crop)``."""
        from .data.transforms import EvalTransform, TenCrop

        kind = TenCrop if ten_crop else EvalTransform
        return kind(crop_size=self.crop, resize_size=self.resize, squash=self.resize_mode == "squash")

    def normalize(
        self, x: torch.Tensor, *, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        """``uint8`` crops (..., 3, c, c) on any device -> float32 ``(x / 255 - mean) / std``."""
        from .data.device_ops import normalize

        return normalize(x, self.mean, self.std, memory_format=memory_format)


IMAGENET = Preprocess(crop=224, resize=256)  # torchvision's AlexNet weights
