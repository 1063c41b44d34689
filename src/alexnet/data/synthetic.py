"""The built-in data set: ten classes of shapes and textures, learnable by a CNN in minutes, not by mean colour.

Every image draws its own background (a random colour with a faint gradient), foreground colour (random, kept
visibly different from the background), position, size, rotation and pixel noise; only the *shape* tells the class.
Colours are drawn the same way for every class, so the mean colour of an image carries (almost) nothing about its
class (tested: a nearest-centroid classifier on mean RGB is near chance). Shapes are drawn on a 2x grid with numpy
and averaged down (anti-aliasing), then saved as JPEG (quality 90). Image ``i`` of class ``c`` depends only on
``(seed, split, c, i)``, so the data set is the same byte for byte on every machine with the same Pillow.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError

CLASSES = [
    "circle",
    "ring",
    "square",
    "triangle",
    "cross",
    "bar",
    "dots",
    "horizontal-stripes",
    "vertical-stripes",
    "checkerboard",
]
JPEG_QUALITY = 90
DEFAULT = {"classes": 10, "per_class": 300, "val_per_class": 50, "size": 64, "seed": 0}
_VERSION = 1  # bump when the drawing changes, so cached copies are rebuilt


def make_synthetic(
    out: str | os.PathLike,
    *,
    classes: int = 10,
    per_class: int = 300,
    val_per_class: int = 50,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write ``out/train/<class>/*.jpg`` (``per_class`` each) and ``out/val/<class>/*.jpg``; return ``out``.

    ``out`` must be new or empty; with ``overwrite`` an existing ``out/train`` and ``out/val`` are deleted first
    (nothing else in ``out`` is touched). ``show_progress``: a bar on stderr (periodic lines when not a terminal).
    """
    if not 2 <= classes <= len(CLASSES):
        raise UserError(f"--classes {classes}: the synthetic data set has 2 to {len(CLASSES)} classes")
    if size < 16:
        raise UserError(f"--size {size}: synthetic images must be at least 16 px")
    if per_class < 1 or val_per_class < 0:
        raise UserError(f"--per-class {per_class} / --val-per-class {val_per_class}: need >= 1 and >= 0 images")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose a new folder for the data set")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"{out}: folder is not empty (new files would mix with the old ones); "
                "choose a new folder, or pass --overwrite to replace its train/ and val/"
            )
        for split in ("train", "val"):
            if (out / split).is_dir():
                shutil.rmtree(out / split)
    from PIL import Image

    from ..progress import progress

    grid = _grid(2 * size)
    total = classes * (per_class + val_per_class)
    with progress(total, "synth", unit="img", enabled=show_progress) as bar:
        for split_code, (split, n) in enumerate((("train", per_class), ("val", val_per_class))):
            for c in range(classes if n > 0 else 0):  # no val/ at all rather than empty class folders
                folder = out / split / CLASSES[c]
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    rng = np.random.default_rng([seed, split_code, c, i])
                    pixels = draw(c, rng, size, grid)
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
                    (folder / f"{CLASSES[c]}_{i:05d}.jpg").write_bytes(buf.getvalue())
                    bar.update(1)
    return out


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$ALEXNET_CACHE``, else ``~/.cache/alexnet``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("ALEXNET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "alexnet"


def default_synthetic(cache_dir: str | os.PathLike | None = None) -> Path:
    """The built-in data set under the cache directory, created on first use (built aside, then renamed)."""
    root = cache_root(cache_dir)
    final = root / f"synthetic-v{_VERSION}"
    if (final / "train").is_dir():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    except OSError as e:
        raise UserError(f"cannot create the built-in data set under {root} ({e}); set ALEXNET_CACHE") from None
    try:
        make_synthetic(tmp, **DEFAULT)
        os.rename(tmp, final)  # atomic; loses the race cleanly if another process finished first
    except OSError:
        if not (final / "train").is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------------------------
# drawing


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], shape (n, n) each: (y, x)."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    return np.meshgrid(t, t, indexing="ij")


def draw(c: int, rng: np.random.Generator, size: int, grid: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One image of class ``c``: ``uint8 (size, size, 3)``."""
    yy, xx = grid if grid is not None else _grid(2 * size)
    n = yy.shape[0]
    # background: a random colour, fading towards a nearby one along a random direction
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-40, 40, 3), 0, 255).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = yy[:: n // size, :: n // size], xx[:: n // size, :: n // size]  # (S, S): the gradient needs no 2x
    t = ((np.cos(theta) * xs + np.sin(theta) * ys + 1) / 2)[..., None]
    bg = c0 * (1 - t) + c1 * t  # (S, S, 3)
    # foreground: any colour far enough from the background to be seen
    for _ in range(50):
        fg = rng.uniform(0, 255, 3).astype(np.float32)
        if np.linalg.norm(fg - c0) > 150:
            break
    mask = _mask(CLASSES[c], rng, yy, xx).astype(np.float32)  # (2S, 2S)
    mask = mask.reshape(size, n // size, size, n // size).mean(axis=(1, 3))[..., None]  # anti-aliased (S, S, 1)
    img = bg + (fg - bg) * mask
    img += rng.normal(0, rng.uniform(2, 6), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _mask(name: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean mask of the shape, in a frame rotated and scaled at random."""
    if name == "dots":  # 3 to 6 small discs anywhere
        mask = np.zeros(yy.shape, dtype=bool)
        for _ in range(rng.integers(3, 6)):
            cy, cx = rng.uniform(-0.75, 0.75, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(0.12, 0.17) ** 2
        return mask
    texture = name in ("horizontal-stripes", "vertical-stripes", "checkerboard")
    r = rng.uniform(0.55, 0.85) if texture else rng.uniform(0.45, 0.75)  # half-size, in half-image units
    cy, cx = rng.uniform(-(0.95 - r), 0.95 - r, 2) if r < 0.95 else (0.0, 0.0)
    if name in ("horizontal-stripes", "vertical-stripes", "checkerboard", "square", "cross"):
        phi = rng.uniform(-np.pi / 12, np.pi / 12)  # nearly upright: tells them from stripes, diamonds, an X
    else:
        phi = rng.uniform(0, 2 * np.pi)
    u = ((xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)) / r
    v = (-(xx - cx) * np.sin(phi) + (yy - cy) * np.cos(phi)) / r
    if name == "circle":
        return u**2 + v**2 <= 1
    if name == "ring":
        d = np.sqrt(u**2 + v**2)
        return (d <= 1) & (d >= rng.uniform(0.5, 0.65))
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # equilateral, inscribed in the unit circle (inradius 0.5)
        m = np.ones(u.shape, dtype=bool)
        for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6):
            m &= u * np.cos(a) + v * np.sin(a) <= 0.5
        return m
    if name == "cross":
        w = rng.uniform(0.22, 0.32)
        return ((np.abs(u) <= w) & (np.abs(v) <= 1)) | ((np.abs(v) <= w) & (np.abs(u) <= 1))
    if name == "bar":
        return (np.abs(u) <= 1) & (np.abs(v) <= rng.uniform(0.2, 0.3))
    period = rng.uniform(0.6, 0.9)  # in units of r: 2.2 to 3.3 periods across the patch
    patch = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if name == "horizontal-stripes":  # bands stacked along y
        return patch & (np.mod(v / period, 1) < 0.5)
    if name == "vertical-stripes":
        return patch & (np.mod(u / period, 1) < 0.5)
    if name == "checkerboard":
        return patch & ((np.floor(u / period * 1.5) + np.floor(v / period * 1.5)) % 2 == 0)
    raise ValueError(f"unknown synthetic class {name!r}")
