"""Every DICOM file pydicom ships, through ``decode_image``, checked against pydicom's own pixels.

    PYTHONPATH=src python benchmarks/dicom_sweep.py [-v]

Each file ends in one of:

- decoded: our image equals pydicom's ``dcmread(f).pixel_array`` (first frame) after the documented 8-bit step,
  within 1 level: gray -> modality LUT -> min..max (``window="minmax"``, MONOCHROME1 inverted); colour -> scaled by
  its bits stored; PALETTE COLOR -> ``apply_color_lut``, scaled by the LUT's entry size;
- mismatched: decoded, but to other pixels or another shape than that reference;
- refused: one ``DecodeError`` line naming the file (split: pydicom cannot decode it either / pydicom can);
- unclean: a ``DecodeError`` over several lines, without the file's name or quoting an exception class;
- escaped: any other exception.

The reference is pydicom's, not ours: its decoders, its modality LUT, its colour conversions.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import warnings
from collections import Counter

import numpy as np

CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Warning)\b")


def sample_files() -> list[str]:
    """pydicom's test-data files, and every ``*.dcm`` beside them (never downloaded)."""
    import pydicom.data

    files = set(pydicom.data.get_testdata_files())
    folder = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    files |= set(glob.glob(os.path.join(folder, "*.dcm")))
    return sorted(f for f in files if os.path.isfile(f))


def reference(path: str) -> np.ndarray | None:
    """pydicom's first frame as uint8 ``(H, W)`` / ``(H, W, 3)`` by the documented steps; None if it cannot decode."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            samples = int(ds.get("SamplesPerPixel", 1))
            if frames > 1:
                arr = arr[0]
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            if photometric == "PALETTE COLOR":
                rgb = apply_color_lut(arr, ds)
                return to_8bit(rgb, 16 if rgb.dtype == np.uint16 else 8)
            if samples == 3:
                return to_8bit(arr, int(ds.get("BitsStored", ds.BitsAllocated)))
            x = apply_modality_lut(arr, ds).astype(np.float64)
    except Exception:
        return None
    lo, hi = x.min(), x.max()
    y = np.zeros(x.shape, np.uint8) if hi <= lo else np.rint((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return 255 - y if photometric == "MONOCHROME1" else y


def to_8bit(x: np.ndarray, bits: int) -> np.ndarray:
    if x.dtype == np.uint8 and bits == 8:
        return x
    return np.rint(np.clip(x.astype(np.float64) * (255.0 / (2**bits - 1)), 0, 255)).astype(np.uint8)


def check(path: str) -> tuple[str, str]:
    """(outcome, detail) for one file."""
    from alexnet.data.decode import DecodeError, decode_image

    ref = reference(path)
    try:
        t = decode_image(path, window="minmax")
    except DecodeError as e:
        msg = str(e)
        if "\n" in msg or path not in msg or CLASS_NAME.search(msg):
            return "unclean", msg
        return ("refused, pydicom decodes it" if ref is not None else "refused, pydicom cannot either"), msg
    except Exception as e:  # the defect this sweep looks for
        return "escaped", f"{type(e).__name__}: {e}"
    ours = t.permute(1, 2, 0).numpy()
    if ref is None:
        return "decoded, pydicom cannot", str(tuple(ours.shape))
    if ref.ndim == 2:
        ours = ours[..., 0]
    if ours.shape != ref.shape:
        return "mismatched", f"shape {ours.shape} != pydicom's {ref.shape}"
    diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
    return ("decoded", f"{ours.shape}") if diff <= 1 else ("mismatched", f"max difference {diff} levels")


def main(verbose: bool) -> int:
    counts: Counter[str] = Counter()
    for path in sample_files():
        outcome, detail = check(path)
        counts[outcome] += 1
        if verbose or outcome in ("mismatched", "unclean", "escaped", "refused, pydicom decodes it"):
            print(f"{outcome:30s} {os.path.basename(path)}: {detail[:300]}")
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), f"(of {sum(counts.values())} files)")
    return 1 if counts["mismatched"] + counts["unclean"] + counts["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main("-v" in sys.argv))
