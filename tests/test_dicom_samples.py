"""pydicom's shipped sample files through ``decode_image``, checked against pydicom's own decoding (its colour LUT,
its colour-space conversion, its pixel arrays): palette colour, YBR 4:2:2, 8/16/32-bit RGB, deflated and JPEG
baseline files, and the one-line messages for files no installed decoder reads."""

import logging
import warnings

import numpy as np
import pytest

from alexnet.data.decode import DecodeError, decode_image

from .test_medical import pydicom, sample  # pydicom (or the whole module skipped) and its shipped files


def _dcmread(path: str):
    """pydicom's reading of a sample, without its warnings about the sample's own quirks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


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
    eight = _dcmread(sample("SC_rgb_rle.dcm")).pixel_array.astype(int)
    for name in ("SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm"):
        assert np.abs(_rgb(sample(name)) - eight).max() <= 1, name


def test_ybr_full_422_is_rgb_as_pydicom_converts_it():
    """YBR_FULL_422 stores two samples a pixel (Y Y Cb Cr per pair), so its 20,000 bytes are all of a 100x100 image:
    it was refused as truncated against 30,000. It decodes to pydicom's convert_color_space of the raw samples."""
    from pydicom.pixels import convert_color_space, pixel_array

    path = sample("SC_ybr_full_422_uncompressed.dcm")
    ds = _dcmread(path)
    ref = convert_color_space(pixel_array(ds, raw=True), "YBR_FULL", "RGB").astype(int)
    assert np.abs(_rgb(path) - ref).max() <= 1


def _pydicom_pixels(ds) -> np.ndarray | None:
    """pydicom's own pixels, or None where it cannot decode them here (no plugin installed)."""
    try:
        return ds.pixel_array
    except Exception:
        return None


def _gray_reference(ds) -> np.ndarray:
    """pydicom's first frame through its modality LUT, min..max to 0..255 (``window="minmax"``)."""
    from pydicom.pixels import apply_modality_lut

    x = apply_modality_lut(ds.pixel_array, ds).astype(float)
    return np.rint((x - x.min()) * 255 / (x.max() - x.min()))


def test_deflated_file_decodes_as_pydicom_reads_it():
    """The Deflated transfer syntax: the pixels were decoded from a second parse of the raw (still deflated) bytes,
    which found no pixel data ('(AttributeError, ...)')."""
    path = sample("image_dfl.dcm")
    ours = decode_image(path, window="minmax", channels=1)[0].numpy().astype(int)
    assert np.abs(ours - _gray_reference(_dcmread(path))).max() <= 1


@pytest.mark.parametrize("name", ["SC_rgb_jpeg.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_jpeg_baseline_decodes_as_pydicom_does(name):
    """JPEG baseline (Pillow, through pydicom): SC_rgb_jpeg.dcm was refused with '(ValueError, ...)'."""
    path = sample(name)
    ref = _pydicom_pixels(_dcmread(path))
    if ref is None:
        pytest.skip(f"this pydicom cannot decode {name} either")
    assert np.abs(_rgb(path) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "JPEG-lossy.dcm"])
def test_undecodable_file_names_the_decoders_pydicom_lacks(name):
    """A syntax no installed plugin decodes: one line naming the file and each package pydicom lists as missing for
    it (the line used to suggest pylibjpeg-openjpeg, a JPEG 2000 decoder, for JPEG-LS), no exception class name."""
    from pydicom.pixels import get_decoder

    path = sample(name)
    ds = _dcmread(path)
    if _pydicom_pixels(ds) is not None:
        pytest.skip(f"this environment decodes {name}")
    with pytest.raises(DecodeError) as e:
        decode_image(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and "Error" not in msg
    missing = get_decoder(ds.file_meta.TransferSyntaxUID).missing_dependencies  # "gdcm - requires gdcm>=3.0.10"
    assert missing and all(m.split(" - ")[0] in msg for m in missing)


def test_palette_colour_goes_through_its_colour_table():
    """PALETTE COLOR pixels are indices: they came out as a grey image of index values. Now RGB, as pydicom's
    apply_color_lut gives it, scaled from the table's entry size (16 bits here) to 8; and the channel vote that
    picks a 1- or 3-channel model counts the file as colour."""
    from pydicom.pixels import apply_color_lut

    from alexnet.data.channels import stored_gray

    path = sample("examples_palette.dcm")
    ds = _dcmread(path)
    lut = apply_color_lut(ds.pixel_array, ds)
    ref = np.rint(lut.astype(float) * 255 / np.iinfo(lut.dtype).max)
    assert np.abs(_rgb(path) - ref).max() <= 1
    assert len(np.unique(ref.reshape(-1, 3), axis=0)) > 2  # a colour picture, so a grey result cannot pass
    assert stored_gray(path) is False


def test_dicom_data_set_without_file_header_says_so():
    """no_meta.dcm is a bare data set (no preamble, no 'DICM'), which pydicom refuses too: the line said 'not an
    image Pillow can read (UnidentifiedImageError: ...)'; it now says what the file lacks."""
    from pydicom.errors import InvalidDicomError

    path = sample("no_meta.dcm")
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(path)
    with pytest.raises(DecodeError, match=r"no_meta\.dcm: not a DICOM file pydicom reads: no 'DICM' marker") as e:
        decode_image(path)
    assert "Error" not in str(e.value)
