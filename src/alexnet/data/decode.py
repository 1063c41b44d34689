"""Decode any image file a user may have into a ``uint8 (3, H, W)`` RGB tensor, or fail with a message naming it.

Plain RGB / grayscale JPEGs (the bulk of every photo data set) go through ``torchvision.io.decode_jpeg``
(libjpeg-turbo); everything else through Pillow, which handles palette, CMYK, RGBA, 16-bit and EXIF rotation.
The header is read first, so a decompression bomb (too many pixels, or an extreme aspect ratio whose resize would
take gigabytes) is refused before a single pixel is decoded; only regular files under a size cap are read (see
``alexnet.limits``, where each bound is documented and overridable).
"""

from __future__ import annotations

import io
import os
import stat
import warnings

import numpy as np
import torch

from ..errors import DecodeBoundsError, DecodeError, UserError, decoding
from ..errors import exception_reason as _reason
from ..limits import limits, read_bounded
from . import dicom
from . import window as window_mod

DECODING_VERSION = 2  # raised when a file decodes to other pixels (2: --window auto spreads 32-bit / float TIFFs):
# cached statistics computed from the old pixels are recomputed
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".dcm", ".dicom")
_EXIF_ORIENTATION = 0x0112


def is_image_file(path: str) -> bool:
    """An image file name (``IMAGE_EXTENSIONS``), or a DICOM named as PACS and CDs name them (``IM0001``, a UID's
    ``1.2.840....30000``: no suffix, or a numeric one) that starts with the preamble and ``DICM`` marker (132 bytes
    read; only such names are opened, so scanning a big folder of named images reads no file)."""
    name = os.path.basename(path)
    if name.lower().endswith(IMAGE_EXTENSIONS):
        return True
    suffix = os.path.splitext(name)[1]
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the scan
            return False
        with open(path, "rb") as f:
            return dicom.is_dicom(f.read(dicom.MAGIC_OFFSET + 4))
    except OSError:
        return False


def read_header(data: bytes, name: str, *, max_pixels: int | None = None, max_aspect: float | None = None):
    """Open ``data`` with Pillow without decoding pixels; refuse empty files, images over ``max_pixels`` and images
    whose longer side is over ``max_aspect`` times the shorter (defaults: ``alexnet.limits``)."""
    from PIL import Image

    if max_pixels is None or max_aspect is None:
        bounds = limits()
        max_pixels = bounds.max_image_pixels if max_pixels is None else max_pixels
        max_aspect = bounds.max_image_aspect if max_aspect is None else max_aspect
    if len(data) == 0:
        raise DecodeError(f"{name}: empty file (0 bytes); delete it or replace it with the real image")
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 MP and raises above 179 MP (our own limit is below), and of corrupt EXIF data
            # (a UserWarning with its source line on stderr): what matters is said here, in one line
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise DecodeBoundsError(f"{name}: refused to decode: {_reason(e)}") from None
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        raise DecodeError(f"{name}: not an image Pillow can read ({_reason(e)})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise DecodeBoundsError(
            f"{name}: refused to decode a {w}x{h} image ({w * h:,} pixels > limit {max_pixels:,}); "
            "it is probably a decompression bomb, or raise ALEXNET_MAX_IMAGE_PIXELS if it is genuine"
        )
    if min(w, h) < 1 or max(w, h) > max_aspect * min(w, h):
        raise DecodeBoundsError(
            f"{name}: refused a {w}x{h} image: its aspect ratio is over {max_aspect:g}:1 (resizing its shorter side "
            "would take gigabytes); crop it, or raise ALEXNET_MAX_IMAGE_ASPECT"
        )
    return img


