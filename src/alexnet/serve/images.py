"""What decoding an image will cost, read from its header before a pixel is decoded.

- Memory: ``decode_bytes`` estimates the peak bytes of decoding and cropping an image from its width, height and
  mode. Measured on 4000 x 4000 images (``decode_image`` then a 73/64-px ``Predictor.transform``, peak RSS): 8-bit
  gray or RGB PNG 12-14 bytes a pixel, JPEG 14-15 (the resize works in float32: 12 bytes a pixel), RGBA and 16-bit
  PNG 21-24. The server holds these estimates against ``--max-decoded-mb`` while the images decode; images under
  ``SMALL_DECODE_BYTES`` are not counted (at most ``--decode-threads`` of them decode at once), so that a few large
  images cannot make every small one wait or fail.
- Time: a progressive JPEG's decoder passes over the whole image once per scan (4.3 ms per scan at 64 MP), and a
  file can repeat a 95-byte scan thousands of times. ``jpeg_scans`` counts the start-of-scan markers (0xFFDA:
  inside entropy-coded data a 0xFF byte is followed by 0x00 or a restart marker, so every 0xFFDA is a marker);
  libjpeg's own progressions use at most 10 scans, so more than ``MAX_JPEG_SCANS`` is refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

from ..data import dicom
from ..data.decode import DecodeBoundsError, read_header
from ..errors import UserError
from ..limits import limits

MAX_JPEG_SCANS = 100  # a progressive JPEG from libjpeg or mozjpeg has at most 10-20
BYTES_PER_PIXEL = 16  # decoded uint8 RGB plus the resize's float32 copy, with some slack (see the module)
BYTES_PER_PIXEL_WIDE = 24  # alpha (composited on white) and 16/32-bit modes (converted through int64/float)
SMALL_DECODE_BYTES = 64 << 20  # under this (4 MP of RGB), not counted: at most --decode-threads of them at once
_WIDE_MODES = {"RGBA", "LA", "PA", "La", "RGBa", "I;16", "I;16B", "I;16L", "I;16N", "I", "F", "CMYK"}


class DecodeBusy(UserError):
    """An image that would take more decoding memory than the server has free now (503: retry shortly)."""

    http_status = 503


def jpeg_scans(data: bytes) -> int:
    """How many scans (start-of-scan markers) a JPEG file holds."""
    return data.count(b"\xff\xda")


def decode_bytes(data: bytes, name: str) -> int:
    """The estimated peak bytes of decoding and cropping ``data``, from its header; raises the decoder's
    ``DecodeError`` for what is not an image or is over the pixel bounds, and ``DecodeBoundsError`` for a JPEG of
    over ``MAX_JPEG_SCANS`` scans."""
    if dicom.is_dicom(data):  # one frame decoded; the modality LUT and the window work in float64 (16 bytes a pixel)
        bounds = limits()
        h = dicom.read_header(data, name, max_pixels=bounds.max_image_pixels, max_aspect=bounds.max_image_aspect)
        return h.rows * h.columns * (BYTES_PER_PIXEL_WIDE + 16)
    img = read_header(data, name)
    if img.format == "JPEG":
        scans = jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise DecodeBoundsError(
                f"{name}: refused a JPEG of {scans:,} scans (at most {MAX_JPEG_SCANS}; each one decodes the whole "
                "image again)"
            )
    w, h = img.size
    wide = img.mode in _WIDE_MODES or (img.mode == "P" and "transparency" in img.info)
    return w * h * (BYTES_PER_PIXEL_WIDE if wide else BYTES_PER_PIXEL)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def give_back_memory() -> None:
    """Return the freed heap to the system (glibc's ``malloc_trim``). After a large image, glibc keeps the freed
    blocks of its decode for reuse (its mmap threshold grows with the blocks freed): the server's RSS stayed 500 MB
    up after a burst of 20-MP images. A no-op where there is no glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
