"""pydicom's shipped sample files through ``decode_image``, checked against pydicom's own decoding (its colour LUT,
its colour-space conversion, its pixel arrays): palette colour, YBR 4:2:2, 8/16/32-bit RGB, deflated and JPEG
baseline files, and the one-line messages for files no installed decoder reads."""

import logging

import numpy as np
import pytest

from alexnet.data.decode import DecodeError, decode_image

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402


def sample(name: str) -> str:
    """One of pydicom's shipped test files (never downloaded: skip if this pydicom lacks it)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom ships no {name}")
    return path


def test_pydicom_warnings_and_log_records_stay_quiet(recwarn, caplog, capsys):
    """badVR.dcm's NumberOfFrames is '1A': one line from us, and none of pydicom's warning or log record (both quote
    the element's value, and printed two lines before ours)."""
    path = sample("badVR.dcm")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DecodeError, match=r"badVR\.dcm: DICOM NumberOfFrames \(0028,0008\) is not an integer"):
        decode_image(path)
    assert [str(w.message) for w in recwarn] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pydicom")] == []
    assert capsys.readouterr().err == ""


def _rgb(path: str) -> np.ndarray:
    return decode_image(path).permute(1, 2, 0).numpy().astype(int)


def test_rgb_scaled_by_its_bits_stored():
    """The same picture stored in 8, 16 and 32 bits a sample gives the same 8-bit image: pydicom's 8-bit pixels (the
    32-bit file was scaled over 0..65535, so every sample came out 0 or 255)."""
    eight = pydicom.dcmread(sample("SC_rgb_rle.dcm")).pixel_array.astype(int)
    for name in ("SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm"):
        assert np.abs(_rgb(sample(name)) - eight).max() <= 1, name


def test_ybr_full_422_is_rgb_as_pydicom_converts_it():
    """YBR_FULL_422 stores two samples a pixel (Y Y Cb Cr per pair), so its 20,000 bytes are all of a 100x100 image:
    it was refused as truncated against 30,000. It decodes to pydicom's convert_color_space of the raw samples."""
    from pydicom.pixels import convert_color_space, pixel_array

    path = sample("SC_ybr_full_422_uncompressed.dcm")
    ds = pydicom.dcmread(path)
    ref = convert_color_space(pixel_array(ds, raw=True), "YBR_FULL", "RGB").astype(int)
    assert np.abs(_rgb(path) - ref).max() <= 1
