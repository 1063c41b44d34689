"""Decoding: every kind of file a user's folder may hold becomes correct RGB, or a DecodeError naming the file."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.data.decode import DecodeBoundsError, DecodeError, decode_image
from alexnet.errors import UserError


def save(img: Image.Image, path, fmt: str, **kw) -> str:
    img.save(path, format=fmt, **kw)
    return str(path)


def rgb(t):
    """(3, H, W) tensor -> (H, W, 3) int array."""
    assert t.dtype.is_floating_point is False and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy().astype(int)


def noise(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_exact_and_bytes_input(tmp_path):
    a = noise()
    p = save(Image.fromarray(a), tmp_path / "x.png", "PNG")
    t = decode_image(p)
    assert t.shape == (3, 16, 24)
    np.testing.assert_array_equal(rgb(t), a)
    np.testing.assert_array_equal(rgb(decode_image(Path(p).read_bytes())), a)


def test_jpeg_constant_colour(tmp_path):
    p = save(Image.new("RGB", (32, 16), (200, 40, 90)), tmp_path / "c.jpg", "JPEG", quality=95)
    t = rgb(decode_image(p))
    assert t.shape == (16, 32, 3)
    assert np.abs(t - [200, 40, 90]).max() <= 3


def test_png_named_jpg_decodes(tmp_path):
    a = noise()
    p = save(Image.fromarray(a), tmp_path / "really_a_png.jpg", "PNG")
    np.testing.assert_array_equal(rgb(decode_image(p)), a)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buf, format="JPEG", quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DecodeError, match=r"cut\.jpg"):
        decode_image(p)


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(DecodeError, match=r"empty.jpg.*0 bytes"):
        decode_image(p)


def test_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(UserError, match=r"notes\.jpg"):
        decode_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(DecodeError, match=r"nope\.png"):
        decode_image(tmp_path / "nope.png")


def test_cmyk_jpeg_is_rgb(tmp_path):
    p = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert Image.open(p).mode == "CMYK"
    t = rgb(decode_image(p))
    assert np.abs(t - [255, 0, 0]).max() <= 6  # pure red


def test_grayscale(tmp_path):
    a = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    t = rgb(decode_image(save(Image.fromarray(a, "L"), tmp_path / "g.png", "PNG")))
    for c in range(3):
        np.testing.assert_array_equal(t[:, :, c], a)
    tj = rgb(decode_image(save(Image.new("L", (8, 8), 77), tmp_path / "g.jpg", "JPEG", quality=95)))
    assert tj.shape == (8, 8, 3) and np.abs(tj - 77).max() <= 2


def test_palette(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([10, 20, 30, 250, 100, 0] + [0] * 762)
    img.putdata([0, 1, 1, 0, 1, 1, 1, 0])
    t = rgb(decode_image(save(img, tmp_path / "p.png", "PNG")))
    assert t[0, 0].tolist() == [10, 20, 30] and t[0, 1].tolist() == [250, 100, 0] and t[1, 3].tolist() == [10, 20, 30]


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (0, 0, 255, 0)  # fully transparent
    a[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    t = rgb(decode_image(save(Image.fromarray(a, "RGBA"), tmp_path / "a.png", "PNG")))
    assert t[0, 0].tolist() == [255, 0, 0]
    assert t[0, 1].tolist() == [255, 255, 255]
    assert np.abs(t[1, 0] - 127).max() <= 1


def test_16bit_png_scaled_not_clipped(tmp_path):
    a = np.array([[0, 65535, 128 * 257, 1000]], dtype=np.uint16)
    p = save(Image.fromarray(a), tmp_path / "deep.png", "PNG")
    assert Image.open(p).mode.startswith("I")
    t = rgb(decode_image(p))
    assert t[0, :, 0].tolist() == [0, 255, 128, 4]  # 1000 x 255 / 65535 = 3.89, rounded as every window rounds
    assert (t[..., 0] == t[..., 2]).all()


@pytest.mark.parametrize(
    "values, mode, expected",
    [
        ([0, 2**30, 2**31 - 1], "I", [0, 128, 255]),  # int32: its own range (0..65535 made every pixel 255)
        ([-100.0, 1150.0, 4900.0], "F", [0, 64, 255]),  # float outside 0..1 and 0..255 (was 0, 255, 255)
        ([0.0, 63.75, 255.0], "F", [0, 64, 255]),  # a float 0..255 image keeps that scale
        ([np.nan, -10.0, np.inf, -np.inf, 300.0], "F", [0, 0, 255, 0, 255]),  # NaN and -inf: its low, inf: its high
        ([np.nan, np.inf], "F", [0, 0]),  # nothing finite: black, not a crash
    ],
)
def test_wide_gray_auto_spreads_values_that_fit_no_fixed_range(tmp_path, values, mode, expected):
    a = np.array([values], np.int32 if mode == "I" else np.float32)
    p = save(Image.fromarray(a, mode), tmp_path / "wide.tif", "TIFF")
    assert decode_image(p, channels=1)[0, 0].tolist() == expected


def test_exif_rotated_jpeg_is_upright(tmp_path):
    a = np.zeros((16, 32, 3), dtype=np.uint8)
    a[:, :16] = (255, 0, 0)  # left half red
    a[:, 16:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left edge goes to the top
    p = save(Image.fromarray(a), tmp_path / "rot.jpg", "JPEG", quality=95, exif=exif.tobytes())
    t = rgb(decode_image(p))
    assert t.shape == (32, 16, 3)
    assert np.abs(t[4, 8] - [255, 0, 0]).max() < 30  # top: red
    assert np.abs(t[27, 8] - [0, 0, 255]).max() < 30  # bottom: blue


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels announced, no pixel data at all
    with pytest.raises(DecodeError, match=r"bomb.png.*refused"):
        decode_image(p)


def test_max_pixels_limit(tmp_path):
    p = save(Image.fromarray(noise(20, 20)), tmp_path / "big.png", "PNG")
    with pytest.raises(DecodeError, match=r"big.png.*20x20.*400 pixels"):
        decode_image(p, max_pixels=399)
    assert decode_image(p, max_pixels=400).shape == (3, 20, 20)


def test_bounds_refusals_are_their_own_error_type(tmp_path):
    """Bombs, pixel limits and aspect ratios raise DecodeBoundsError (serve answers 422 by this type); files that are
    not images raise a plain DecodeError (415)."""
    strip = io.BytesIO()
    Image.new("RGB", (200, 5)).save(strip, format="PNG")  # 40:1 > the 20:1 limit
    refused = {
        "Pillow's own bomb check": _png_header_only(100_000, 100_000),  # 10 GP: Pillow refuses it in open()
        "our pixel limit": _png_header_only(10_000, 10_000),  # 100 MP > 64 MP
        "the aspect ratio": strip.getvalue(),
    }
    for data in refused.values():
        with pytest.raises(DecodeBoundsError, match=r"^upload 1: refused"):
            decode_image(data, name="upload 1")
    half = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(half, format="PNG")
    unreadable = {"text": b"hello", "empty": b"", "truncated": half.getvalue()[:200]}
    for why, data in unreadable.items():
        with pytest.raises(DecodeError) as e:
            decode_image(data, name="upload 2")
        assert not isinstance(e.value, DecodeBoundsError), why


def test_messages_name_the_file_and_the_reason_without_object_reprs(tmp_path):
    """Pillow says ``cannot identify image file <_io.BytesIO object at 0x7f...>``: the heap address must not reach
    the user; the name given (a path, or e.g. the multipart filename when serving) and the reason must."""
    half = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(half, format="JPEG")
    cases = [b"not an image at all", b"GIF89a", half.getvalue()[:300], _png_header_only(100_000, 100_000)]
    for data in cases:
        with pytest.raises(DecodeError) as e:
            decode_image(data, name="cat.jpg")
        message = str(e.value)
        assert message.startswith("cat.jpg: ") and " at 0x" not in message and "<" not in message, message
    with pytest.raises(DecodeError) as e:
        decode_image(b"not an image at all", name="cat.jpg")
    assert str(e.value) == "cat.jpg: not an image Pillow can read (UnidentifiedImageError: cannot identify image file)"
    p = tmp_path / "notes.jpg"
    p.write_text("not an image")
    with pytest.raises(DecodeError) as e:
        decode_image(p)
    assert str(e.value).startswith(f"{p}: not an image") and " at 0x" not in str(e.value)
