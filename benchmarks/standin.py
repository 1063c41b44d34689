"""A visible stand-in for small real photos: ten object classes at 32 px, hard enough to tell training recipes apart.

    python benchmarks/standin.py OUT [--per-class 2000] [--test-per-class 200] [--size 32] [--seed 0] [--workers N]

Writes ``OUT/train/<class>/*.jpg`` and ``OUT/test/<class>/*.jpg`` (CIFAR-like: 10 classes, 32 px, 2,000 + 200 per
class by default). The class is the object's shape and structure (a disc, a box, a star, a house...), never its mean
colour (a nearest-centroid classifier on mean RGB is at chance). Every image draws

- a difficulty ``d ~ U(0, HARDNESS)`` that sets how busy the background is, how many distractors it holds, the
  object's contrast with it, how often the object is photo-textured or partly hidden, and how much blur and noise;
- its background from a crop of a real photograph (scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's
  ``grace_hopper.jpg``) at a random scale, flip, transpose, channel order and colour cast, with distractors (blobs,
  strokes, ellipses of other photo crops) on it;
- its object at 35-100% of the image side, anywhere, rotated (upright classes: within +-25 degrees), stretched
  (aspect 0.75-1.33), in one of several sub-styles per class (5-, 6- or 4-pointed stars; a house with or without
  chimney and door...), filled with a surface (flat and shaded, stripes, spots, checks, fur, a photo crop) or drawn
  as an outline, sometimes with a detail or border in a second colour;
- as in real photographs, weak cues besides the shape: with probability ``CUE_P`` the object wears its class's usual
  surface and stands in its class's usual setting (which photograph, near or far), else any;
- an occluder in front of part of the object, then brightness, contrast, gamma, colour cast, blur, pixel noise and
  JPEG compression (quality 50-95).

Drawn at 2x and averaged down to ``size``. Image ``i`` of class ``c`` in split ``s`` depends only on
``(seed, s, c, i)``; the set is written aside and renamed at the end, so an interrupted write never passes for a
complete one, and a complete ``OUT`` is returned at once.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np

CLASSES = ["disc", "box", "triangle", "plus", "star", "crescent", "arrow", "house", "heart", "mushroom"]
UPRIGHT = {"house", "heart", "mushroom"}  # objects with a top: rotated within +-25 degrees only
SPLITS = (("train", 0), ("test", 1))  # split code in the seed
VERSION = 2  # bump when the drawing changes (time_to_accuracy.py caches the set under this version)

# Difficulty: each image draws its own d ~ U(0, HARDNESS); at d = 0 a flat object in strong contrast on a calm photo,
# at d = 1 a low-contrast, often photo-textured object among up to CLUTTER_MAX distractors on a busy photo, occluded
# with probability OCCLUDE_P, blurred and noisy. Calibrated on the 2-core CPU with the defaults a 20,000-image set gets
# (batch 128, lr 0.01, 0.5-epoch warm-up, linear decay, no dropout) over 4 epochs (624 steps, about what a quiet
# `--time-budget 5m` plans): test top-1 18.9, 36.4, 48.1, 56.9% after epochs 1-4 at HARDNESS 0.3; 19.8 and 31.8%
# after epochs 1-2 at 0.5; 13.3 and 20.5% at 1.0. Well below 95%, and still rising.
HARDNESS = 0.3
# Cues besides the shape, as in real photographs (fur, feathers and brick; sky, water and grass), never the mean
# colour: with probability CUE_P an object wears its class's usual surface and stands in its class's usual setting
# (which photograph, near or far), else any. On shapes alone (no cues) one epoch of those defaults ended at 13-14%.
CUE_P = 0.6
SURFACES = ("flat", "stripes", "spots", "checks", "fur", "photo")
USUAL_SURFACE = {"disc": "spots", "box": "checks", "triangle": "stripes", "plus": "flat", "star": "fur"}
USUAL_SURFACE |= {"crescent": "photo", "arrow": "flat", "house": "checks", "heart": "spots", "mushroom": "stripes"}
OCCLUDE_P = 0.5  # at d = 1 (scales with d)
CLUTTER_MAX = 2  # distractors on the background at d = 1: 0..round(CLUTTER_MAX * d)
CONTRAST = (170.0, 50.0)  # distance (RGB, 0-255) between object and background mean colours at d = 0 and d = 1
PHOTO_FILL = (0.1, 0.45)  # probability of a photo-textured (not flat) object at d = 0 and d = 1
BG_TEXTURE = (0.2, 1.1)  # contrast of the background photo at d = 0 and d = 1
NOISE_SIGMA = (2.0, 9.0)  # most pixel noise std at the saved size at d = 0 and d = 1
BLUR_RADIUS = (0.4, 1.8)  # most Gaussian blur radius at 2x at d = 0 and d = 1
JPEG_QUALITY = (50, 95)


# ---------------------------------------------------------------------------------------------------------------
# photographs


@cache
def _photos() -> tuple[np.ndarray, ...]:
    """The real photographs shipped with scikit-learn and matplotlib, each at several scales (float32, HxWx3)."""
    import matplotlib.cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        images.append(im.convert("RGB"))
    out = []
    for im in images:
        for f in (1.0, 1.5, 2.0, 3.0, 4.0):  # a 64-px crop spans 64 to 256 px of the photograph
            w, h = round(im.width / f), round(im.height / f)
            out.append(np.asarray(im.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32))
    return tuple(out)


def _lerp(pair: tuple[float, float], d: float) -> float:
    return pair[0] + (pair[1] - pair[0]) * d


def _crop(rng: np.random.Generator, n: int, texture: float = 1.0, photo: int | None = None) -> np.ndarray:
    """A random ``n x n`` crop of a photograph (``photo``: an index into ``_photos()``, else any): random scale, flip,
    transpose, channel order and colour cast."""
    bank = _photos()
    p = bank[rng.integers(len(bank)) if photo is None else photo]
    y, x = rng.integers(p.shape[0] - n + 1), rng.integers(p.shape[1] - n + 1)
    a = p[y : y + n, x : x + n]
    if rng.random() < 0.5:
        a = a[:, ::-1]
    if rng.random() < 0.5:
        a = a.transpose(1, 0, 2)
    a = a[..., rng.permutation(3)]
    mean = a.mean(axis=(0, 1))
    # a mean colour of any brightness and a moderate cast: the photographs' own colours do not give away the class
    target = np.float32(rng.uniform(40, 215)) + rng.normal(0, 25, 3).astype(np.float32)
    return (a - mean) * np.float32(texture * rng.uniform(0.6, 1.4)) + target


def _flat(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A flat colour with a shading ramp along a random direction (a lit, matte surface)."""
    colour = rng.uniform(20, 235, 3).astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(a) * xx + np.sin(a) * yy) * np.float32(rng.uniform(0, 35))
    return colour + ramp[..., None]


