"""Do attribution maps mean anything? The checks behind ``benchmarks/explain_bench.py`` and the explain tests.

The pointing game (Zhang et al. 2016: is the map's maximum inside the object's box?) with the centre point and a
random point as baselines, the share of the map's mass inside the box, and the model-randomisation test of Adebayo
et al. (2018): re-initialise the top layers (``randomised_copy``) and compare the maps by Spearman rank correlation
(``spearman``); a method whose maps barely change does not depend on what the network learned.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .explain import LAYERS
from .preprocess import Preprocess


def box_in_crop(box: Sequence[float], image_hw: tuple[int, int], preprocess: Preprocess) -> tuple[float, ...]:
    """A box ``(x0, y0, x1, y1)`` in px of the original image -> the same box in the crop's px (float, may reach
    outside the crop), following ``preprocess``'s resize and centre crop exactly (torchvision's rounding)."""
    h, w = image_hw
    if preprocess.resize_mode == "squash":
        rh = rw = preprocess.resize
    elif h <= w:
        rh, rw = preprocess.resize, int(preprocess.resize * w / h)
    else:
        rh, rw = int(preprocess.resize * h / w), preprocess.resize
    if min(h, w) == preprocess.resize and preprocess.resize_mode == "shorter":
        rh, rw = h, w  # resize_shorter leaves it alone
    top, left = round((rh - preprocess.crop) / 2), round((rw - preprocess.crop) / 2)
    sx, sy = rw / w, rh / h
    x0, y0, x1, y1 = box
    return (x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top)


def boxed_crops(split, boxes: dict[str, Sequence[int]], preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre crops of a split whose images have object boxes (``alexnet.data.synthetic.read_boxes``), and the
    boxes in crop px: ``uint8 (N, 3, c, c)`` and float ``(N, 4)``. Boxes are keyed by ``split/class/file``."""
    transform = preprocess.transform()
    crops, out = [], []
    for i in range(len(split)):
        key = "/".join(Path(split.describe(i)).parts[-3:])
        if key not in boxes:
            raise UserError(f"{split.describe(i)}: no object box for {key!r} in the data set's boxes.json")
        img = split.load(i)
        crops.append(transform(img))
        out.append(box_in_crop(boxes[key], tuple(img.shape[-2:]), preprocess))
    return torch.stack(crops), torch.tensor(out, dtype=torch.float32)