GRAY_MODES = {"L", "LA", "La", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # Pillow's gray modes
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # over 8 bits: 16/32-bit integers, floats


def stored_header(path: str) -> tuple[int, int, bool] | None:
    """``(width, height, stored gray)`` of an image file or a DICOM from its header, without decoding pixels; None
    when it cannot be read (the loader reports it). A DICOM is gray unless it has three samples or a colour table."""
    bounds = limits()
    try:
        data = read_bounded(path, bounds.max_image_file_bytes, "image")
        if dicom.is_dicom(data):
            h = dicom.read_header(data, path, max_pixels=bounds.max_image_pixels, max_aspect=bounds.max_image_aspect)
            return h.columns, h.rows, not h.colour
        img = read_header(data, path)
        return *img.size, img.mode in GRAY_MODES
    except UserError:
        return None


def decode_image(
    src: str | os.PathLike | bytes,
    *,
    max_pixels: int | None = None,
    name: str | None = None,
    window: str = "auto",
    channels: int = 3,
) -> torch.Tensor:
    """Decode a file path or encoded bytes to a ``uint8 (3, H, W)`` RGB tensor (``(1, H, W)`` with ``channels=1``).

    Grayscale, palette, CMYK, 16-bit and EXIF-rotated images become upright RGB; transparent pixels are composited
    on white. The file's content decides the format, not its extension. Raises ``DecodeError`` naming ``name``
    (default: the path) for empty, truncated, non-image, non-regular or too large files, and its subclass
    ``DecodeBoundsError`` for images over the pixel or aspect-ratio bounds. Messages hold the name and the reason
    only (no Python object reprs); any other exception a decoding library raises on a hostile file is turned into
    such a line too (``errors.decoding``). DICOMs and 16-bit grayscale images are windowed with ``window``
    (``data.window``: auto, minmax, lung, bone, brain, soft-tissue, C,W or pLOW-pHIGH).
    """
    bounds = limits()  # read once per image: its environment lookups cost as much as decoding a 32-px PNG
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, name = bytes(src), name or "<bytes>"
    else:
        name = name or os.fspath(src)
        try:
            data = read_bounded(src, bounds.max_image_file_bytes, "image")
        except UserError as e:
            raise DecodeError(str(e)) from None
    if channels not in (1, 3):
        raise UserError(f"channels {channels}: must be 1 (grayscale) or 3 (RGB)")
    max_pixels = bounds.max_image_pixels if max_pixels is None else max_pixels
    with decoding(name):
        return _decode(data, name, max_pixels, bounds.max_image_aspect, window, channels)


def _decode(data: bytes, name: str, max_pixels: int, max_aspect: float, window: str, channels: int) -> torch.Tensor:
    if dicom.is_dicom(data):
        a = dicom.decode(data, name, max_pixels=max_pixels, max_aspect=max_aspect, window=window)
        return _to_tensor(a, channels)
    img = _pillow_header(data, name, max_pixels, max_aspect)
    if _fast_jpeg(img, data):
        try:
            from torchvision.io import ImageReadMode, decode_jpeg

            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(buf, mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
        except Exception:  # odd JPEG flavours libjpeg-turbo rejects: let Pillow try
            pass
    try:
        return _to_tensor(_pillow_to_array(img, window), channels)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"{name}: cannot decode image ({_reason(e)})") from None


def _pillow_header(data: bytes, name: str, max_pixels: int, max_aspect: float):
    """``read_header``, except that a ``.dcm`` file Pillow cannot read is named for what it is: a DICOM data set
    without the Part 10 file header (no ``DICM`` marker), which pydicom refuses too, not an unknown image."""
    try:
        return read_header(data, name, max_pixels=max_pixels, max_aspect=max_aspect)
    except DecodeBoundsError:
        raise
    except DecodeError:
        if not data or not name.lower().endswith((".dcm", ".dicom")):  # an empty file is said to be empty
            raise
    raise DecodeError(
        f"{name}: not a DICOM file pydicom reads: no 'DICM' marker after the 128-byte preamble (a bare DICOM data set "
        "without its file meta header, or not DICOM); re-export it as a DICOM Part 10 file"
    ) from None


def _fast_jpeg(img, data: bytes) -> bool:
    """True for an 8-bit RGB/gray, upright, complete JPEG: those decode faster with libjpeg-turbo."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return False
    # libjpeg-turbo only warns on a missing end-of-image marker and returns grey pixels; Pillow raises. Let it.
    if b"\xff\xd9" not in data[-4096:]:
        return False
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return False
    return orientation in (None, 1)


def _to_tensor(a: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 ``(H, W)`` gray or ``(H, W, 3)`` RGB -> ``(channels, H, W)``: gray repeated, or RGB to luma."""
    if a.ndim == 3 and channels == 1:  # ITU-R 601-2 luma, as Pillow's convert("L"): L = (299 R + 587 G + 114 B) / 1000
        a = ((a.astype(np.uint32) @ np.array([299, 587, 114], np.uint32) + 500) // 1000).astype(np.uint8)
    if a.ndim == 2:
        t = torch.from_numpy(np.array(a, dtype=np.uint8))[None]  # copy: Pillow arrays are read-only
        return t if channels == 1 else t.expand(3, -1, -1).contiguous()
    return torch.from_numpy(np.array(a)).permute(2, 0, 1).contiguous()


def _pillow_to_array(img, window: str = "auto") -> np.ndarray:
    """uint8 ``(H, W)`` for grayscale images, ``(H, W, 3)`` for the rest."""
    from PIL import Image, ImageOps

    img.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES is off)
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in WIDE_GRAY_MODES:  # windowed (Pillow's convert("RGB") would clip at 255)
        return window_mod.to_uint8(np.asarray(img), window, integer=mode != "F")
    if mode in ("L", "1"):
        return np.asarray(img.convert("L"))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        a = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    else:  # RGB, P, CMYK, YCbCr, LAB, HSV
        a = np.asarray(img if mode == "RGB" else img.convert("RGB"))
    return a