def _fill(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, photo: float = 0.5) -> np.ndarray:
    return _crop(rng, yy.shape[0]) if rng.random() < photo else _flat(rng, yy, xx)


def _surface(kind: str, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, yy: np.ndarray, xx: np.ndarray):
    """An object's surface in its own frame (patterns turn with the object; ``u``, ``v`` in image units, [-1, 1]
    across the image): ``(n, n, 3)`` float. Patterns have periods of 4-9 px at the saved size, so they survive it."""
    if kind == "flat":
        return _flat(rng, yy, xx)
    if kind == "photo":
        return _crop(rng, yy.shape[0])
    if kind == "fur":  # grain: noise at half resolution, doubled
        h = yy.shape[0] // 2
        grain = rng.normal(0, rng.uniform(25, 50), (h, h, 1)).astype(np.float32).repeat(2, 0).repeat(2, 1)
        return _flat(rng, yy, xx) + grain
    a = _flat(rng, yy, xx)
    b = np.clip(255 - a.mean(axis=(0, 1)) + rng.normal(0, 40, 3), 0, 255).astype(np.float32)  # in contrast with a
    if kind == "stripes":
        t, p = rng.uniform(0, np.pi), rng.uniform(0.25, 0.5)
        m = np.sin((u * np.cos(t) + v * np.sin(t)) * (2 * np.pi / p)) > 0
    elif kind == "spots":
        p = rng.uniform(0.25, 0.5)
        m = np.sin(u * (np.pi / p)) * np.sin(v * (np.pi / p)) > 0.45
    else:  # checks
        p = rng.uniform(0.25, 0.5)
        m = (np.floor(u / p) + np.floor(v / p)) % 2 == 0
    return np.where(m[..., None], b, a)


# ---------------------------------------------------------------------------------------------------------------
# shapes: boolean masks in the object's frame (u right, v up, the object within [-1, 1]^2), plus an optional detail