def _inside(y: torch.Tensor, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Pixel ``(y, x)`` (its centre, +0.5) inside ``boxes`` ``(B, 4)`` = ``(x0, y0, x1, y1)``."""
    cx, cy = x.float() + 0.5, y.float() + 0.5
    return (cx >= boxes[:, 0]) & (cx <= boxes[:, 2]) & (cy >= boxes[:, 1]) & (cy <= boxes[:, 3])


def pointing_hits(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Pointing game: bool ``(B,)``, is each map's maximum inside its box (crop px, ``(B, 4)``)? A constant map
    points nowhere (a miss). Ties: the first maximum in row-major order."""
    b, _, w = maps.shape
    flat = maps.reshape(b, -1)
    idx = flat.argmax(1)
    hits = _inside(idx // w, idx % w, boxes.float())
    return hits & (flat.amax(1) > flat.amin(1))


def centre_hits(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The centre-point baseline: bool ``(B,)``, is the crop's centre inside each box?"""
    c = torch.full((len(boxes),), size / 2 - 0.5)  # the centre as a pixel index: _inside adds the 0.5 back
    return _inside(c, c, boxes.float())


def random_point_rate(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The random-point baseline: per box, the chance that a uniformly random pixel of the crop is inside it."""
    b = boxes.float().clamp(0, size)
    return (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0) / size**2


def box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """bool ``(B, size, size)``: the crop pixels whose centres lie inside each box ``(B, 4)``."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    b = boxes.float()[:, :, None]
    inside_x = (c >= b[:, 0]) & (c <= b[:, 2])  # (B, size)
    inside_y = (c >= b[:, 1]) & (c <= b[:, 3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def mass_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive mass inside its box, ``(B,)`` (the energy-based pointing game of Wang et al.
    2020); NaN where a map has no positive value. A uniform map scores the box's share of the crop."""
    m = maps.float().clamp_min(0)
    total = m.sum((1, 2))
    inside = (m * box_masks(boxes, maps.shape[-1])).sum((1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def off_centre_images(
    n: int, preprocess: Preprocess, *, classes: int = 10, size: int = 64, seed: int = 1, max_draws: int = 20000
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Fresh synthetic images whose object box leaves out the crop centre, where the centre point always misses:
    ``(crops uint8 (N, 3, c, c), boxes in crop px (N, 4), class names)``, N <= ``n``.

    Drawn by the data set's own generator with ``seed`` (a split code of its own, so never a train or val image),
    JPEG-encoded and decoded as ``make_synthetic`` saves them, cycling through the classes until ``n`` are found or
    ``max_draws`` were tried. Classes whose objects always cover the centre (the large texture patches) add none.
    """
    import io

    import numpy as np
    from PIL import Image

    from .data.decode import decode_image
    from .data.synthetic import CLASSES, JPEG_QUALITY, draw

    transform = preprocess.transform()
    centre = preprocess.crop / 2
    crops, boxes, labels = [], [], []
    for k in range(max_draws):
        c, i = k % classes, k // classes
        pixels, box = draw(c, np.random.default_rng([seed, 2, c, i]), size)
        b = box_in_crop(box, (size, size), preprocess)
        if b[0] <= centre <= b[2] and b[1] <= centre <= b[3]:
            continue
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
        crops.append(transform(decode_image(buf.getvalue())))
        boxes.append(b)
        labels.append(CLASSES[c])
        if len(crops) == n:
            break
    if not crops:
        raise UserError(f"no off-centre image in {max_draws} draws of {classes} classes at {size} px")
    return torch.stack(crops), torch.tensor(boxes, dtype=torch.float32), labels


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n along the last dim of ``(B, n)``, ties given their average rank (as scipy.stats.rankdata)."""
    b, n = x.shape
    sorted_x, order = x.sort(dim=-1, stable=True)
    new = torch.ones_like(sorted_x, dtype=torch.bool)
    new[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = new.cumsum(-1) - 1  # (B, n): which run of equal values each sorted entry is in
    position = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).expand(b, n)
    sums = torch.zeros(b, n, dtype=torch.float64, device=x.device).scatter_add_(1, group, position)
    counts = torch.zeros_like(sums).scatter_add_(1, group, torch.ones_like(position))
    mean_rank = sums.gather(1, group) / counts.gather(1, group)  # (B, n), in sorted order
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``(B, ...)``: float64 ``(B,)``, NaN where a map is constant."""
    ra, rb = _ranks(a.reshape(len(a), -1).double()), _ranks(b.reshape(len(b), -1).double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, math.nan))


def randomised_copy(model: nn.Module, layers: Sequence[str] = ("classifier", "conv5"), *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` (eval mode) whose ``layers`` are re-initialised (PyTorch's default init, seeded), as in
    Adebayo et al. 2018's cascading randomisation from the top. Names: ``classifier`` (fc6-fc8) or conv1..conv5.
    The global random state is left as it was."""
    out = copy.deepcopy(model).eval()
    mods: list[nn.Module] = []
    for name in layers:
        if name == "classifier":
            mods += [m for m in out.classifier.modules() if hasattr(m, "reset_parameters")]
        else:
            convs = [m for m in out.features if isinstance(m, nn.Conv2d)]
            if name not in LAYERS:
                raise ValueError(f"unknown layer {name!r}; choose classifier or {', '.join(LAYERS)}")
            mods.append(convs[LAYERS.index(name)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in mods:
            m.reset_parameters()
    return out
