"""DICOM files as images (pydicom, the ``medical`` extra): pixel data -> modality LUT -> VOI window -> uint8 gray;
colour (RGB, YBR converted by pydicom, PALETTE COLOR through its colour table) scaled by its bits to uint8 RGB.

The header is checked before any pixel is decoded: rows x columns x frames against ``max_image_pixels`` and the
aspect bound (``alexnet.limits``), the pixel data's length against what the header declares (a truncated file), the
pixel module's values (a wrong VR), DICOMDIRs and files without pixel data; each is one ``DecodeError`` line naming
the file. Multi-frame files give their first frame (only that frame is decoded), said once per process on stderr.

Privacy: a DICOM header carries patient names, IDs and birth dates. Nothing here reads, prints or raises with any
element outside the image pixel module, the transfer syntax, the modality and the pixel spacing; pydicom's own
warnings and log records (which may quote element values) are silenced while a file is read or decoded. Messages
name the file path only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import sys
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import DecodeBoundsError, DecodeError, decoding
from . import window as windowing

MAGIC_OFFSET = 128  # Part 10: a 128-byte preamble, then "DICM"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_said: set[str] = set()  # what _say_once has said in this process (a multi-frame file, an unusable window)


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return data[MAGIC_OFFSET : MAGIC_OFFSET + 4] == b"DICM"


class _DropWhileReading(logging.Filter):
    """Drops pydicom's log records in a thread that is inside ``_quiet()``: they repeat its warnings, which may quote
    element values (patient names, dates), and would print before our one line wherever logging is configured."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_reading, "depth", 0)


_reading = threading.local()  # per thread, so another thread's pydicom logging is untouched
_DROP_WHILE_READING = _DropWhileReading()


@contextlib.contextmanager
def _quiet():
    """No pydicom warning or log record while a file is read or decoded: the caller gets one ``DecodeError`` line."""
    logger = logging.getLogger("pydicom")
    if _DROP_WHILE_READING not in logger.filters:  # inert outside _quiet(): it only drops while depth > 0
        logger.addFilter(_DROP_WHILE_READING)
    _reading.depth = getattr(_reading, "depth", 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _reading.depth -= 1


def _pydicom():

    try:
        import pydicom
    except ImportError:
        raise DecodeError("reading DICOM files needs pydicom: pip install 'alexnet[medical]'") from None
    return pydicom


@dataclass(frozen=True)
class Header:
    """What a DICOM header says about its pixels (no patient data)."""

    rows: int
    columns: int
    frames: int
    samples: int  # 1 gray or a palette index, 3 colour
    bits_allocated: int
    bits_stored: int
    photometric: str  # MONOCHROME1 (inverted), MONOCHROME2, RGB, YBR_FULL...
    transfer_syntax: str  # its name, e.g. "JPEG 2000 Image Compression"
    compressed: bool
    modality: str
    window: tuple[float, float] | None  # the first stored (centre, width), if usable
    window_problem: str | None  # why a stored window is not used (a width under 1, not numbers), else None
    pixel_spacing: tuple[float, float] | None  # mm, (row, column)

    @property
    def colour(self) -> bool:
        """Decodes to RGB: three samples a pixel, or one index into a colour table (PALETTE COLOR)."""
        return self.samples == 3 or self.photometric == "PALETTE COLOR"


def _read(data: bytes, name: str):

    pydicom = _pydicom()
    try:
        with _quiet():
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:
        raise DecodeError(f"{name}: not a readable DICOM file ({type(e).__name__})") from None
    return ds


def _int(ds, keyword: str, name: str, default: int | None = None) -> int:
    """An integer element of the pixel module, or one line naming the element (its value is not printed)."""

    elem = ds.get(keyword, None) if hasattr(ds, "get") else None
    if elem is None:
        if default is None:
            raise DecodeError(f"{name}: DICOM file without {keyword}; not an image")
        return default
    try:
        value = ds[keyword].value
        if isinstance(value, (bytes, bytearray, list, tuple)):
            raise TypeError
        out = int(value)
        if out != float(value):
            raise ValueError
    except Exception:
        tag = ds.data_element(keyword).tag
        vr = ds.data_element(keyword).VR
        raise DecodeError(
            f"{name}: DICOM {keyword} {tag} is not an integer (value representation {vr}); the file is malformed"
        ) from None
    return out


def _floats(ds, keyword: str) -> list[float] | None:
    try:
        v = ds.get(keyword, None)
        if v is None:
            return None
        v = list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]
        return [float(x) for x in v]
    except Exception:
        return None


