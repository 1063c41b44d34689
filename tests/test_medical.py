"""Medical images: DICOM decoding (modality LUT, VOI window, MONOCHROME1, compressed syntaxes, multi-frame), hostile
DICOMs refused in one line before allocating, 16-bit grayscale windowing. Golden values are computed by hand (DICOM
PS3.3 C.11.2.1.2.1) or by pydicom's own ``apply_voi_lut``."""

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.data import dicom
from alexnet.data.decode import DecodeBoundsError, DecodeError, decode_image
from alexnet.errors import UserError

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402


def sample(name: str) -> str:
    """One of pydicom's shipped test files (never downloaded: skip if this pydicom lacks it)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom ships no {name}")
    return path


# stored values s; HU = 2 s - 1024 (slope 2, intercept -1024): -1024, 0, 20, 40, 80 HU
STORED = np.array([[0, 512, 522, 532, 552]], dtype=np.int16)


def test_modality_lut_then_stored_window_by_hand(tmp_path):
    p = tmp_path / "ct.dcm"
    dicom.write(p, STORED, slope=2, intercept=-1024, window=(40, 80))
    # window c=40, w=80: x <= c - 0.5 - (w-1)/2 = 0 -> 0; x > 79 -> 255; else ((x - 39.5) / 79 + 0.5) * 255
    # 20 HU: (-19.5/79 + 0.5) * 255 = 64.56 -> 65; 40 HU: (0.5/79 + 0.5) * 255 = 129.11 -> 129
    t = decode_image(p)
    assert t.shape == (3, 1, 5) and t.dtype.is_floating_point is False
    assert t[0, 0].tolist() == [0, 0, 65, 129, 255]
    assert (t[0] == t[2]).all()
    g = decode_image(p, channels=1)
    assert g.shape == (1, 1, 5) and g[0, 0].tolist() == [0, 0, 65, 129, 255]


def test_window_setting_overrides_the_file(tmp_path):
    p = tmp_path / "ct.dcm"
    dicom.write(p, STORED, slope=2, intercept=-1024, window=(40, 80))
    # lung: c=-600, w=1500: ((x + 600.5) / 1499 + 0.5) * 255 -> -1024: 55.46, 0: 229.65, 20: 233.06, 40: 236.46,
    # 80: 243.26
    assert decode_image(p, window="lung")[0, 0].tolist() == [55, 230, 233, 236, 243]
    assert decode_image(p, window="-600,1500")[0, 0].tolist() == [55, 230, 233, 236, 243]
    # min..max over -1024..80 HU: (x + 1024) * 255 / 1104
    assert decode_image(p, window="minmax")[0, 0].tolist() == [0, 237, 241, 246, 255]
    assert decode_image(p, window="p0-p100")[0, 0].tolist() == [0, 237, 241, 246, 255]


def test_no_stored_window_is_min_max_and_monochrome1_inverted(tmp_path):
    p = tmp_path / "m1.dcm"
    dicom.write(p, np.array([[0, 50, 200]], np.uint16), photometric="MONOCHROME1")
    assert decode_image(p, channels=1)[0, 0].tolist() == [255, 191, 0]  # 0, 63.75 -> 64, 255, then 255 - y
    dicom.write(p, np.array([[0, 50, 200]], np.uint16))
    assert decode_image(p, channels=1)[0, 0].tolist() == [0, 64, 255]


def _reference(path: str) -> np.ndarray:
    """pydicom's modality LUT then VOI LUT, scaled from its output range (apply_windowing's y_min..y_max) to 0..255."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    v = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    bits = ds.BitsStored
    lo, hi = (0, 2**bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        lo, hi = lo * ds.RescaleSlope + ds.RescaleIntercept, hi * ds.RescaleSlope + ds.RescaleIntercept
    return np.rint((v - lo) / (hi - lo) * 255)


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_shipped_files_with_a_window_match_pydicom_apply_voi_lut(name):
    path = sample(name)
    t = decode_image(path, channels=1)
    assert t.shape == (1, 64, 64)
    ref = _reference(path)
    assert np.abs(t[0].numpy().astype(int) - ref).max() <= 1
    assert 0 < t.float().mean() < 255  # a real picture, not all black or white


@pytest.mark.parametrize("name, shape", [("CT_small.dcm", (128, 128)), ("JPEG2000.dcm", (1024, 256))])
def test_shipped_files_without_a_window_decode_min_max(name, shape):
    t = decode_image(sample(name))
    assert t.shape == (3, *shape)
    assert t.min() == 0 and t.max() == 255


def test_undecodable_transfer_syntax_is_one_line_naming_it():
    path = sample("MR_small_jpeg_ls_lossless.dcm")
    try:
        decode_image(path)
    except DecodeError as e:
        msg = str(e)
        assert "JPEG-LS Lossless" in msg and path in msg and "\n" not in msg
    else:
        pytest.skip("this environment has a JPEG-LS decoder")


def test_multi_frame_gives_the_first_frame_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dicom, "_said", set())
    frames = np.stack([np.full((4, 6), v, np.uint16) for v in (10, 20, 30)])
    frames[0, 0, 0] = 0
    p = tmp_path / "cine.dcm"
    dicom.write(p, frames)
    t = decode_image(p, channels=1)
    assert t.shape == (1, 4, 6)
    assert t[0, 0, 0] == 0 and t[0, 1, 1] == 255  # frame 0 (0 and 10), min..max
    assert "(3 frames); the first frame is used" in capsys.readouterr().err


