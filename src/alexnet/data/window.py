"""Intensity windowing: how a grayscale image with more than 8 bits (a DICOM, a 16-bit PNG or TIFF) becomes uint8.

A window is given as a short string (the ``--window`` setting, stored in ``Preprocess.window`` so that predict and
serve window as training did):

- ``auto`` (default): a DICOM's own VOI window (Window Center / Width), else the image's min..max; a 16-bit PNG or
  TIFF (which stores no window) its full 0..65535 range;
- ``minmax``: each image's min..max;
- a preset in Hounsfield units (CT): ``lung`` (centre -600, width 1500), ``bone`` (400, 1800), ``brain`` (40, 80),
  ``soft-tissue`` (40, 400), the radiology reading windows (Radiopaedia, "Windowing (CT)");
- ``C,W``: centre and width in the image's units after the modality LUT, e.g. ``40,400``;
- ``pLOW-pHIGH``: each image's LOW..HIGH percentiles, e.g. ``p1-p99`` (robust to a few hot pixels).

Centre / width windows follow DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), as pydicom's ``apply_voi_lut``.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import UserError

PRESETS = {"lung": (-600.0, 1500.0), "bone": (400.0, 1800.0), "brain": (40.0, 80.0), "soft-tissue": (40.0, 400.0)}
CHOICES = ("auto", "minmax", *PRESETS, "C,W", "pLOW-pHIGH")
_CW = re.compile(r"^\s*(-?\d+(?:\.\d*)?)\s*,\s*(-?\d+(?:\.\d*)?)\s*$")  # a negative width is told it must be >= 1
_PCT = re.compile(r"^p(\d+(?:\.\d*)?)-p(\d+(?:\.\d*)?)$")


def check_window(spec: str) -> str:
    """``spec`` if it names a window (see the module doc), else a ``UserError`` listing the choices."""
    if not isinstance(spec, str):
        raise UserError(f"window {spec!r}: must be a string, one of {', '.join(CHOICES)}")
    if spec in ("auto", "minmax") or spec in PRESETS:
        return spec
    if m := _CW.match(spec):
        if float(m.group(2)) < 1:
            raise UserError(f"window {spec!r}: the width must be at least 1 (DICOM's linear window)")
        return spec
    if m := _PCT.match(spec):
        lo, hi = float(m.group(1)), float(m.group(2))
        if not 0 <= lo < hi <= 100:
            raise UserError(f"window {spec!r}: percentiles must satisfy 0 <= LOW < HIGH <= 100")
        return spec
    raise UserError(f"window {spec!r}: choose one of {', '.join(CHOICES)}")


def linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2.1) to uint8: below ``c - 0.5 - (w-1)/2`` is 0, above
    ``c - 0.5 + (w-1)/2`` is 255, linear in between; rounded to the nearest integer."""
    c, w = center - 0.5, max(width, 1.0) - 1.0
    if w == 0:  # a threshold
        return np.where(x > c, 255, 0).astype(np.uint8)
    y = ((x.astype(np.float64) - c) / w + 0.5) * 255.0
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)


def scale(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low`` -> 0, ``high`` -> 255, linear, clipped and rounded (a constant image is 0)."""
    if high <= low:
        return np.zeros(x.shape, np.uint8)
    y = (x.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)


def apply(x: np.ndarray, spec: str, *, stored: tuple[float, float] | None = None, full: tuple[float, float] | None):
    """Window ``x`` (any numeric array) to uint8 with ``spec``. ``stored``: the file's (centre, width), if any;
    ``full``: the (low, high) range ``auto`` uses when there is no stored window (None: the image's min..max)."""
    if spec == "auto":
        if stored is not None:
            return linear(x, *stored)
        if full is not None:
            return scale(x, *full)
        spec = "minmax"
    if spec == "minmax":
        return scale(x, float(x.min()), float(x.max())) if x.size else x.astype(np.uint8)
    if spec in PRESETS:
        return linear(x, *PRESETS[spec])
    if m := _CW.match(spec):
        return linear(x, float(m.group(1)), float(m.group(2)))
    if m := _PCT.match(spec):
        lo, hi = np.percentile(x, [float(m.group(1)), float(m.group(2))])
        return scale(x, float(lo), float(hi))
    raise UserError(f"window {spec!r}: choose one of {', '.join(CHOICES)}")
