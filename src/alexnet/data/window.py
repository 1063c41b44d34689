"""Intensity windowing: how a grayscale image with more than 8 bits (a DICOM, a 16-bit PNG or TIFF) becomes uint8.

A window is given as a short string (the ``--window`` setting, stored in ``Preprocess.window`` so that predict and
serve window as training did):

- ``auto`` (default): a DICOM's own VOI window (Window Center / Width), else the image's min..max; a 16/32-bit
  integer or float PNG or TIFF (which stores no window) a fixed range when its values fit one (``AUTO_RANGES``:
  integers 0..65535, floats 0..1 or else 0..255), else its own min..max;
- ``minmax``: each image's min..max;
- a preset in Hounsfield units (CT): ``lung`` (centre -600, width 1500), ``bone`` (400, 1800), ``brain`` (40, 80),
  ``soft-tissue`` (40, 400), the radiology reading windows (Radiopaedia, "Windowing (CT)");
- ``C,W``: centre and width in the image's units after the modality LUT, e.g. ``40,400``;
- ``pLOW-pHIGH``: each image's LOW..HIGH percentiles, e.g. ``p1-p99`` (robust to a few hot pixels).

Centre / width windows follow DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), as pydicom's ``apply_voi_lut``.
"""

from __future__ import annotations

import functools
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


# ---- auto for gray images that store no window (16/32-bit integer or float PNG, TIFF)

# A fixed range keeps one value one brightness in every image. The first range that holds an image's values is used;
# an image that fits none (an int32 TIFF up to 2**31, a float TIFF in -100..4900, an int16 TIFF's negatives) is
# spread over its own min..max: scaled from 0..65535 they came out one constant 255, or negatives black.
AUTO_RANGES = {True: ((0.0, 65535.0),), False: ((0.0, 1.0), (0.0, 255.0))}  # integer values?: the ranges tried
DARK_FRACTION = 0.25  # a set whose values stay below this fraction of auto's range comes out at most 63 of 255


def finite(x: np.ndarray) -> np.ndarray:
    """``x`` with NaN and -inf as its smallest finite value and +inf as its largest (all 0 when none is finite)."""
    if x.dtype.kind != "f" or np.isfinite(x).all():
        return x
    ok = np.isfinite(x)
    low, high = (float(x[ok].min()), float(x[ok].max())) if ok.any() else (0.0, 0.0)
    return np.nan_to_num(x, nan=low, posinf=high, neginf=low)


def value_range(x: np.ndarray) -> tuple[float, float]:
    """The smallest and largest finite value of ``x`` ((0, 0) when it has none)."""
    x = finite(x)
    return (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)


def auto_range(low: float, high: float, *, integer: bool) -> tuple[float, float] | None:
    """The fixed range ``auto`` spreads over 0..255 for a gray image whose values are ``low..high`` (``integer``:
    stored as integers, else floats); None: none holds them, so ``auto`` uses the image's own min..max."""
    return next(((lo, hi) for lo, hi in AUTO_RANGES[integer] if lo <= low and high <= hi), None)


def spreading(low: float, high: float) -> str:
    """The ``C,W`` window that maps ``low`` to 0 and ``high`` to 255, as ``--window`` takes it (no exponent)."""
    plain = functools.partial(np.format_float_positional, precision=10, unique=False, fractional=False, trim="-")
    return f"{plain((low + high) / 2 + 0.5)},{plain(high - low + 1)}"


def to_uint8(x: np.ndarray, spec: str, *, integer: bool) -> np.ndarray:
    """Gray values over 8 bits (16/32-bit integers, or floats when not ``integer``) -> uint8 with window ``spec``:
    NaN / inf made finite, and ``auto`` the fixed range that holds the values (``auto_range``), else their min..max.
    The one path of 16/32-bit and float PNG / TIFF files and of such images given to the Python API."""
    x = finite(x)
    return apply(x, spec, full=auto_range(*value_range(x), integer=integer))


def auto_advice(name: str, images: list[tuple[str, bool, float, float]]) -> list[str]:
    """Warnings for gray images ``(path, integer, low, high)`` that ``auto`` spreads badly, each with the window that
    spreads them all: values that fit no fixed range (each image gets its own min..max, so one value has another
    brightness in each image), and a set whose values stay low in their range (dark)."""
    lines = []
    own = [im for im in images if auto_range(im[2], im[3], integer=im[1]) is None]
    if own:
        what = "fit neither 0..65535 (integers) nor 0..1 or 0..255 (floats): --window auto spreads each image over " \
               "its own min..max, so one value is another brightness in each image"  # fmt: skip
        lines.append(_advice_line(name, own, what, "one range for all of them"))
    for integer, ranges in AUTO_RANGES.items():
        for lo, hi in ranges:
            group = [im for im in images if im[1] == integer and auto_range(im[2], im[3], integer=integer) == (lo, hi)]
            top = max((im[3] for im in group), default=hi)
            if top < lo + DARK_FRACTION * (hi - lo):
                what = f"--window auto spreads {lo:g}..{hi:g} over 0..255, so they come out dark (at most " \
                       f"{255 * (top - lo) / (hi - lo):.0f})"  # fmt: skip
                lines.append(_advice_line(name, group, what, "their range", ", or --window minmax"))
    return lines


def _advice_line(name: str, images: list, what: str, give: str, other: str = "") -> str:
    low, high = min(im[2] for im in images), max(im[3] for im in images)
    return (f"{name}: {len(images)} 16/32-bit gray image(s) with values {low:g}..{high:g}, e.g. {images[0][0]}: "
            f"{what}; give {give}, --window {spreading(low, high)} (centre,width){other}")  # fmt: skip