def read_header(data: bytes, name: str, *, max_pixels: int, max_aspect: float, _ds=None) -> Header:
    """Parse and bound-check a DICOM header; ``DecodeError``/``DecodeBoundsError`` name the file."""

    with decoding(name, "DICOM file"):
        ds = _ds if _ds is not None else _read(data, name)
        with _quiet():  # reading an element converts its value, and pydicom warns about (and quotes) a bad one
            return _header(ds, name, len(data), max_pixels=max_pixels, max_aspect=max_aspect)


def _header(ds, name: str, size: int, *, max_pixels: int, max_aspect: float) -> Header:
    meta = getattr(ds, "file_meta", None)
    _check_kind(ds, meta, name, size)
    rows, cols = _int(ds, "Rows", name), _int(ds, "Columns", name)
    frames = _int(ds, "NumberOfFrames", name, default=1)
    samples = _int(ds, "SamplesPerPixel", name, default=1)
    bits_allocated = _int(ds, "BitsAllocated", name)
    bits_stored = _int(ds, "BitsStored", name, default=bits_allocated)
    _check_geometry(name, rows, cols, frames, samples, bits_allocated, max_pixels, max_aspect)
    ts_name, compressed = _transfer_syntax(meta, name)
    _check_rescale(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip()
    if not compressed and "PixelData" in ds:
        _check_length(ds, name, rows, cols, frames, _stored_samples(samples, photometric), bits_allocated)
    win, window_problem = _stored_window(ds)
    spacing = _floats(ds, "PixelSpacing")
    return Header(
        rows=rows,
        columns=cols,
        frames=frames,
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        photometric=photometric,
        transfer_syntax=ts_name,
        compressed=compressed,
        modality=str(ds.get("Modality", "") or ""),
        window=win,
        window_problem=window_problem,
        pixel_spacing=(spacing[0], spacing[1]) if spacing and len(spacing) == 2 else None,
    )


def _transfer_syntax(meta, name: str) -> tuple[str, bool]:
    """(its name, compressed) of the file meta's transfer syntax; ``DecodeError`` for a UID that is not a transfer
    syntax pydicom knows (a private or mistyped one): its pixel data could not be read."""
    ts = meta.get("TransferSyntaxUID", None) if meta is not None else None
    if ts is None:
        return "Implicit VR Little Endian", False
    if not getattr(ts, "is_transfer_syntax", False):
        raise DecodeError(
            f"{name}: unknown transfer syntax UID {str(ts)[:64]!r} in the DICOM file meta (0002,0010): not a "
            "transfer syntax this reader knows; re-export the file with a standard one"
        )
    return ts.name, bool(ts.is_compressed)


def _number(ds, keyword: str, name: str) -> float:
    """A single finite number of the image pixel module, or one line naming the element (its value is not printed)."""
    try:
        value = ds[keyword].value
        if isinstance(value, (bytes, bytearray, list, tuple)) or type(value).__name__ == "MultiValue":
            raise TypeError
        out = float(value)
        if not math.isfinite(out):
            raise ValueError
    except Exception:
        elem = ds.data_element(keyword)
        raise DecodeError(
            f"{name}: DICOM {keyword} {elem.tag} is not a number (value representation {elem.VR}); "
            "the file is malformed"
        ) from None
    return out


def _check_rescale(ds, name: str) -> None:
    """``DecodeError`` for a rescale the modality LUT would use (both elements, no LUT sequence) that is not two
    numbers, or whose slope is 0: every pixel would come out the same value."""
    if "ModalityLUTSequence" in ds or "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return
    slope = _number(ds, "RescaleSlope", name)
    _number(ds, "RescaleIntercept", name)
    if slope == 0:
        raise DecodeError(
            f"{name}: DICOM RescaleSlope (0028,1053) is 0: every pixel would have the same value; the file is malformed"
        )


def _stored_window(ds) -> tuple[tuple[float, float] | None, str | None]:
    """The first stored (centre, width), or None and why a stored window is not usable: not numbers, or a width
    under 1 (PS3.3 C.11.2.1.2.1: the width is at least 1)."""
    if "WindowCenter" not in ds and "WindowWidth" not in ds:
        return None, None
    centre, width = _floats(ds, "WindowCenter"), _floats(ds, "WindowWidth")
    if not centre or not width or not math.isfinite(centre[0]) or not math.isfinite(width[0]):
        return None, "its WindowCenter/WindowWidth (0028,1050/1051) are missing or not numbers"
    if width[0] < 1:
        return None, f"its WindowWidth (0028,1051) is {width[0]:g}, under 1"
    return (centre[0], width[0]), None


def _stored_samples(samples: int, photometric: str) -> int:
    """Samples stored per pixel in native (uncompressed) pixel data: YBR_FULL_422 (and the retired YBR_PARTIAL_422)
    store each pair of pixels as Y Y Cb Cr, two samples a pixel where there are three after decoding (PS3.3
    C.7.6.3.1.2)."""
    return 2 if samples == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") else samples


def _check_length(ds, name: str, rows: int, cols: int, frames: int, stored_samples: int, bits_allocated: int) -> None:
    """``DecodeError`` for native pixel data shorter than the header's pixel module declares (a truncated file)."""
    need = (rows * cols * frames * stored_samples * bits_allocated + 7) // 8
    have = len(ds["PixelData"].value or b"")
    if have < need:
        raise DecodeError(
            f"{name}: truncated DICOM: {have:,} bytes of pixel data, the header declares {need:,} "
            f"({cols}x{rows} px x {frames} frame(s) x {stored_samples} sample(s) x {bits_allocated} bits)"
        )


def _check_kind(ds, meta, name: str, size: int) -> None:
    """``DecodeError`` for a DICOMDIR or a file without pixel data (one without a modality or an image size either
    is most likely an image cut short: said, with its length)."""
    sop = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if sop == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise DecodeError(f"{name}: a DICOMDIR (an index of DICOM files), not an image; use the files it lists")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = str(ds.get("Modality", "") or "unknown modality")
        if not any(k in ds for k in ("Modality", "Rows", "Columns")):  # no sign of what it is: 300 bytes of a CT
            raise DecodeError(f"{name}: a DICOM file without pixel data, modality or image size ({size:,} bytes): "
                              "cut short, or not an image")  # fmt: skip
        raise DecodeError(f"{name}: a DICOM file without pixel data ({modality}); not an image")


def _check_geometry(name: str, rows: int, cols: int, frames: int, samples: int, bits_allocated: int,
                    max_pixels: int, max_aspect: float) -> None:  # fmt: skip
    """``DecodeError`` for a shape this reader does not handle; ``DecodeBoundsError`` past the pixel and aspect
    limits (checked from the header, before any pixel is decoded)."""
    if rows < 1 or cols < 1 or frames < 1 or samples not in (1, 3) or bits_allocated not in (1, 8, 16, 32, 64):
        raise DecodeError(
            f"{name}: DICOM header declares {cols}x{rows} px, {frames} frame(s), {samples} sample(s) per pixel, "
            f"{bits_allocated} bits allocated; not an image this reader handles"
        )
    total = rows * cols * frames
    if rows * cols > max_pixels or total > max_pixels:
        raise DecodeBoundsError(
            f"{name}: refused to decode a DICOM of {cols}x{rows} px x {frames} frame(s) ({total:,} pixels > limit "
            f"{max_pixels:,}); raise ALEXNET_MAX_IMAGE_PIXELS if it is genuine"
        )
    if max(rows, cols) > max_aspect * min(rows, cols):
        raise DecodeBoundsError(
            f"{name}: refused a {cols}x{rows} DICOM: its aspect ratio is over {max_aspect:g}:1; "
            "raise ALEXNET_MAX_IMAGE_ASPECT if it is genuine"
        )


def decode(data: bytes, name: str, *, max_pixels: int, max_aspect: float, window: str = "auto") -> np.ndarray:
    """A DICOM's first frame as uint8 ``(H, W)`` (grayscale, windowed) or ``(H, W, 3)`` (colour or palette)."""

    with decoding(name, "DICOM file"):
        ds = _read(data, name)
        h = read_header(data, name, max_pixels=max_pixels, max_aspect=max_aspect, _ds=ds)
        return _to_uint8(ds, h, name, window)


def _to_uint8(ds, h: Header, name: str, window: str) -> np.ndarray:
    arr = _first_frame(ds, h, name)
    if h.frames > 1:
        _say_once(
            "multiframe",
            f"{name}: a multi-frame DICOM ({h.frames} frames); the first frame is used, here and "
            "for every other multi-frame DICOM",
        )
    if h.window_problem and window == "auto":
        _say_once(
            "window",
            f"{name}: its stored window is not used ({h.window_problem}); windowed min..max instead, "
            "here and for every other DICOM whose stored window is unusable",
        )
    if h.samples == 3:  # pydicom converted YBR to RGB
        bits = h.bits_stored if 0 < h.bits_stored <= h.bits_allocated else h.bits_allocated
        return to_8bit(arr, bits)
    if h.photometric == "PALETTE COLOR":  # indices into the colour table, not intensities: no modality LUT or window
        return _palette_to_rgb(arr, ds, name)
    from pydicom.pixels import apply_modality_lut

    with _quiet():
        x = apply_modality_lut(arr, ds)  # rescale slope / intercept (or the modality LUT): stored values -> HU...
    out = windowing.apply(x, window, stored=h.window, full=None)
    if h.photometric == "MONOCHROME1":  # 0 is white
        out = 255 - out
    return out


def _first_frame(ds, h: Header, name: str) -> np.ndarray:
    """The first frame's pixels (YBR converted to RGB) from the parsed dataset, whose pixel data is already in memory
    and inflated (a second parse of the raw bytes could not read the Deflated transfer syntax, nor some encapsulated
    files pydicom's dataset reader accepts); ``index`` makes pydicom decode that frame only."""
    from pydicom.pixels import pixel_array

    try:
        with _quiet():
            arr = pixel_array(ds, index=0 if h.frames > 1 else None)
    except Exception as e:
        raise DecodeError(_undecodable(ds, h, name, e)) from None
    return arr[0] if arr.ndim == 3 and h.samples == 1 else arr  # a decoder that returned every frame anyway


def _undecodable(ds, h: Header, name: str, error: Exception) -> str:
    """One line for pixel data pydicom could not decode: what to install when none of the decoders it knows for the
    transfer syntax is installed, else its reason (without the exception's class name, which says nothing to a
    user), and other decoders that may do better."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID", None) if meta is not None else None
    available, hint = _decoders(uid)
    convert = "or convert the file to an uncompressed transfer syntax"
    if h.compressed and not available and hint:
        return (
            f"{name}: DICOM pixel data in {h.transfer_syntax!r} needs a decoder that is not installed: {hint}; "
            + convert
        )
    reason = " ".join(str(error).split())[:300] or "no reason given"  # pydicom's lines (plugin by plugin) as one
    line = f"{name}: cannot decode the DICOM pixel data ({h.transfer_syntax}): {reason}"
    return f"{line}; another decoder may: {hint}, {convert}" if h.compressed and hint else line


_PIP_NAMES = {"gdcm": "python-gdcm"}  # the module pydicom names -> the package pip installs, where they differ


def _decoders(uid) -> tuple[bool, str | None]:
    """(any decoder for ``uid`` installed, ``pip install ...`` for the missing ones or None), from pydicom's own list
    of its plugins and their dependencies (``pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1``)."""
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(uid)
        available, missing = bool(decoder.available_plugins), list(decoder.missing_dependencies)
    except Exception:  # no uid, a syntax pydicom has no decoder for, or another pydicom's API
        return False, None
    options = []
    for line in missing:
        requirements = line.split(" - requires ", 1)[-1].split(" and ")
        packages = [re.split(r"[<>=!~\s]", r.strip(), maxsplit=1)[0] for r in requirements]
        packages = [_PIP_NAMES.get(p, p) for p in packages if p and p != "numpy"]
        if packages:
            options.append("pip install " + " ".join(packages))
    options.sort(key=lambda o: "pylibjpeg" not in o)  # wheels for every platform first
    return available, ", or ".join(options) or None


def _palette_to_rgb(arr: np.ndarray, ds, name: str) -> np.ndarray:
    """PALETTE COLOR pixels through the file's red, green and blue tables to uint8 RGB, scaled by the tables' entry
    size (8 or 16 bits, as pydicom's ``apply_color_lut`` returns them)."""
    try:
        with _quiet():
            rgb = _apply_color_lut()(arr, ds)
    except Exception as e:
        reason = " ".join(str(e).split())[:300] or "no reason given"
        raise DecodeError(f"{name}: a PALETTE COLOR DICOM whose colour table cannot be applied: {reason}") from None
    return to_8bit(rgb[..., :3], rgb.dtype.itemsize * 8)  # [:3]: an enhanced palette's alpha table, if any


def _apply_color_lut():
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom before 3.0 kept it here
        from pydicom.pixel_data_handlers.util import apply_color_lut
    return apply_color_lut


def to_8bit(x: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned samples of ``bits`` bits (0 .. 2**bits - 1) scaled linearly to uint8, rounded: the same picture
    stored in 8, 16 or 32 bits gives the same image. Integer arithmetic in uint64 (a 32-bit sample times 255
    overflows uint32): 8 bytes a sample, where float64 scaling took two such copies."""
    if x.dtype == np.uint8 and bits == 8:
        return np.ascontiguousarray(x)
    top = 2**bits - 1
    y = (x if x.dtype.kind == "u" else np.clip(x, 0, None)).astype(np.uint64)  # signed colour: negatives are black
    np.minimum(y, top, out=y)  # in place: a sample over bits stored saturates
    y *= 255
    y += top // 2
    y //= top
    return y.astype(np.uint8)


def _say_once(kind: str, text: str) -> None:
    """Print ``text`` on stderr the first time this process meets a file of this ``kind``, not once per file."""
    if kind not in _said:
        _said.add(kind)
        print(text, file=sys.stderr)


def write(
    path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
    pixel_spacing: tuple[float, float] | None = None,
    patient_name: str = "",
    patient_id: str = "",
) -> None:
    """Write an uncompressed DICOM of ``pixels`` (``(H, W)`` or ``(frames, H, W)`` int16/uint16/uint8 stored
    values), for tests and demos (``benchmarks/medical_demo.py``): the pixel module, the rescale and window given,
    and the patient elements a real file carries."""
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.7"  # CT / SC storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient_name, patient_id, "19700101" if patient_id else ""
    ds.Modality = modality
    a = np.asarray(pixels)
    if a.ndim == 3:
        ds.NumberOfFrames = a.shape[0]
    ds.Rows, ds.Columns = a.shape[-2], a.shape[-1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = a.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if a.dtype.kind == "i" else 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope if slope is not None else 1, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    ds.PixelData = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes()
    ds.save_as(path, enforce_file_format=True)
    del pydicom