def _convex(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """Inside the convex polygon with counter-clockwise vertices ``pts``."""
    m = np.ones(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        m &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return m


def _shape(name: str, rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    r2 = u**2 + v**2
    if name == "disc":
        m = r2 <= 1
        return m, (r2 <= rng.uniform(0.3, 0.6) ** 2) if rng.random() < 0.4 else None  # plain, or a bullseye
    if name == "box":
        if rng.random() < 0.5:
            m = np.maximum(np.abs(u), np.abs(v)) <= 0.85
        else:  # rounded corners
            m = u**4 + v**4 <= 0.85**4
        k = rng.uniform(0.4, 0.65)
        return m, (np.maximum(np.abs(u), np.abs(v)) <= k) if rng.random() < 0.4 else None  # a framed panel
    if name == "triangle":
        style = rng.integers(3)
        if style == 0:  # equilateral
            pts = [(np.cos(a), np.sin(a)) for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
        elif style == 1:  # tall isosceles
            b = rng.uniform(0.5, 0.9)
            pts = [(0.0, 1.0), (-b, -0.9), (b, -0.9)]
        else:  # right-angled
            pts = [(-0.85, -0.85), (0.85, -0.85), (-0.85, 0.85)]
        return _convex(u, v, pts), None
    if name == "plus":
        w = rng.uniform(0.18, 0.34)
        c = 0.0 if rng.random() < 0.6 else rng.uniform(0.25, 0.45)  # a plus, or a Latin cross (longer foot)
        m = ((np.abs(u) <= w) & (np.abs(v) <= 1)) | ((np.abs(v - c) <= w) & (np.abs(u) <= 1 - c))
        return m, None
    if name == "star":
        k = int(rng.choice([5, 5, 6, 4]))
        rho = rng.uniform(0.38, 0.55)
        t = np.mod(np.arctan2(u, v), 2 * np.pi / k)
        t = np.minimum(t, 2 * np.pi / k - t)  # fold onto [0, pi/k]: from an outer to an inner vertex
        edge = rho * np.sin(np.pi / k) / (np.sin(t) + rho * np.sin(np.pi / k - t))
        return r2 <= edge**2, None
    if name == "crescent":
        d, q = rng.uniform(0.35, 0.6), rng.uniform(0.8, 0.95)
        return (r2 <= 1) & ((u - d) ** 2 + v**2 > q**2), None
    if name == "arrow":
        h, hw, sw = rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.22)
        double = rng.random() < 0.25
        head = lambda s: (s >= 1 - h) & (np.abs(v) <= hw * (1 - s) / h)  # noqa: E731
        m = ((u >= -1) & (u <= 1 - h) & (np.abs(v) <= sw)) | head(u)
        if double:
            m = (m & (u >= -1 + h)) | head(-u)
        return m, None
    if name == "house":
        base, eave = rng.uniform(-0.1, 0.2), rng.uniform(0.85, 1.0)
        wall = rng.uniform(0.55, 0.75)
        m = ((np.abs(u) <= wall) & (v >= -1) & (v <= base)) | _convex(u, v, [(-eave, base), (eave, base), (0, 1)])
        if rng.random() < 0.5:  # chimney
            cx = rng.uniform(0.3, 0.5)
            m |= (np.abs(u - cx) <= 0.1) & (v >= base) & (v <= 0.85)
        door = None
        if rng.random() < 0.6:
            dx = rng.uniform(-wall + 0.2, wall - 0.2)
            door = (np.abs(u - dx) <= 0.15) & (v >= -1) & (v <= -0.4)
        return m, door
    if name == "heart":
        s = rng.uniform(1.05, 1.25)
        x, y = u * s, v * s + 0.12
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0, None
    if name == "mushroom":
        c0, hc, sw = rng.uniform(-0.2, 0.1), rng.uniform(0.7, 1.0), rng.uniform(0.18, 0.32)
        cap = (v >= c0) & (u**2 + ((v - c0) / min(hc, 1 - c0)) ** 2 <= 1)
        m = cap | ((np.abs(u) <= sw) & (v >= -1) & (v <= c0))
        spots = None
        if rng.random() < 0.4:
            spots = np.zeros(u.shape, dtype=bool)
            for _ in range(rng.integers(2, 5)):
                sx, sy = rng.uniform(-0.6, 0.6), c0 + rng.uniform(0.15, 0.6)
                spots |= (u - sx) ** 2 + (v - sy) ** 2 <= rng.uniform(0.1, 0.18) ** 2
            spots &= cap
        return m, spots
    raise ValueError(f"unknown stand-in class {name!r}")


def _erode(m: np.ndarray, k: int) -> np.ndarray:
    """``m`` eroded by ``k`` px (4-neighbourhood); outside the image counts as outside the shape."""
    e = m.copy()
    for _ in range(k):
        s = e.copy()
        s[1:] &= e[:-1]
        s[:-1] &= e[1:]
        s[:, 1:] &= e[:, :-1]
        s[:, :-1] &= e[:, 1:]
        s[0] = s[-1] = s[:, 0] = s[:, -1] = False
        e = s
    return e


def _blob(rng: np.random.Generator, n: int) -> np.ndarray:
    """An organic blob, a stroke or an ellipse somewhere in the image: a distractor or an occluder's shape."""
    yy, xx = _grid(n)
    cy, cx = rng.uniform(-0.9, 0.9, 2)
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        a, b, t = rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.3), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        w = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        return (u / a) ** 2 + (w / b) ** 2 <= 1
    if kind == 1:  # a stroke (a branch, a cable, an edge)
        t, half, w = rng.uniform(0, np.pi), rng.uniform(0.3, 1.2), rng.uniform(0.02, 0.08)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        w_ = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        return (np.abs(u) <= half) & (np.abs(w_) <= w)
    g = rng.normal(0, 1, (5, 5)).astype(np.float32)  # thresholded smooth noise, kept near (cy, cx)
    from PIL import Image

    f = np.asarray(Image.fromarray(g, mode="F").resize((n, n), Image.Resampling.BICUBIC))
    return (f > 0.6) & ((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(0.15, 0.4) ** 2)


@cache
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], shape (n, n) each: (y down, x right)."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    yy, xx = np.meshgrid(t, t, indexing="ij")
    return yy, xx


# ---------------------------------------------------------------------------------------------------------------
# one image


def draw(c: int, rng: np.random.Generator, size: int = 32, hardness: float = HARDNESS) -> np.ndarray:
    """One image of class ``c``: ``uint8 (size, size, 3)``; its difficulty is drawn from ``U(0, hardness)``."""
    n = 2 * size
    yy, xx = _grid(n)
    d = rng.uniform(0, hardness)
    name = CLASSES[c]
    usual = rng.random() < CUE_P
    # the setting: the class's usual photograph, near (calm) for the first five classes, far (busy) for the others
    photo = (c % 3) * 5 + (int(rng.integers(0, 2)) if c < 5 else int(rng.integers(3, 5))) if usual else None
    img = _crop(rng, n, _lerp(BG_TEXTURE, d), photo)
    for _ in range(rng.integers(round(CLUTTER_MAX * d) + 1)):
        m = _blob(rng, n)
        img = np.where(m[..., None], _fill(rng, yy, xx), img)
    # the object: extent 35-100% of the image side, anywhere (slightly cut off at most), rotated, stretched
    r = rng.uniform(0.35, 1.0)
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    rx, ry = r * np.sqrt(aspect), r / np.sqrt(aspect)
    reach = max(0.0, 1.05 - r)
    cy, cx = rng.uniform(-reach, reach, 2)
    phi = rng.uniform(-np.pi * 25 / 180, np.pi * 25 / 180) if name in UPRIGHT else rng.uniform(0, 2 * np.pi)
    u = ((xx - cx) * np.cos(phi) - (yy - cy) * np.sin(phi)) / rx
    v = (-(xx - cx) * np.sin(phi) - (yy - cy) * np.cos(phi)) / ry  # v up
    mask, detail = _shape(name, rng, u, v)
    style = rng.random()
    if style < 0.2:  # an outline, 2-5 px wide at 2x
        mask, detail = mask & ~_erode(mask, int(rng.integers(2, 6))), None
    # the object's fill, far enough from the background (by a random amount) to be seen
    bg_mean = (img * ~mask[..., None]).sum(axis=(0, 1)) / max(1, int((~mask).sum()))
    want = _lerp(CONTRAST, d) * rng.uniform(0.8, 1.2)
    if rng.random() < CUE_P:
        kind = USUAL_SURFACE[name]
    else:
        kind = "photo" if rng.random() < _lerp(PHOTO_FILL, d) else SURFACES[rng.integers(len(SURFACES) - 1)]
    best, best_d = None, -1.0
    for _ in range(8):
        fg = _surface(kind, rng, u * rx, v * ry, yy, xx)
        dist = float(np.linalg.norm(fg[mask].mean(axis=0) - bg_mean)) if mask.any() else 0.0
        if dist >= want:
            best = fg
            break
        if dist > best_d:
            best, best_d = fg, dist
    img = np.where(mask[..., None], best, img)
    if detail is not None and detail.any():
        img = np.where(detail[..., None], _fill(rng, yy, xx), img)
    elif style >= 0.2 and rng.random() < 0.3:  # a border in a second colour
        edge = mask & ~_erode(mask, int(rng.integers(2, 4)))
        img = np.where(edge[..., None], _flat(rng, yy, xx), img)
    if rng.random() < OCCLUDE_P * d:  # something in front of part of the object
        ys, xs = np.nonzero(mask)
        if len(ys):
            j = rng.integers(len(ys))
            oy, ox = yy[ys[j], xs[j]], xx[ys[j], xs[j]]
            s = r * rng.uniform(0.25, 0.5)
            if rng.random() < 0.5:
                occ = (np.abs(yy - oy) <= s * rng.uniform(0.6, 1.4)) & (np.abs(xx - ox) <= s * rng.uniform(0.6, 1.4))
            else:
                occ = (yy - oy) ** 2 + (xx - ox) ** 2 <= s**2
            img = np.where(occ[..., None], _fill(rng, yy, xx), img)
    # the camera: brightness, contrast, gamma, colour cast, blur, 2x2 average, noise, JPEG
    img = (img - 128) * np.float32(rng.uniform(0.6, 1.25)) + 128 + np.float32(rng.normal(0, 18))
    img *= rng.uniform(0.85, 1.15, 3).astype(np.float32)
    img = 255 * (np.clip(img, 0, 255) / 255) ** np.float32(rng.uniform(0.75, 1.35))
    from PIL import Image, ImageFilter

    radius = rng.uniform(0, _lerp(BLUR_RADIUS, d))
    big = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    if radius > 0.2:
        big = big.filter(ImageFilter.GaussianBlur(radius))
    small = np.asarray(big, dtype=np.float32).reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    small += rng.normal(0, rng.uniform(0, _lerp(NOISE_SIGMA, d)), small.shape).astype(np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    return buf.getvalue()


def _write_folder(job: tuple[Path, int, int, int, int, int, float]) -> None:
    """One class folder of one split: images ``0..n-1``, each from its own ``(seed, split, class, index)``."""
    folder, seed, code, c, n, size, hardness = job
    folder.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng([seed, code, c, i])
        (folder / f"{CLASSES[c]}_{i:05d}.jpg").write_bytes(encode(draw(c, rng, size, hardness), rng))


def write_standin(
    out: Path, *, per_class: int = 2000, test_per_class: int = 200, size: int = 32, seed: int = 0,
    hardness: float = HARDNESS, workers: int | None = None,
) -> Path:  # fmt: skip
    """Write ``out/train/<class>/*.jpg`` (``per_class`` each) and ``out/test/<class>/*.jpg`` (``test_per_class``);
    return ``out``. A complete ``out`` (both splits present) is returned as it is. ``workers`` processes write the
    class folders (default: one per core; the images are the same whatever their number)."""
    out = Path(out)
    if (out / "train").is_dir() and (out / "test").is_dir():
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"{out}: exists and is not an empty folder nor a complete stand-in; choose a new folder")
    if size < 8:
        raise SystemExit(f"--size {size}: the stand-in's images must be at least 8 px")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [(tmp / split / name, seed, code, c, per_class if split == "train" else test_per_class, size,
             hardness)
            for split, code in SPLITS for c, name in enumerate(CLASSES)]  # fmt: skip
    workers = min(workers if workers is not None else os.cpu_count() or 1, len(jobs))
    try:
        if workers > 1 and per_class * len(CLASSES) >= 1000:  # worth the processes' start-up
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                list(pool.map(_write_folder, jobs))
        else:
            for job in jobs:
                _write_folder(job)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="new folder for the data set (a complete one is kept as it is)")
    p.add_argument("--per-class", type=int, default=2000, help="train images per class (default 2000)")
    p.add_argument("--test-per-class", type=int, default=200, help="test images per class (default 200)")
    p.add_argument("--size", type=int, default=32, help="image side in px (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hardness", type=float, default=HARDNESS, help=f"most difficulty, 0-1 (default {HARDNESS})")
    p.add_argument("--workers", type=int, default=None, help="writing processes (default: one per core)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    write_standin(args.out, per_class=args.per_class, test_per_class=args.test_per_class, size=args.size,
                  seed=args.seed, hardness=args.hardness, workers=args.workers)  # fmt: skip
    n = sum(1 for _ in args.out.rglob("*.jpg"))
    print(f"{args.out}: {n} images ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
