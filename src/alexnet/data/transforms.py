"""Per-image transforms on ``uint8 (3, H, W)`` tensors, in presets like torchvision's ``references/.../presets.py``.

Randomness comes only from the ``torch.Generator`` passed in (seeded per sample by ``sampling.generator``), so
a sample's crop and flip do not depend on worker count or order. Float conversion, colour noise and normalisation
happen later, batched on the training device (``device_ops``).
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from .presets import FLIP_P, PRESETS, RRC_RATIO, RRC_SCALE, RRC_TRIES, centre_offset


def resize(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(..., C, H, W)`` resized to ``height x width``: bilinear, antialiased, as torchvision's ``resize``.

    A uint8 image on the CPU takes PyTorch's uint8 kernel, as ``torchvision.transforms.v2`` does (the same pixels;
    the older float path rounds differently by at most one level): 4x faster on a 500x375 photo, 5x on a 32-px one
    without v2's per-call overhead. Anything else goes through torchvision's float path."""
    if img.dtype != torch.uint8 or img.device.type != "cpu":
        from torchvision.transforms.functional import resize as tv_resize

        return tv_resize(img, [height, width], antialias=True)
    batch = img.reshape(-1, *img.shape[-3:]).contiguous(memory_format=torch.channels_last)  # its fastest layout
    out = torch.nn.functional.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False,
                                          antialias=True)  # fmt: skip
    return out.contiguous().reshape(*img.shape[:-2], height, width)


def resize_shorter(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) so the shorter side is ``size`` px, keeping the aspect ratio (the longer side
    truncated, as torchvision's ``resize(img, [size])``)."""
    h, w = img.shape[-2:]
    if min(h, w) == size:
        return img
    if h <= w:
        return resize(img, size, int(size * w / h))
    return resize(img, int(size * h / w), size)


def crop(img: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return img[..., top : top + height, left : left + width]


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window of ``(..., H, W)`` (one image or a batch; a view), offsets rounded as
    torchvision's ``center_crop`` (``round(margin / 2)``)."""
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}x{w} is smaller than the {size} px crop")
    return crop(img, centre_offset(h, size), centre_offset(w, size), size, size)


def hflip(img: torch.Tensor) -> torch.Tensor:
    return img.flip(-1)


def _randint(high: int, g: torch.Generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=g))


def _check_sizes(crop_size: int, resize_size: int) -> None:
    if crop_size < 1 or resize_size < crop_size:
        raise UserError(f"crop size {crop_size} px must be >= 1 and <= the resize size {resize_size} px")


class TrainTransform:
    """Training augmentation.

    ``paper`` (§4.1): shorter side to ``resize_size``, the central ``resize_size`` square (the paper's stored
    form), a random ``crop_size`` crop, horizontal flip with p=0.5. Draws, in order: top, left, flip.
    ``torchvision``: RandomResizedCrop(``crop_size``, scale ``scale``, ratio ``ratio``) + flip, as torchvision.
    """

    def __init__(
        self,
        *,
        preset: str = "paper",
        crop_size: int = 224,
        resize_size: int = 256,
        scale: tuple[float, float] = RRC_SCALE,
        ratio: tuple[float, float] = RRC_RATIO,
    ):
        if preset not in PRESETS:
            raise UserError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if preset == "paper":
            _check_sizes(crop_size, resize_size)
        self.preset, self.crop_size, self.resize_size = preset, crop_size, resize_size
        self.scale, self.ratio = scale, ratio

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``uint8 (3, H, W)`` -> ``uint8 (3, crop_size, crop_size)``."""
        c = self.crop_size
        if self.preset == "paper":
            img = center_crop(resize_shorter(img, self.resize_size), self.resize_size)
            r = self.resize_size
            top, left = _randint(r - c + 1, generator), _randint(r - c + 1, generator)
            out = crop(img, top, left, c, c)
        else:
            top, left, h, w = self.random_resized_box(img.shape[-2], img.shape[-1], generator)
            out = resize(crop(img, top, left, h, w), c, c)
        if float(torch.rand(1, generator=generator)) < FLIP_P:
            out = hflip(out)
        return out.contiguous()

    def random_resized_box(self, height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w) as torchvision's ``RandomResizedCrop.get_params``, drawing from ``g``."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(RRC_TRIES):
            target = area * float(torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=g))
            aspect = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return _randint(height - h + 1, g), _randint(width - w + 1, g), h, w
        # fallback: the central crop with the ratio clamped into range
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            h, w = height, round(height * max(self.ratio))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w  # as torchvision


def resize_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) both sides to ``size`` px (a pack's ``squash`` mode)."""
    if tuple(img.shape[-2:]) == (size, size):
        return img
    return resize(img, size, size)


class EvalTransform:
    """Shorter side to ``resize_size`` (or, with ``squash``, both sides), then the central ``crop_size`` square."""

    def __init__(self, *, crop_size: int = 224, resize_size: int = 256, squash: bool = False):
        _check_sizes(crop_size, resize_size)
        self.crop_size, self.resize_size = crop_size, resize_size
        self.resize = resize_square if squash else resize_shorter

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return center_crop(self.resize(img, self.resize_size), self.crop_size).contiguous()


class TenCrop:
    """Paper §4.1 test-time views: ``uint8 (10, 3, crop, crop)`` from the image resized to shorter side
    ``resize_size``. Order: top-left, top-right, bottom-left, bottom-right, centre, then the same five mirrored.
    """

    def __init__(self, *, crop_size: int = 224, resize_size: int = 256, squash: bool = False):
        _check_sizes(crop_size, resize_size)
        self.crop_size, self.resize_size = crop_size, resize_size
        self.resize = resize_square if squash else resize_shorter

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = self.resize(img, self.resize_size)
        h, w = img.shape[-2:]
        c = self.crop_size
        five = [crop(img, 0, 0, c, c), crop(img, 0, w - c, c, c), crop(img, h - c, 0, c, c)]
        five += [crop(img, h - c, w - c, c, c), center_crop(img, c)]
        views = torch.stack(five)  # (5, 3, c, c)
        return torch.cat([views, hflip(views)]).contiguous()
