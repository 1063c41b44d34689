"""The built-in data set: ten classes of shapes and textures, learnable by a CNN in minutes, not by mean colour.

Every image draws its own background (a random colour with a faint gradient), foreground colour (random, kept
visibly different from the background), position, size, rotation and pixel noise; only the *shape* tells the class.
Colours are drawn the same way for every class, so the mean colour of an image carries (almost) nothing about its
class (tested: a nearest-centroid classifier on mean RGB is near chance). Shapes are drawn on a 2x grid with numpy
and averaged down (anti-aliasing), then saved as JPEG (quality 90). Image ``i`` of class ``c`` depends only on
``(seed, split, c, i)``, so the data set is the same byte for byte on every machine with the same Pillow.

Each image's object box goes to ``OUT/boxes.json`` (``read_boxes``), for tests of where a network looks (the
pointing game of ``alexnet.explain``). The box is the smallest pixel rectangle holding every pixel the object covers
at all (after anti-aliasing), in the saved image's coordinates. For the three textures (stripes, checkerboard) the
object is the textured square patch, so its box is the patch's extent, background-coloured bands included; for
``dots`` it is the one rectangle around all the dots.
"""

from __future__ import annotations

import io
import json
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
_VERSION = 2  # bump when the drawing or the files change, so cached copies are rebuilt (2: boxes.json)
BOXES = "boxes.json"  # in OUT: {"val/circle/circle_00000.jpg": [x0, y0, x1, y1], ...}


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
    """Write ``out/train/<class>/*.jpg`` (``per_class`` each), ``out/val/<class>/*.jpg`` and every image's object
    box in ``out/boxes.json`` (see ``read_boxes``); return ``out``.

    ``out`` must be new or empty; with ``overwrite`` an existing ``out/train``, ``out/val`` and ``out/boxes.json`` are
    replaced (nothing else in ``out`` is touched). ``show_progress``: a bar on stderr (periodic lines when not a
    terminal).
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
        (out / BOXES).unlink(missing_ok=True)
    from PIL import Image

    from ..progress import progress

    grid = _grid(2 * size)
    total = classes * (per_class + val_per_class)
    boxes: dict[str, list[int]] = {}
    with progress(total, "synth", unit="img", enabled=show_progress) as bar:
        for split_code, (split, n) in enumerate((("train", per_class), ("val", val_per_class))):
            for c in range(classes if n > 0 else 0):  # no val/ at all rather than empty class folders
                folder = out / split / CLASSES[c]
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    rng = np.random.default_rng([seed, split_code, c, i])
                    pixels, box = draw(c, rng, size, grid)
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
                    name = f"{CLASSES[c]}_{i:05d}.jpg"
                    (folder / name).write_bytes(buf.getvalue())
                    boxes[f"{split}/{CLASSES[c]}/{name}"] = box
                    bar.update(1)
    tmp = out / f".{BOXES}.tmp"
    tmp.write_text(json.dumps(boxes, separators=(",", ":")) + "\n")
    os.replace(tmp, out / BOXES)
    return out


def read_boxes(root: str | os.PathLike) -> dict[str, tuple[int, int, int, int]]:
    """``ROOT/boxes.json`` of a synthetic data set: relative image path (``val/ring/ring_00003.jpg``) ->
    ``(x0, y0, x1, y1)`` in px of the saved image, columns ``x0 <= x < x1`` and rows ``y0 <= y < y1``.

    Raises ``UserError`` when the folder has no boxes (not a synthetic set, or one written before boxes existed).
    """
    path = Path(root) / BOXES
    if not path.is_file():
        raise UserError(f"{root}: no {BOXES}; object boxes come with synthetic data sets (alexnet data synth)")
    try:
        raw = json.loads(path.read_text())
        return {str(k): (int(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in raw.items()}
    except (ValueError, TypeError, IndexError, AttributeError):
        raise UserError(f"{path}: not a valid boxes file (expected {{path: [x0, y0, x1, y1]}})") from None


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


def draw(
    c: int, rng: np.random.Generator, size: int, grid: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, list[int]]:
    """One image of class ``c``: ``uint8 (size, size, 3)``, and its object box ``[x0, y0, x1, y1]`` (px, ends
    exclusive): the extent of the pixels the object covers at all (for textures, of the whole patch)."""
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
    mask, extent = _mask(CLASSES[c], rng, yy, xx)  # (2S, 2S) each
    mask = mask.astype(np.float32).reshape(size, n // size, size, n // size).mean(axis=(1, 3))[..., None]  # (S, S, 1)
    img = bg + (fg - bg) * mask  # anti-aliased
    img += rng.normal(0, rng.uniform(2, 6), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), _box(extent, size)


def _box(extent: np.ndarray, size: int) -> list[int]:
    """Bounding box ``[x0, y0, x1, y1]`` (ends exclusive) in px of the ``size``-px image of a 2x-grid mask."""
    covered = extent.reshape(size, extent.shape[0] // size, size, -1).any(axis=(1, 3))  # (S, S): touched at all
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _mask(name: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the shape and of the object's extent (the whole patch for textures), in a frame rotated and
    scaled at random. The random draws are the drawing's, in the same order: the extent costs none."""
    if name == "dots":  # 3 to 6 small discs anywhere
        mask = np.zeros(yy.shape, dtype=bool)
        for _ in range(rng.integers(3, 6)):
            cy, cx = rng.uniform(-0.75, 0.75, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(0.12, 0.17) ** 2
        return mask, mask
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
        m = u**2 + v**2 <= 1
        return m, m
    if name == "ring":
        d = np.sqrt(u**2 + v**2)
        m = (d <= 1) & (d >= rng.uniform(0.5, 0.65))
        return m, m
    if name == "square":
        m = np.maximum(np.abs(u), np.abs(v)) <= 0.8
        return m, m
    if name == "triangle":  # equilateral, inscribed in the unit circle (inradius 0.5)
        m = np.ones(u.shape, dtype=bool)
        for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6):
            m &= u * np.cos(a) + v * np.sin(a) <= 0.5
        return m, m
    if name == "cross":
        w = rng.uniform(0.22, 0.32)
        m = ((np.abs(u) <= w) & (np.abs(v) <= 1)) | ((np.abs(v) <= w) & (np.abs(u) <= 1))
        return m, m
    if name == "bar":
        m = (np.abs(u) <= 1) & (np.abs(v) <= rng.uniform(0.2, 0.3))
        return m, m
    period = rng.uniform(0.6, 0.9)  # in units of r: 2.2 to 3.3 periods across the patch
    patch = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if name == "horizontal-stripes":  # bands stacked along y
        return patch & (np.mod(v / period, 1) < 0.5), patch
    if name == "vertical-stripes":
        return patch & (np.mod(u / period, 1) < 0.5), patch
    if name == "checkerboard":
        return patch & ((np.floor(u / period * 1.5) + np.floor(v / period * 1.5)) % 2 == 0), patch
    raise ValueError(f"unknown synthetic class {name!r}")
