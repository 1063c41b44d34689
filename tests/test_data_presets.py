"""The two implementations of each augmentation preset (per image in the folder loader, per batch in the packed and
in-memory loaders) sample the same distribution: crop offsets, flip rate, RandomResizedCrop scale and aspect, and
the PCA colour-noise coefficients, compared over many draws."""

import math

import numpy as np
import torch

from alexnet.data import batch_aug as A
from alexnet.data.loading.folder import _Samples
from alexnet.data.presets import FLIP_P, RRC_RATIO, RRC_SCALE
from alexnet.data.sampling import generator
from alexnet.data.split import Split
from alexnet.data.transforms import TrainTransform

N = 4000  # draws per implementation: frequencies agree within ~4 standard errors (0.5 / sqrt(N) = 0.008)


def coords(s: int) -> torch.Tensor:
    """uint8 (3, s, s): channel 0 = row, channel 1 = column."""
    rows = torch.arange(s).view(s, 1).expand(s, s)
    return torch.stack([rows, rows.T, torch.zeros(s, s, dtype=torch.long)]).to(torch.uint8)


def test_paper_offsets_and_flips_agree() -> None:
    size, crop = 16, 8
    t = TrainTransform(preset="paper", crop_size=crop, resize_size=size)
    img = coords(size)
    tops, lefts, flips = [], [], []
    for i in range(N):  # per image, as the folder loader draws: one generator per (seed, epoch, index)
        out = t(img, generator(3, 1, i))
        flipped = bool(out[1, 0, 0] > out[1, 0, -1])
        tops.append(int(out[0, 0, 0]))
        lefts.append(int(out[1, 0, -1] if flipped else out[1, 0, 0]))
        flips.append(flipped)
    p = A.sample_paper(torch.arange(N), size, crop, seed=3, epoch=1, pca_std=None)  # per batch
    for per_image, batched in ((tops, p.top), (lefts, p.left)):
        a = np.bincount(per_image, minlength=size - crop + 1) / N
        b = np.bincount(batched.numpy(), minlength=size - crop + 1) / N
        assert len(a) == len(b) == size - crop + 1  # the same support: every offset, nothing outside
        assert np.abs(a - b).max() < 0.03 and np.abs(a - 1 / len(a)).max() < 0.03
    assert abs(np.mean(flips) - FLIP_P) < 0.03 and abs(p.flip.float().mean().item() - FLIP_P) < 0.03


def test_resized_crop_scale_and_aspect_agree() -> None:
    size = 64
    t = TrainTransform(preset="torchvision", crop_size=32, resize_size=size)
    boxes = np.array([t.random_resized_box(size, size, generator(5, 0, i)) for i in range(N)], dtype=np.float64)
    area = boxes[:, 2] * boxes[:, 3] / size**2  # (top, left, h, w)
    aspect = np.log(boxes[:, 3] / boxes[:, 2])
    centre = (boxes[:, 0] + boxes[:, 2] / 2) / size
    b = A.sample_resized_crop(torch.arange(N), size, seed=5, epoch=0).boxes.double().numpy()  # x1, y1, x2, y2
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    area_b, aspect_b, centre_b = w * h / size**2, np.log(w / h), (b[:, 1] + h / 2) / size
    assert RRC_SCALE[0] * 0.9 < area.min() and area.max() <= 1 and area_b.max() <= 1
    assert math.log(RRC_RATIO[0]) - 0.1 < min(aspect.min(), aspect_b.min())
    assert max(aspect.max(), aspect_b.max()) < math.log(RRC_RATIO[1]) + 0.1
    for x, y in ((area, area_b), (aspect, aspect_b), (centre, centre_b)):
        se = math.sqrt((x.var() + y.var()) / N)
        assert abs(x.mean() - y.mean()) < 4 * se, (x.mean(), y.mean())
        assert abs(x.std() - y.std()) < 0.1 * x.std()
    # the quartiles of the area, where the shape of the distribution shows
    assert np.abs(np.quantile(area, [0.25, 0.5, 0.75]) - np.quantile(area_b, [0.25, 0.5, 0.75])).max() < 0.03


def test_pca_noise_coefficients_agree() -> None:
    split = Split("train", [np.zeros((8, 8, 3), np.uint8)] * N, [0] * N, ["x"], "memory")
    samples = _Samples(split, TrainTransform(preset="paper", crop_size=4, resize_size=8), train=True, seed=2,
                       with_alpha=True)  # fmt: skip
    per_image = torch.stack([samples[(0, i)][2] for i in range(N)]).numpy()  # N(0, 1), times pca_std later
    batched = A.sample_paper(torch.arange(N), 8, 4, seed=2, epoch=0, pca_std=1.0).alpha.numpy()
    for x in (per_image, batched):
        assert np.abs(x.mean(0)).max() < 0.06 and np.abs(x.std(0) - 1).max() < 0.05
        assert np.abs(np.corrcoef(x.T) - np.eye(3)).max() < 0.06  # three independent coefficients
    assert np.abs(np.quantile(per_image, [0.1, 0.5, 0.9]) - np.quantile(batched, [0.1, 0.5, 0.9])).max() < 0.08


def test_colour_noise_belongs_to_the_paper_preset_in_both_loaders(tmp_path) -> None:
    """The packed loader adds PCA noise for ``paper`` only; the folder loader added it to ``torchvision`` too."""
    from PIL import Image

    from alexnet.data.loading import make_loader
    from alexnet.data.loading.memory import load_into_memory
    from alexnet.preprocess import Preprocess

    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(files[-1])
    split = Split("train", files, [i % 2 for i in range(8)], ["a", "b"], str(tmp_path))
    pre = Preprocess(crop=64, resize=72, mean=[0.5] * 3, std=[0.25] * 3)
    pca = {"eigvals": [0.2, 0.02, 0.005], "eigvecs": np.eye(3).tolist()}
    memory, _ = load_into_memory(split, 72)

    def batches(source, preset: str, noise: dict | None) -> list[torch.Tensor]:
        loader = make_loader(source, pre, batch_size=4, train=True, preset=preset, pca=noise, pca_std=0.5, workers=0)
        return [x for x, _ in loader]

    for s in (split, memory):  # the folder loader, the packed loader (in-memory)
        assert all(torch.equal(a, b) for a, b in zip(batches(s, "torchvision", pca), batches(s, "torchvision", None)))
        assert not any(torch.equal(a, b) for a, b in zip(batches(s, "paper", pca), batches(s, "paper", None)))