# ---- hostile files: one line each, nothing allocated first


def _raw(tmp_path, name, **elements) -> Path:
    """A small valid DICOM, then its pixel-module elements overwritten (``elements``: keyword -> (VR, value))."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    p = tmp_path / name
    dicom.write(p, np.zeros((8, 8), np.int16))
    ds = pydicom.dcmread(p)
    for k, (vr, v) in elements.items():
        ds[tag_for_keyword(k)] = DataElement(tag_for_keyword(k), vr, v)
    ds.save_as(p, enforce_file_format=True)
    return p


def test_declared_size_past_the_pixel_limit_refused_before_allocating(tmp_path):
    p = _raw(tmp_path, "bomb.dcm", Rows=("US", 60000), Columns=("US", 60000))
    data = p.read_bytes()
    tracemalloc.start()
    with pytest.raises(DecodeBoundsError, match=r"bomb\.dcm.*60000x60000") as e:
        decode_image(data, name=str(p))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20 and "\n" not in str(e.value)


def test_frames_count_towards_the_pixel_limit(tmp_path, monkeypatch):
    p = tmp_path / "many.dcm"
    dicom.write(p, np.zeros((8, 64, 64), np.uint16))
    monkeypatch.setenv("ALEXNET_MAX_IMAGE_PIXELS", "20000")  # 64 x 64 = 4,096 per frame, 32,768 for the 8
    with pytest.raises(DecodeBoundsError, match=r"8 frame"):
        decode_image(p)


def test_truncated_pixel_data(tmp_path):
    p = _raw(tmp_path, "cut.dcm", Rows=("US", 64), Columns=("US", 64))
    with pytest.raises(DecodeError, match=r"cut\.dcm: truncated DICOM: 128 bytes of pixel data, the header declares "):
        decode_image(p)


def test_wrong_vr(tmp_path):
    p = _raw(tmp_path, "vr.dcm", Rows=("LO", "eight"))
    with pytest.raises(DecodeError, match=r"vr\.dcm: DICOM Rows \(0028,0010\) is not an integer \(value repr"):
        decode_image(p)


def test_dicomdir_and_no_pixels():
    with pytest.raises(DecodeError, match=r"a DICOMDIR"):
        decode_image(sample("DICOMDIR"))
    with pytest.raises(DecodeError, match=r"rtplan\.dcm: a DICOM file without pixel data \(RTPLAN\)"):
        decode_image(sample("rtplan.dcm"))


def test_a_dicom_cut_before_its_image_module_is_said_to_be_cut_short(tmp_path):
    p = tmp_path / "cut.dcm"
    p.write_bytes(Path(sample("CT_small.dcm")).read_bytes()[:300])  # the file meta and little else
    with pytest.raises(DecodeError, match=r"cut\.dcm: a DICOM file without pixel data, modality or image size "
                                          r"\(300 bytes\): cut short"):  # fmt: skip
        decode_image(p)


def test_preamble_only(tmp_path):
    p = tmp_path / "empty.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(DecodeError, match=r"empty\.dcm: (not a readable DICOM file|a DICOM file without pixel)"):
        decode_image(p)


def patched(path: Path, old: bytes, new: bytes, **write) -> Path:
    """A small valid DICOM (``dicom.write(**write)``) at ``path`` with the bytes ``old`` overwritten by ``new`` (same
    length): a header element no writer would produce."""
    dicom.write(path, STORED, **write)
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))
    return path


def bad_syntax(path: Path, uid: bytes = b"1.2.840.10008.5.1.4\0") -> Path:
    """A DICOM whose file meta names a transfer syntax UID that is not one (a SOP class's, or a private one)."""
    return patched(path, b"1.2.840.10008.1.2.1\0", uid)


@pytest.mark.parametrize("uid", [b"1.2.840.10008.5.1.4\0", b"1.2.3.4.5.6.7.8.9.1\0"])
def test_unknown_transfer_syntax_is_one_line(tmp_path, uid):
    p = bad_syntax(tmp_path / "ts.dcm", uid)
    with pytest.raises(
        DecodeError, match=r"ts\.dcm: unknown transfer syntax UID '" + uid[:-1].decode().replace(".", r"\.")
    ):
        decode_image(p)


def test_non_numeric_rescale_is_one_line_naming_the_element(tmp_path):
    p = patched(tmp_path / "icpt.dcm", b"-1024.25", b"PID99887", slope=2, intercept=-1024.25)
    with pytest.raises(DecodeError, match=r"icpt\.dcm: DICOM RescaleIntercept \(0028,1052\) is not a number"):
        decode_image(p)
    p = patched(tmp_path / "slope.dcm", b"2.125", b"2\\125", slope=2.125, intercept=0)  # two values
    with pytest.raises(DecodeError, match=r"slope\.dcm: DICOM RescaleSlope \(0028,1053\) is not a number"):
        decode_image(p)


def test_rescale_slope_0_is_refused_and_an_unusable_window_is_said_and_ignored(tmp_path, capsys, monkeypatch):
    dicom.write(tmp_path / "flat.dcm", STORED, slope=0, intercept=5)
    with pytest.raises(DecodeError, match=r"flat\.dcm: DICOM RescaleSlope \(0028,1053\) is 0"):
        decode_image(tmp_path / "flat.dcm")
    monkeypatch.setattr(dicom, "_said", set())
    dicom.write(tmp_path / "ww0.dcm", STORED, window=(40, 0))
    t = decode_image(tmp_path / "ww0.dcm", channels=1)
    assert t[0, 0, 0] == 0 and t[0, 0, -1] == 255  # min..max, as without a window
    assert (
        "ww0.dcm: its stored window is not used (its WindowWidth (0028,1051) is 0, under 1)" in capsys.readouterr().err
    )


def test_an_unexpected_error_decoding_one_dicom_is_its_one_line(tmp_path, monkeypatch):
    """Whatever pydicom or numpy raises on a hostile file, the caller gets one DecodeError naming the file."""
    p = tmp_path / "odd.dcm"
    dicom.write(p, STORED)

    def boom(*a, **k):
        raise KeyError("(0028,0103)")

    monkeypatch.setattr("pydicom.pixels.apply_modality_lut", boom)
    with pytest.raises(
        DecodeError, match=r"^\S*odd\.dcm: cannot decode this DICOM file \(KeyError: '\(0028,0103\)'\)$"
    ):
        decode_image(p)
    monkeypatch.setattr(dicom, "_header", lambda *a, **k: np.add(1.0, "x"))  # numpy's own error type
    with pytest.raises(DecodeError, match=r"odd\.dcm: cannot decode this DICOM file \(\w*Error: ufunc 'add'"):
        dicom.read_header(p.read_bytes(), str(p), max_pixels=1 << 20, max_aspect=20)
    monkeypatch.setattr(dicom, "_header", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        decode_image(p)


def test_data_check_counts_a_hostile_dicom_as_undecodable_and_an_unusable_window(tmp_path):
    from alexnet.data.check import inspect_file

    assert "unknown transfer syntax UID" in inspect_file(str(bad_syntax(tmp_path / "ts.dcm")))["error"]
    dicom.write(tmp_path / "ww0.dcm", STORED, window=(40, 0))
    assert inspect_file(str(tmp_path / "ww0.dcm"))["dicom"]["window"] == "unusable"


def test_extensionless_dicoms_in_a_folder_are_images(tmp_path):
    """PACS and CD exports name DICOMs IM0001 or by UID; they were silently left out of a folder with .dcm files."""
    import os

    from alexnet.data.listing import list_images

    names = ["1.dcm", "IM3", "1.2.840.5.30000"]
    for n in names:
        dicom.write(tmp_path / n, STORED)
    (tmp_path / "README").write_text("x" * 200)
    (tmp_path / "notes.txt").write_bytes((tmp_path / "IM3").read_bytes())  # a DICOM's bytes, but a named non-image
    os.mkfifo(tmp_path / "IM4")  # opened, it would block the scan
    assert list_images(tmp_path)[0] == sorted(str(tmp_path / n) for n in names)
    from alexnet.cli.predict import list_inputs  # predict FOLDER lists them too

    assert [i.name for i in list_inputs([str(tmp_path)])[0]] == sorted(str(tmp_path / n) for n in names)


def test_empty_files_are_said_to_be_empty(tmp_path):
    for name in ("empty.dcm", "empty.png", "empty.jpg"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DecodeError, match=name.replace(".", r"\.") + r": empty file \(0 bytes\)"):
            decode_image(tmp_path / name)


def test_missing_pydicom_names_the_extra(tmp_path, monkeypatch):
    p = tmp_path / "x.dcm"
    dicom.write(p, STORED)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DecodeError, match=r"alexnet\[medical\]"):
        decode_image(p)


# ---- 16-bit PNG / TIFF: the same windows


def test_16bit_png_windows(tmp_path):
    a = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    assert decode_image(p, channels=1)[0, 0].tolist() == [0, 4, 8, 12, 16]  # auto: the full 16 bits, x 255 / 65535
    assert decode_image(p, window="minmax", channels=1)[0, 0].tolist() == [0, 64, 128, 191, 255]
    # c=2000.5, w=2001 -> ((x - 2000) / 2000 + 0.5) * 255: 0 up to x = 1000, 127.5 -> 128, 255 from x = 3000
    assert decode_image(p, window="2000.5,2001", channels=1)[0, 0].tolist() == [0, 0, 128, 255, 255]
    tif = tmp_path / "deep.tif"
    Image.fromarray(a).save(tif)
    assert decode_image(tif, window="minmax", channels=1)[0, 0].tolist() == [0, 64, 128, 191, 255]


def test_bad_window_names_the_choices():
    from alexnet.data.window import check_window

    for good in ("auto", "lung", "soft-tissue", "40,400", "p1-p99"):
        assert check_window(good) == good
    for bad in ("lungs", "40", "p99-p1", "40,0"):
        with pytest.raises(UserError, match="window"):
            check_window(bad)
    for narrow in ("40,0", "40,-5", "-600,-1500.5"):  # a negative width was told only the list of forms
        with pytest.raises(UserError, match=f"window '{narrow}': the width must be at least 1"):
            check_window(narrow)


# ---- data check


def test_data_check_reports_dicom_headers_and_undecodable_files(tmp_path):
    from alexnet.data.check import check_dataset, format_report

    px = np.zeros((8, 8), np.uint16)
    for i, (cls, spacing) in enumerate([("a", (0.5, 0.5)), ("a", (1.0, 1.0)), ("b", (0.7, 0.7)), ("b", None)]):
        (tmp_path / "train" / cls).mkdir(parents=True, exist_ok=True)
        dicom.write(tmp_path / "train" / cls / f"{i}.dcm", px, modality="CT" if i < 3 else "MR",
                    window=(40, 400) if i < 2 else None, pixel_spacing=spacing,
                    photometric="MONOCHROME1" if i == 3 else "MONOCHROME2")  # fmt: skip
    for cls in ("a", "b"):  # a val split of its own (else one is held out of train)
        (tmp_path / "val" / cls).mkdir(parents=True)
        dicom.write(tmp_path / "val" / cls / "v.dcm", px)
    cut = tmp_path / "train" / "b" / "cut.dcm"
    cut.write_bytes((tmp_path / "train" / "b" / "2.dcm").read_bytes()[:-40])
    report = check_dataset(str(tmp_path), progress=False, workers=1, max_bad_fraction=0.5)
    d = report["splits"]["train"]["dicom"]
    assert d["files"] == 4 and d["modality"] == {"CT": 3, "MR": 1} and d["bits_stored"] == {"16": 4}
    assert d["photometric"] == {"MONOCHROME2": 3, "MONOCHROME1": 1}
    assert d["window"] == {"40/400": 2, "none": 2}
    assert d["pixel_spacing_mm"] == {"min": 0.5, "median": 0.7, "max": 1.0, "missing": 1}
    assert d["transfer_syntax"] == {"Explicit VR Little Endian": 4}
    assert [e.split(":")[0] for e in report["splits"]["train"]["undecodable"]] == [str(cut)]
    assert not report["splits"]["train"]["wrong_extension"]
    text = format_report(report)
    assert "modality: CT (3), MR (1); bits stored: 16 (4)" in text
    assert "window (centre/width): 40/400 (2), none (2); pixel spacing: 0.5 / 0.7 / 1 mm" in text
    assert "truncated DICOM" in text


def test_medical_demo_writes_a_readable_set(tmp_path):
    """benchmarks/medical_demo.py's data: three classes of CT-like DICOMs that decode, with the lung window stored."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "medical_demo.py"
    spec = importlib.util.spec_from_file_location("medical_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.write_set(tmp_path, train=2, val=1, size=64)
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 9 and {f.parent.name for f in files} == set(demo.CLASSES)
    h = dicom.read_header(files[0].read_bytes(), str(files[0]), max_pixels=10**6, max_aspect=20)
    assert (h.modality, h.window, h.pixel_spacing) == ("CT", (-600.0, 1500.0), (0.7, 0.7))
    bone = decode_image(tmp_path / "train" / "bone" / "0.dcm", channels=1)[0]
    clear = decode_image(tmp_path / "train" / "clear" / "0.dcm", channels=1)[0]
    assert bone.shape == (64, 64) and (bone == 255).sum() > (clear == 255).sum()  # 700 HU is over the lung window


def test_the_crop_chosen_from_the_data_reads_dicom_headers(tmp_path):
    """``train`` on DICOMs chose 224 px from "no readable image headers" (Pillow cannot open them) and held the
    images in memory at 256 px; their headers say 96 x 80."""
    from alexnet.auto import typical_shorter_side
    from alexnet.data.sources import open_dataset

    for cls in ("a", "b"):
        for i in range(2):
            path = tmp_path / "train" / cls / f"{i}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            dicom.write(path, np.zeros((80, 96), np.uint16))
    assert typical_shorter_side(open_dataset(str(tmp_path))) == (80.0, "96x80 px images")
